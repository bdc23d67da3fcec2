//! Authorization codes: what `code.issue` mints and what `code.consume` must check.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use super::client::{self, Registration};
use super::ids::{ClientId, RedirectUri, Scope, SessionId, UserId};
use super::session::{self, SessionRecord};
use super::{Policy, pkce, validate};
use crate::error::{Error, InvalidClient, InvalidGrant, NotFound, Result};
use crate::secret::{self, Mint};
use crate::types::{CodeConsume, CodeIssue, ConsumedCode};

/// A stored code, keyed by the digest of its value.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeRecord {
    pub grant_id: String,
    pub client_id: String,
    pub user_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub code_challenge_method: String,
    pub scope: Option<String>,
    pub resource: Option<String>,
    pub data: Option<String>,
    pub session_id: Option<String>,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub consumed_at: Option<DateTime<Utc>>,
}

/// A validated `code.issue`, ready to store. `code` is the plaintext, returned once.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCode {
    pub code: String,
    pub hash: String,
    pub grant_id: String,
    pub client_id: ClientId,
    pub user_id: UserId,
    pub redirect_uri: RedirectUri,
    pub code_challenge: String,
    pub code_challenge_method: String,
    pub scope: Option<Scope>,
    pub resource: Option<String>,
    pub data: Option<String>,
    pub session_id: Option<SessionId>,
    /// The pending session's `state`, handed back for the redirect (not stored with the code).
    pub state: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// A validated `code.issue`, with the code it mints. What it issues depends on the pending
/// session it names, so the decision ([`Issue::decide`]) is taken over the session as read.
#[derive(Debug, Clone)]
pub struct Issue {
    params: CodeIssue,
    policy: Policy,
    now: DateTime<Utc>,
    /// The plaintext code, from the call's mint: a retry under the same idempotency key mints
    /// it again.
    code: String,
    grant_id: String,
    /// The pending session the call completes, as checked.
    session_id: Option<SessionId>,
}

/// Checks `code.issue` params that need no stored record (given without the idempotency key)
/// and mints its code.
pub fn issue(p: CodeIssue, policy: &Policy, now: DateTime<Utc>, mint: &Mint) -> Result<Issue> {
    let session_id = p.session_id.clone().map(|id| SessionId::parse("session_id", id)).transpose()?;
    Ok(Issue {
        params: p,
        policy: policy.clone(),
        now,
        code: mint.secret(),
        grant_id: secret::generate_id(),
        session_id,
    })
}

impl Issue {
    /// The pending session the call completes, if it names one.
    pub fn session_id(&self) -> Option<&SessionId> {
        self.session_id.as_ref()
    }

    /// The plaintext code (handed back again to a retry with the same idempotency key).
    pub fn code(&self) -> &str {
        &self.code
    }

    /// Decides the code over the named session as read (`found`; ignored when none is named):
    /// the session must be live, and fills in what the call omits.
    pub fn decide(&self, found: Option<SessionRecord>) -> Result<NewCode> {
        let session = match self.session_id() {
            Some(_) => Some(session::live(found, self.now)?),
            None => None,
        };
        self.new_code(session.as_ref())
    }

    /// Whether the decided code may be issued for `client` (as read just before): the client
    /// exists, registered the redirect URI, and is the registration the session was put under
    /// (`session_incarnation`: the client's incarnation stored with the session).
    pub fn may_issue(
        &self,
        new: &NewCode,
        client: Option<&Registration>,
        session: Option<(&SessionRecord, Option<&str>)>,
    ) -> Result<()> {
        let client = client.ok_or(Error::InvalidClient(InvalidClient::UnknownClient))?;
        client::redirect_uri_registered(new.redirect_uri.as_str(), client)?;
        // A session put under an earlier registration of this client_id (deleted since) is not
        // this client's: nothing begun under the old one carries over.
        if let Some((session, incarnation)) = session {
            let same_registration = match incarnation {
                Some(incarnation) => client.incarnation.as_deref() == Some(incarnation),
                // A session stored before incarnations existed: one put before this
                // registration began belongs to an earlier one.
                None => session.created_at >= client.issued_at,
            };
            if !same_registration {
                return Err(Error::NotFound(NotFound::Missing));
            }
        }
        Ok(())
    }

    /// Validates the call, filling omitted fields from the pending `session` when one is named.
    /// The session must already be known to be live.
    fn new_code(&self, session: Option<&SessionRecord>) -> Result<NewCode> {
        fn pick(given: Option<String>, from_session: Option<&Option<String>>) -> Option<String> {
            given.or_else(|| from_session.cloned().flatten())
        }
        let p = self.params.clone();
        let policy = &self.policy;
        let client_id = p.client_id.or_else(|| session.map(|s| s.client_id.clone()));
        let redirect_uri = p.redirect_uri.or_else(|| session.map(|s| s.redirect_uri.clone()));
        let (code_challenge, code_challenge_method) = match p.code_challenge {
            Some(challenge) => (Some(challenge), p.code_challenge_method),
            None => (
                session.and_then(|s| s.code_challenge.clone()),
                p.code_challenge_method.or_else(|| session.and_then(|s| s.code_challenge_method.clone())),
            ),
        };
        let user_id = pick(p.user_id, session.map(|s| &s.user_id));
        let scope = pick(p.scope, session.map(|s| &s.scope));
        let resource = pick(p.resource, session.map(|s| &s.resource));

        // Each field is parsed where it was checked before, so the first bad field reported
        // stays the same; a field filled in from the session is checked like a given one.
        let client_id =
            ClientId::parse("client_id", client_id.ok_or_else(|| Error::invalid("client_id", "required"))?)?;
        if let Some(s) = session
            && s.client_id != client_id.as_str()
        {
            return Err(Error::invalid("client_id", "differs from the session's client"));
        }
        let user_id = user_id.ok_or_else(|| Error::invalid("user_id", "required"))?;
        let redirect_uri = RedirectUri::parse(
            "redirect_uri",
            redirect_uri.ok_or_else(|| Error::invalid("redirect_uri", "required"))?,
        )?;
        let code_challenge =
            code_challenge.ok_or_else(|| Error::invalid("code_challenge", "required: PKCE is mandatory"))?;
        let method =
            pkce::Method::parse("code_challenge_method", code_challenge_method.as_deref(), policy.allow_plain_pkce)?;
        pkce::challenge("code_challenge", &code_challenge, method)?;
        let scope = scope.map(|s| Scope::parse("scope", s)).transpose()?;
        if let Some(resource) = &resource {
            validate::resource("resource", resource)?;
        }
        let user_id = UserId::parse("user_id", user_id)?;
        // The session's `data` is the text it was stored as, checked when it was put.
        let data = match (&p.data, session.and_then(|s| s.data.as_ref())) {
            (Some(d), _) => Some(validate::data("data", d)?),
            (None, Some(text)) => Some(text.clone()),
            (None, None) => None,
        };
        let expires_at = policy.code.expires_at("ttl_secs", p.ttl_secs, self.now)?;
        Ok(NewCode {
            hash: secret::digest(&self.code),
            code: self.code.clone(),
            grant_id: self.grant_id.clone(),
            client_id,
            user_id,
            redirect_uri,
            code_challenge,
            code_challenge_method: method.as_str().to_string(),
            scope,
            resource,
            data,
            session_id: session.and(self.session_id.clone()),
            state: session.and_then(|s| s.state.clone()),
            expires_at,
        })
    }
}

/// Syntax checks on `code.consume` params, before anything is looked up.
pub fn consume_params(p: &CodeConsume) -> Result<()> {
    if p.code.is_empty() || p.code.len() > validate::MAX_URI_LEN {
        return Err(Error::invalid("code", "must be a code issued by code.issue"));
    }
    validate::id("client_id", &p.client_id)?;
    validate::absolute_uri("redirect_uri", &p.redirect_uri)?;
    pkce::verifier("code_verifier", &p.code_verifier)?;
    if let Some(resource) = &p.resource {
        validate::resource("resource", resource)?;
    }
    Ok(())
}

/// A `code.consume` call whose params passed [`consume_params`]: the attempt, the digest that
/// names the code, and the rules that outlive the code.
#[derive(Debug, Clone)]
pub struct Consumption {
    /// The digest of the presented code: the key of its record.
    pub hash: String,
    attempt: CodeConsume,
    pub now: DateTime<Utc>,
    replay_window_secs: u64,
    family_max_secs: u64,
}

/// Describes a `code.consume` call at `now` under `policy`.
pub fn consumption(attempt: CodeConsume, policy: &Policy, now: DateTime<Utc>) -> Consumption {
    Consumption {
        hash: secret::digest(&attempt.code),
        attempt,
        now,
        replay_window_secs: policy.code_replay_window_secs,
        family_max_secs: policy.token.max_secs,
    }
}

impl Consumption {
    /// Decides the attempt against the code as stored (see [`consume`]).
    pub fn decide(&self, stored: &CodeRecord) -> Consume {
        consume(stored, &self.attempt, self.now)
    }

    /// Until when a code burned now is kept: for the replay window, so that a late replay is
    /// still recognised and revokes its grant.
    pub fn keep_until(&self, stored: &CodeRecord) -> DateTime<Utc> {
        let window = Duration::seconds(i64::try_from(self.replay_window_secs).unwrap_or(i64::MAX / 1000));
        stored.expires_at.max(self.now + window)
    }

    /// The deadline of a family created revoked by a replay (no token of it can be minted, and
    /// the record goes when a token of it would have).
    pub fn revoked_family_expires_at(&self) -> DateTime<Utc> {
        self.now + Duration::seconds(i64::try_from(self.family_max_secs).unwrap_or(i64::MAX / 1000))
    }
}

/// What a consume attempt does to a stored code.
#[derive(Debug, Clone, PartialEq)]
pub enum Consume {
    /// The code was already used: refuse, and revoke everything minted from its grant.
    Replay,
    /// The attempt fails and the code is burned.
    Burn(InvalidGrant),
    /// The attempt succeeds and the code is burned.
    Redeem,
}

/// Decides a consume attempt against a stored code (RFC 6749 §4.1.3, RFC 7636 §4.6,
/// RFC 8707 §2.2). Order matters: replay first, so a leaked code used after expiry still
/// revokes its grant.
pub fn consume(code: &CodeRecord, p: &CodeConsume, now: DateTime<Utc>) -> Consume {
    if code.consumed_at.is_some() {
        return Consume::Replay;
    }
    if code.expires_at <= now {
        return Consume::Burn(InvalidGrant::Expired);
    }
    if code.client_id != p.client_id {
        return Consume::Burn(InvalidGrant::ClientMismatch);
    }
    if code.redirect_uri != p.redirect_uri {
        return Consume::Burn(InvalidGrant::RedirectUriMismatch);
    }
    if let Some(resource) = &p.resource
        && code.resource.as_deref() != Some(resource.as_str())
    {
        return Consume::Burn(InvalidGrant::ResourceMismatch);
    }
    let method = match code.code_challenge_method.as_str() {
        "plain" => pkce::Method::Plain,
        _ => pkce::Method::S256,
    };
    if !pkce::verify(method, &code.code_challenge, &p.code_verifier) {
        return Consume::Burn(InvalidGrant::PkceMismatch);
    }
    Consume::Redeem
}

/// The success answer of `code.consume`.
pub fn consumed(code: CodeRecord) -> ConsumedCode {
    ConsumedCode {
        grant_id: code.grant_id,
        client_id: code.client_id,
        user_id: code.user_id,
        scope: code.scope,
        resource: code.resource,
        data: code.data.and_then(|d| serde_json::from_str::<Value>(&d).ok()),
        redirect_uri: code.redirect_uri,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn record(now: DateTime<Utc>) -> CodeRecord {
        CodeRecord {
            grant_id: "g".into(),
            client_id: "c".into(),
            user_id: "u".into(),
            redirect_uri: "https://a.example/cb".into(),
            code_challenge: CHALLENGE.into(),
            code_challenge_method: "S256".into(),
            scope: None,
            resource: Some("https://mcp.example/".into()),
            data: None,
            session_id: None,
            issued_at: now,
            expires_at: now + Duration::seconds(60),
            consumed_at: None,
        }
    }

    fn attempt() -> CodeConsume {
        CodeConsume {
            code: "x".into(),
            client_id: "c".into(),
            redirect_uri: "https://a.example/cb".into(),
            code_verifier: VERIFIER.into(),
            resource: None,
            idempotency_key: None,
        }
    }

    #[test]
    fn a_matching_attempt_redeems() {
        let now = t0();
        assert_eq!(consume(&record(now), &attempt(), now), Consume::Redeem);
    }

    #[test]
    fn every_binding_is_checked() {
        let now = t0();
        let code = record(now);
        let cases = [
            (CodeConsume { client_id: "other".into(), ..attempt() }, InvalidGrant::ClientMismatch),
            (
                CodeConsume { redirect_uri: "https://a.example/x".into(), ..attempt() },
                InvalidGrant::RedirectUriMismatch,
            ),
            (
                CodeConsume { resource: Some("https://evil.example/".into()), ..attempt() },
                InvalidGrant::ResourceMismatch,
            ),
            (CodeConsume { code_verifier: VERIFIER.replace('d', "e"), ..attempt() }, InvalidGrant::PkceMismatch),
        ];
        for (attempt, reason) in cases {
            assert_eq!(consume(&code, &attempt, now), Consume::Burn(reason));
        }
    }

    #[test]
    fn expiry_is_checked_at_the_deadline() {
        let now = t0();
        let code = record(now);
        assert_eq!(consume(&code, &attempt(), now + Duration::seconds(60)), Consume::Burn(InvalidGrant::Expired));
    }

    #[test]
    fn replay_wins_over_everything_else() {
        let now = t0();
        let code = CodeRecord { consumed_at: Some(now), ..record(now) };
        let late = now + Duration::seconds(3600);
        assert_eq!(consume(&code, &CodeConsume { client_id: "x".into(), ..attempt() }, late), Consume::Replay);
    }
}
