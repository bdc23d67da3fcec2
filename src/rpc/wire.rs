//! Domain values turned into the contract's shapes (`types`), at the edge that sends them.

use crate::domain::session::SessionRecord;
use crate::types::Session;

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
