//! Refresh token families: issue, rotation, reuse detection (RFC 9700 §4.14, RFC 6749 §6).
//!
//! A family is everything minted from one grant. It has at most one active token; rotating
//! that token replaces it. Presenting a rotated token again is reuse: inside the grace window
//! it mints a fresh successor and revokes the previous one, outside it revokes the family.

use chrono::{DateTime, Duration, Utc};

use super::session::optional_scope_resource_user;
use super::{Policy, validate};
use crate::error::{Error, InvalidGrant, NotFound, Result};
use crate::secret::{self, Mint};
use crate::types::{TokenIssue, TokenRevoke, TokenRotate};

/// A token's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Rotated,
    Revoked,
}

/// A stored refresh token, keyed by the digest of its value.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    pub hash: String,
    pub token_id: String,
    pub grant_id: String,
    pub client_id: String,
    pub user_id: String,
    pub scope: Option<String>,
    pub resource: Option<String>,
    pub data: Option<String>,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub status: Status,
    pub status_at: Option<DateTime<Utc>>,
    /// For a rotated token, the digest of the token that replaced it.
    pub successor: Option<String>,
    pub rev: i64,
}

/// A grant's family record: the serialization point for every change to its tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyRecord {
    pub grant_id: String,
    pub client_id: String,
    pub user_id: String,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Digest of the family's one active token.
    pub active_token: Option<String>,
    pub rev: i64,
}

/// A token about to be stored. `token` is the plaintext, returned once.
#[derive(Debug, Clone, PartialEq)]
pub struct NewToken {
    pub token: String,
    pub hash: String,
    pub token_id: String,
    pub grant_id: String,
    pub client_id: String,
    pub user_id: String,
    pub scope: Option<String>,
    pub resource: Option<String>,
    pub data: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// Validates `token.issue`.
pub fn issue(p: TokenIssue, policy: &Policy, now: DateTime<Utc>, mint: &Mint) -> Result<NewToken> {
    validate::id("client_id", &p.client_id)?;
    validate::user_id("user_id", &p.user_id)?;
    if let Some(grant_id) = &p.grant_id {
        validate::id("grant_id", grant_id)?;
    }
    optional_scope_resource_user(p.scope.as_deref(), p.resource.as_deref(), None)?;
    let data = p.data.as_ref().map(|d| validate::data("data", d)).transpose()?;
    let token = match p.token {
        Some(token) => {
            if token.len() < 32 || token.len() > validate::MAX_URI_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Error::invalid("token", "must be 32 to 2048 visible ASCII characters"));
            }
            token
        }
        None => mint.secret(),
    };
    Ok(NewToken {
        hash: secret::digest(&token),
        token,
        token_id: secret::generate_id(),
        grant_id: p.grant_id.unwrap_or_else(secret::generate_id),
        client_id: p.client_id,
        user_id: p.user_id,
        scope: p.scope,
        resource: p.resource,
        data,
        expires_at: policy.token.expires_at("ttl_secs", p.ttl_secs, now)?,
    })
}

/// Whether a new token may join `family`.
pub fn may_join(family: &FamilyRecord, client_id: &str, user_id: &str) -> Result<()> {
    if family.revoked_at.is_some() {
        return Err(Error::InvalidGrant(InvalidGrant::Revoked));
    }
    if family.client_id != client_id {
        return Err(Error::InvalidGrant(InvalidGrant::ClientMismatch));
    }
    if family.user_id != user_id {
        return Err(Error::invalid("user_id", "differs from the grant's user"));
    }
    Ok(())
}

/// A token is usable only while active and before its deadline.
pub fn active(token: Option<TokenRecord>, now: DateTime<Utc>) -> Result<TokenRecord> {
    let token = token.ok_or(Error::NotFound(NotFound::Missing))?;
    match token.status {
        Status::Revoked => Err(Error::InvalidGrant(InvalidGrant::Revoked)),
        Status::Rotated => Err(Error::InvalidGrant(InvalidGrant::Rotated)),
        Status::Active if token.expires_at <= now => Err(Error::InvalidGrant(InvalidGrant::Expired)),
        Status::Active => Ok(token),
    }
}

/// Syntax checks on `token.rotate` params.
pub fn rotate_params(p: &TokenRotate) -> Result<()> {
    token_value(&p.token)?;
    validate::id("client_id", &p.client_id)?;
    if let Some(scope) = &p.scope {
        validate::scope("scope", scope)?;
    }
    Ok(())
}

/// A token value presented by a caller.
pub fn token_value(token: &str) -> Result<()> {
    if token.is_empty() || token.len() > validate::MAX_URI_LEN {
        return Err(Error::invalid("token", "must be a refresh token"));
    }
    Ok(())
}

/// A validated `token.get`: the presented token, kept only as its digest, seen at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Get {
    pub hash: String,
    pub now: DateTime<Utc>,
}

/// Validates `token.get`.
pub fn get(token: &str, now: DateTime<Utc>) -> Result<Get> {
    token_value(token)?;
    Ok(Get { hash: secret::digest(token), now })
}

impl Get {
    /// What the caller is told about the token as stored: its metadata while active.
    pub fn decide(&self, found: Option<TokenRecord>) -> Result<TokenRecord> {
        active(found, self.now)
    }
}

/// A `token.rotate` call whose params passed [`rotate_params`], with the successor it would
/// mint.
#[derive(Debug, Clone)]
pub struct Rotate {
    /// The digest of the presented token: the key of its record.
    pub hash: String,
    params: TokenRotate,
    policy: Policy,
    now: DateTime<Utc>,
    /// The successor's plaintext, from the call's mint: a retry under the same idempotency key
    /// mints it again.
    successor: String,
    successor_id: String,
}

/// Describes a `token.rotate` call at `now` under `policy`, minting its successor from `mint`.
pub fn rotate(p: TokenRotate, policy: &Policy, now: DateTime<Utc>, mint: &Mint) -> Rotate {
    Rotate {
        hash: secret::digest(&p.token),
        params: p,
        policy: policy.clone(),
        now,
        successor: mint.secret(),
        successor_id: secret::generate_id(),
    }
}

impl Rotate {
    /// Decides the rotation over the token and its family as read (see [`rotation`]).
    pub fn decide(&self, token: Option<&TokenRecord>, family: Option<&FamilyRecord>) -> Rotation {
        rotation(token, family, &self.params, &self.policy, self.now)
    }

    /// The time reuse of `token` is recorded at (see [`decision_time`]).
    pub fn reuse_time(&self, token: &TokenRecord) -> DateTime<Utc> {
        decision_time(token, self.now)
    }

    /// The plaintext successor (handed back again to a retry with the same idempotency key).
    pub fn successor_secret(&self) -> &str {
        &self.successor
    }

    /// The token that replaces `old`, with what the decision granted.
    pub fn successor(&self, old: &TokenRecord, scope: Option<String>, expires_at: DateTime<Utc>) -> NewToken {
        NewToken {
            hash: secret::digest(&self.successor),
            token: self.successor.clone(),
            token_id: self.successor_id.clone(),
            grant_id: old.grant_id.clone(),
            client_id: old.client_id.clone(),
            user_id: old.user_id.clone(),
            scope,
            resource: old.resource.clone(),
            data: old.data.clone(),
            expires_at,
        }
    }
}

/// What presenting a token to `token.rotate` does.
#[derive(Debug, Clone, PartialEq)]
pub enum Rotation {
    /// Replace the active token with a successor; the change is stamped `at`.
    Rotate { scope: Option<String>, expires_at: DateTime<Utc>, at: DateTime<Utc> },
    /// A rotated token came back inside the grace window while its successor is still unused:
    /// mint a fresh successor and revoke the previous one; the change is stamped `at`.
    Reissue { scope: Option<String>, expires_at: DateTime<Utc>, revoke: String, at: DateTime<Utc> },
    /// A rotated token came back outside the grace window: revoke the family.
    ReuseDetected,
    /// Refuse without changing anything.
    Refuse(Error),
}

/// The time a decision over `token` is taken at: never earlier than a change it has read.
///
/// `now` is read once, when the call arrives. A call that lost a race re-reads the token and
/// decides again; the winner may have stamped its change after the loser's `now` (or on an
/// instance whose clock runs ahead). Deciding at the earlier time would place the loser
/// before a change it has already seen: with a grace window of 0 s, `now < status_at + 0`
/// held and a strict rotation reissued, giving two winners.
pub fn decision_time(token: &TokenRecord, now: DateTime<Utc>) -> DateTime<Utc> {
    [Some(token.issued_at), token.status_at, token.last_used_at].into_iter().flatten().fold(now, DateTime::max)
}

/// Decides a rotation attempt.
pub fn rotation(
    token: Option<&TokenRecord>,
    family: Option<&FamilyRecord>,
    p: &TokenRotate,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Rotation {
    let Some(token) = token else { return Rotation::Refuse(Error::NotFound(NotFound::Missing)) };
    let now = decision_time(token, now);
    if token.client_id != p.client_id {
        return Rotation::Refuse(Error::InvalidGrant(InvalidGrant::ClientMismatch));
    }
    if token.expires_at <= now {
        return Rotation::Refuse(Error::InvalidGrant(InvalidGrant::Expired));
    }
    let family_revoked = family.is_none_or(|f| f.revoked_at.is_some());
    let scope = match &p.scope {
        Some(requested) if !validate::scope_is_subset(requested, token.scope.as_deref()) => {
            return Rotation::Refuse(Error::invalid("scope", "may narrow the granted scope, never widen it"));
        }
        Some(requested) => Some(requested.clone()),
        None => token.scope.clone(),
    };
    let expires_at = match policy.token.expires_at("ttl_secs", p.ttl_secs, now) {
        Ok(at) => at,
        Err(e) => return Rotation::Refuse(e),
    };
    match token.status {
        Status::Revoked => Rotation::Refuse(Error::InvalidGrant(InvalidGrant::Revoked)),
        Status::Active if family_revoked => Rotation::Refuse(Error::InvalidGrant(InvalidGrant::Revoked)),
        Status::Active => Rotation::Rotate { scope, expires_at, at: now },
        // Strict mode: a rotated token presented again is reuse, whenever it comes back.
        Status::Rotated if policy.rotation_grace_secs == 0 => Rotation::ReuseDetected,
        Status::Rotated => {
            // Checked: a grace window too large for a timestamp means "always in grace", never
            // a panic (the configuration refuses such windows anyway).
            let grace = i64::try_from(policy.rotation_grace_secs).ok().and_then(Duration::try_seconds);
            let in_grace = token
                .status_at
                .is_some_and(|at| grace.and_then(|grace| at.checked_add_signed(grace)).is_none_or(|until| now < until));
            let successor_unused = match (family, &token.successor) {
                (Some(f), Some(successor)) => f.revoked_at.is_none() && f.active_token.as_ref() == Some(successor),
                _ => false,
            };
            match (in_grace && successor_unused, &token.successor) {
                (true, Some(successor)) => Rotation::Reissue { scope, expires_at, revoke: successor.clone(), at: now },
                _ => Rotation::ReuseDetected,
            }
        }
    }
}

/// Which tokens a `token.revoke` call names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeScope {
    /// The family of the token with this digest.
    Token(String),
    Grant(String),
    Client {
        client_id: String,
        user_id: Option<String>,
    },
    User(String),
}

/// Validates `token.revoke`: exactly one of the four shapes.
pub fn revoke_scope(p: TokenRevoke) -> Result<RevokeScope> {
    match p {
        TokenRevoke { token: Some(token), grant_id: None, client_id: None, user_id: None, .. } => {
            token_value(&token)?;
            Ok(RevokeScope::Token(secret::digest(&token)))
        }
        TokenRevoke { token: None, grant_id: Some(grant_id), client_id: None, user_id: None, .. } => {
            validate::id("grant_id", &grant_id)?;
            Ok(RevokeScope::Grant(grant_id))
        }
        TokenRevoke { token: None, grant_id: None, client_id: Some(client_id), user_id, .. } => {
            validate::id("client_id", &client_id)?;
            if let Some(user_id) = &user_id {
                validate::user_id("user_id", user_id)?;
            }
            Ok(RevokeScope::Client { client_id, user_id })
        }
        TokenRevoke { token: None, grant_id: None, client_id: None, user_id: Some(user_id), .. } => {
            validate::user_id("user_id", &user_id)?;
            Ok(RevokeScope::User(user_id))
        }
        _ => {
            Err(Error::invalid("token", "give exactly one of {token}, {grant_id}, {client_id, user_id?} or {user_id}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn token(now: DateTime<Utc>, status: Status) -> TokenRecord {
        TokenRecord {
            hash: "h1".into(),
            token_id: "t1".into(),
            grant_id: "g".into(),
            client_id: "c".into(),
            user_id: "u".into(),
            scope: Some("read write".into()),
            resource: None,
            data: None,
            issued_at: now,
            expires_at: now + Duration::days(30),
            last_used_at: None,
            status,
            status_at: (status != Status::Active).then_some(now),
            successor: (status == Status::Rotated).then(|| "h2".to_string()),
            rev: 1,
        }
    }

    fn family(active: &str) -> FamilyRecord {
        FamilyRecord {
            grant_id: "g".into(),
            client_id: "c".into(),
            user_id: "u".into(),
            revoked_at: None,
            active_token: Some(active.into()),
            rev: 1,
        }
    }

    fn req() -> TokenRotate {
        TokenRotate { token: "x".into(), client_id: "c".into(), ..Default::default() }
    }

    #[test]
    fn an_active_token_rotates_and_may_narrow_but_not_widen_scope() {
        let now = t0();
        let policy = Policy::default();
        let t = token(now, Status::Active);
        let f = family("h1");
        assert!(matches!(rotation(Some(&t), Some(&f), &req(), &policy, now), Rotation::Rotate { .. }));
        let narrow = TokenRotate { scope: Some("read".into()), ..req() };
        assert!(matches!(
            rotation(Some(&t), Some(&f), &narrow, &policy, now),
            Rotation::Rotate { scope: Some(s), .. } if s == "read"
        ));
        let wide = TokenRotate { scope: Some("admin".into()), ..req() };
        assert!(matches!(
            rotation(Some(&t), Some(&f), &wide, &policy, now),
            Rotation::Refuse(Error::InvalidParams { .. })
        ));
    }

    // RFC 9700 §4.14.2: reuse of a rotated refresh token revokes the family.
    #[test]
    fn reuse_in_strict_mode_is_detected_even_in_the_same_instant() {
        let now = t0();
        let t = token(now, Status::Rotated);
        assert_eq!(rotation(Some(&t), Some(&family("h2")), &req(), &Policy::default(), now), Rotation::ReuseDetected);
    }

    // A caller that lost the race re-reads the token after the winner rotated it. Its `now`
    // was read when its call arrived, possibly before the winner's stamp: strict mode must
    // still see reuse, never a reissue (two winners).
    #[test]
    fn a_loser_that_decides_after_the_winners_stamp_sees_reuse_in_strict_mode() {
        let arrived = t0();
        let mut t = token(arrived, Status::Rotated);
        t.status_at = Some(arrived + Duration::milliseconds(3));
        assert_eq!(
            rotation(Some(&t), Some(&family("h2")), &req(), &Policy::default(), arrived),
            Rotation::ReuseDetected
        );
    }

    // Two instances whose clocks disagree: the decision is placed no earlier than the change it
    // read, so the grace window is measured from the winner's stamp, and the reissue is stamped
    // after it.
    #[test]
    fn inside_the_grace_window_the_decision_time_is_never_before_the_stamp_it_read() {
        let behind = t0();
        let ahead = behind + Duration::seconds(100);
        let policy = Policy { rotation_grace_secs: 10, ..Policy::default() };
        let mut t = token(behind, Status::Rotated);
        t.status_at = Some(ahead);
        assert!(matches!(
            rotation(Some(&t), Some(&family("h2")), &req(), &policy, behind),
            Rotation::Reissue { at, expires_at, .. } if at == ahead && expires_at > ahead
        ));
        // A clock ahead of the stamp by more than the window fails closed: reuse.
        assert_eq!(
            rotation(Some(&t), Some(&family("h2")), &req(), &policy, ahead + Duration::seconds(11)),
            Rotation::ReuseDetected
        );
    }

    #[test]
    fn reuse_inside_the_grace_window_reissues_only_while_the_successor_is_unused() {
        let now = t0();
        let policy = Policy { rotation_grace_secs: 10, ..Policy::default() };
        let t = token(now, Status::Rotated);
        let later = now + Duration::seconds(5);
        assert!(matches!(
            rotation(Some(&t), Some(&family("h2")), &req(), &policy, later),
            Rotation::Reissue { revoke, .. } if revoke == "h2"
        ));
        // The successor was itself rotated: the chain moved on, so this is reuse.
        assert_eq!(rotation(Some(&t), Some(&family("h3")), &req(), &policy, later), Rotation::ReuseDetected);
        // Past the window.
        assert_eq!(
            rotation(Some(&t), Some(&family("h2")), &req(), &policy, now + Duration::seconds(10)),
            Rotation::ReuseDetected
        );
    }

    #[test]
    fn an_enormous_grace_window_does_not_overflow() {
        let now = t0();
        let t = token(now, Status::Rotated);
        for grace in [u64::MAX, i64::MAX as u64, 9_000_000_000_000_000, 100_000_000_000_000] {
            let policy = Policy { rotation_grace_secs: grace, ..Policy::default() };
            assert!(matches!(
                rotation(Some(&t), Some(&family("h2")), &req(), &policy, now + Duration::seconds(5)),
                Rotation::Reissue { .. }
            ));
        }
    }

    #[test]
    fn wrong_client_expired_and_revoked_tokens_are_refused_without_change() {
        let now = t0();
        let policy = Policy::default();
        let t = token(now, Status::Active);
        let f = family("h1");
        let other = TokenRotate { client_id: "other".into(), ..req() };
        assert_eq!(
            rotation(Some(&t), Some(&f), &other, &policy, now),
            Rotation::Refuse(Error::InvalidGrant(InvalidGrant::ClientMismatch))
        );
        assert_eq!(
            rotation(Some(&t), Some(&f), &req(), &policy, now + Duration::days(31)),
            Rotation::Refuse(Error::InvalidGrant(InvalidGrant::Expired))
        );
        let revoked = token(now, Status::Revoked);
        assert_eq!(
            rotation(Some(&revoked), Some(&f), &req(), &policy, now),
            Rotation::Refuse(Error::InvalidGrant(InvalidGrant::Revoked))
        );
    }

    #[test]
    fn revoke_takes_exactly_one_shape() {
        assert!(revoke_scope(TokenRevoke::default()).is_err());
        let both = TokenRevoke { token: Some("t".into()), grant_id: Some("g".into()), ..Default::default() };
        assert!(revoke_scope(both).is_err());
        let client_user = TokenRevoke { client_id: Some("c".into()), user_id: Some("u".into()), ..Default::default() };
        assert!(matches!(revoke_scope(client_user), Ok(RevokeScope::Client { user_id: Some(_), .. })));
    }
}
