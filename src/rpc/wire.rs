//! Domain values turned into the contract's shapes (`types`), at the edge that sends them.

use chrono::{DateTime, Utc};

use crate::domain::client::{ClientRecord, Origin};
use crate::domain::session::SessionRecord;
use crate::domain::token::TokenRecord;
use crate::types::{Client, Session, TokenInfo};

/// Parses the JSON text stored for a caller's `data`.
fn parse_data(text: Option<String>) -> Option<serde_json::Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

impl From<SessionRecord> for Session {
    fn from(s: SessionRecord) -> Self {
        Session {
            id: s.id,
            client_id: s.client_id,
            redirect_uri: s.redirect_uri,
            state: s.state,
            code_challenge: s.code_challenge,
            code_challenge_method: s.code_challenge_method,
            scope: s.scope,
            resource: s.resource,
            user_id: s.user_id,
            data: parse_data(s.data),
            created_at: s.created_at,
            updated_at: s.updated_at,
            expires_at: s.expires_at,
        }
    }
}

/// The client as the contract shows it at `now`: a cached document says whether it is stale.
pub(super) fn client(c: ClientRecord, now: DateTime<Utc>) -> Client {
    Client {
        document_stale: c.document_stale(now),
        document_cached_at: (c.origin == Origin::Document).then_some(c.updated_at),
        client_id: c.client_id,
        client_id_issued_at: c.issued_at.timestamp(),
        client_secret_expires_at: 0,
        client_secret: c.secret,
        metadata: c.metadata,
    }
}

/// A token's public metadata (never its digest).
impl From<TokenRecord> for TokenInfo {
    fn from(t: TokenRecord) -> Self {
        TokenInfo {
            token_id: t.token_id,
            grant_id: t.grant_id,
            client_id: t.client_id,
            user_id: t.user_id,
            scope: t.scope,
            resource: t.resource,
            data: parse_data(t.data),
            issued_at: t.issued_at,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
        }
    }
}
