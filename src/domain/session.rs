//! Pending authorization sessions: what `session.put` and `session.update` may store.

use chrono::{DateTime, Utc};

use super::client::{self, Registration};
use super::ids::{ClientId, RedirectUri, Scope, SessionId, UserId};
use super::{Policy, pkce, validate};
use crate::error::{Error, InvalidClient, NotFound, Result};
use crate::types::{SessionPut, SessionUpdate};

/// A stored session, as the store read it back.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub id: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub scope: Option<String>,
    pub resource: Option<String>,
    pub user_id: Option<String>,
    /// The caller's `data`, as the JSON text stored.
    pub data: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A validated `session.put`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSession {
    pub id: SessionId,
    pub client_id: ClientId,
    pub redirect_uri: RedirectUri,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub scope: Option<Scope>,
    pub resource: Option<String>,
    pub user_id: Option<UserId>,
    /// The caller's `data`, as JSON text.
    pub data: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// Validates `session.put` params; generates the id when absent.
pub fn put(p: SessionPut, policy: &Policy, now: DateTime<Utc>) -> Result<NewSession> {
    let id = match p.id {
        Some(id) => SessionId::parse("id", id)?,
        None => SessionId::generate(),
    };
    let client_id = ClientId::parse("client_id", p.client_id)?;
    let redirect_uri = RedirectUri::parse("redirect_uri", p.redirect_uri)?;
    if let Some(state) = &p.state {
        validate::state("state", state)?;
    }
    let method = match &p.code_challenge {
        Some(challenge) => {
            let method = pkce::Method::parse(
                "code_challenge_method",
                p.code_challenge_method.as_deref(),
                policy.allow_plain_pkce,
            )?;
            pkce::challenge("code_challenge", challenge, method)?;
            Some(method.as_str().to_string())
        }
        None if p.code_challenge_method.is_some() => {
            return Err(Error::invalid("code_challenge_method", "given without code_challenge"));
        }
        None => None,
    };
    // The order of the checks is the order in which a bad field is reported.
    let scope = p.scope.map(|s| Scope::parse("scope", s)).transpose()?;
    if let Some(resource) = &p.resource {
        validate::resource("resource", resource)?;
    }
    let user_id = p.user_id.map(|u| UserId::parse("user_id", u)).transpose()?;
    let data = p.data.as_ref().map(|d| validate::data("data", d)).transpose()?;
    let expires_at = policy.session.expires_at("ttl_secs", p.ttl_secs, now)?;
    Ok(NewSession {
        id,
        client_id,
        redirect_uri,
        state: p.state,
        code_challenge: p.code_challenge,
        code_challenge_method: method,
        scope,
        resource: p.resource,
        user_id,
        data,
        expires_at,
    })
}

/// A validated `session.update`: `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionChange {
    pub id: SessionId,
    pub user_id: Option<UserId>,
    pub scope: Option<Scope>,
    pub data: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

pub fn update(p: SessionUpdate, policy: &Policy, now: DateTime<Utc>) -> Result<SessionChange> {
    let id = SessionId::parse("id", p.id)?;
    let scope = p.scope.map(|s| Scope::parse("scope", s)).transpose()?;
    let user_id = p.user_id.map(|u| UserId::parse("user_id", u)).transpose()?;
    let data = p.data.as_ref().map(|d| validate::data("data", d)).transpose()?;
    let expires_at = p.ttl_secs.map(|ttl| policy.session.expires_at("ttl_secs", Some(ttl), now)).transpose()?;
    Ok(SessionChange { id, user_id, scope, data, expires_at })
}

/// Whether the session `s` may be stored for `client` (as read just before): the client exists
/// and registered the redirect URI.
pub fn may_put(s: &NewSession, client: Option<&Registration>) -> Result<()> {
    let client = client.ok_or(Error::InvalidClient(InvalidClient::UnknownClient))?;
    client::redirect_uri_registered(s.redirect_uri.as_str(), client)
}

/// A validated `session.get`: the session `id`, seen at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Get {
    pub id: SessionId,
    pub now: DateTime<Utc>,
}

/// Validates `session.get`.
pub fn get(id: String, now: DateTime<Utc>) -> Result<Get> {
    Ok(Get { id: SessionId::parse("id", id)?, now })
}

impl Get {
    /// What the caller is told about the session as stored: it only while live.
    pub fn decide(&self, found: Option<SessionRecord>) -> Result<SessionRecord> {
        live(found, self.now)
    }
}

/// A stored session is visible only until its deadline, whether or not it was purged yet.
pub fn live(session: Option<SessionRecord>, now: DateTime<Utc>) -> Result<SessionRecord> {
    match session {
        None => Err(Error::NotFound(NotFound::Missing)),
        Some(s) if s.expires_at <= now => Err(Error::NotFound(NotFound::Expired)),
        Some(s) => Ok(s),
    }
}

pub(super) fn optional_scope_resource_user(
    scope: Option<&str>,
    resource: Option<&str>,
    user_id: Option<&str>,
) -> Result<()> {
    if let Some(scope) = scope {
        validate::scope("scope", scope)?;
    }
    if let Some(resource) = resource {
        validate::resource("resource", resource)?;
    }
    if let Some(user_id) = user_id {
        validate::user_id("user_id", user_id)?;
    }
    Ok(())
}
