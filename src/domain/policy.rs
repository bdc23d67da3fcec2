//! The server's tunable rules: lifetimes, the rotation grace window, PKCE methods.

use chrono::{DateTime, Duration, Utc};

use crate::error::{Error, Result};

/// Default and maximum lifetime for one kind of record, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub default_secs: u64,
    pub max_secs: u64,
}

impl Lifetime {
    /// The deadline for a record created at `now` with the caller's `ttl_secs`.
    pub fn expires_at(&self, field: &str, ttl_secs: Option<u64>, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
        let secs = ttl_secs.unwrap_or(self.default_secs);
        if secs == 0 {
            return Err(Error::invalid(field, "must be at least 1 second"));
        }
        if secs > self.max_secs {
            return Err(Error::invalid(field, format!("must be at most {} seconds", self.max_secs)));
        }
        // max_secs is bounded by configuration; checked all the same, so that no caller's
        // ttl_secs can ever panic a call.
        i64::try_from(secs)
            .ok()
            .and_then(Duration::try_seconds)
            .and_then(|ttl| now.checked_add_signed(ttl))
            .ok_or_else(|| Error::invalid(field, "too large"))
    }
}

/// Every rule the operator can tune.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub session: Lifetime,
    pub code: Lifetime,
    pub token: Lifetime,
    /// How long a rotated refresh token may be presented again without counting as reuse.
    /// Zero is strict: any reuse revokes the family.
    pub rotation_grace_secs: u64,
    /// Whether `code_challenge_method: plain` is accepted (RFC 7636 allows it; OAuth 2.1 does
    /// not recommend it).
    pub allow_plain_pkce: bool,
    /// `client.cache_document`'s default `max_age_secs`.
    pub document_max_age_secs: u64,
    /// How long a used code is kept after use, so that a late replay is still recognised and
    /// revokes its grant (instead of looking like an unknown code).
    pub code_replay_window_secs: u64,
}

impl Policy {
    /// The rules the server runs with unless told otherwise: the flags' defaults, and what
    /// `Config::ephemeral` and `Policy::default` give. Written once, here.
    pub const DEFAULT: Policy = Policy {
        session: Lifetime { default_secs: 600, max_secs: 86_400 },
        code: Lifetime { default_secs: 60, max_secs: 600 },
        token: Lifetime { default_secs: 30 * 86_400, max_secs: 400 * 86_400 },
        rotation_grace_secs: 0,
        allow_plain_pkce: false,
        document_max_age_secs: 86_400,
        code_replay_window_secs: 3600,
    };
}

impl Default for Policy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_bounded_and_never_overflow() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let policy = Policy::default();
        assert_eq!(policy.session.expires_at("ttl_secs", None, now), Ok(now + Duration::seconds(600)));
        assert!(policy.session.expires_at("ttl_secs", Some(0), now).is_err());
        assert!(policy.session.expires_at("ttl_secs", Some(86_401), now).is_err());
        let unbounded = Lifetime { default_secs: 60, max_secs: u64::MAX };
        for ttl in [u64::MAX, i64::MAX as u64, 9_000_000_000_000_000, 100_000_000_000_000] {
            assert!(matches!(
                unbounded.expires_at("ttl_secs", Some(ttl), now),
                Err(Error::InvalidParams { field, .. }) if field == "ttl_secs"
            ));
        }
    }
}
