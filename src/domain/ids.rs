//! Identifiers that passed their rules, parsed once where they enter (the rpc edge).
//!
//! A function that takes a [`ClientId`] needs no check of its own: the type is the proof that
//! the string was checked, and the error for a bad one was already raised naming the caller's
//! field. The rules themselves stay in [`validate`](super::validate).

use super::validate;
use crate::error::Result;
use crate::secret;

/// A client id: 1 to 256 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId(String);

/// A user id: 1 to 256 bytes of display text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserId(String);

/// A grant id: 1 to 256 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantId(String);

/// A session id: 1 to 256 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionId(String);

/// A redirect URI: absolute, no fragment, `https`, or `http` on a loopback host. Kept as the
/// text the caller gave (what is stored and compared), not as its parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectUri(String);

/// An OAuth scope: space-separated tokens (RFC 6749 §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope(String);

impl SessionId {
    /// Checks `value`, given in the params field `field`.
    pub fn parse(field: &str, value: String) -> Result<Self> {
        validate::id(field, &value)?;
        Ok(Self(value))
    }

    /// A fresh random id, for a session put without one.
    pub fn generate() -> Self {
        Self(secret::generate_id())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl RedirectUri {
    /// Checks `value`, given in the params field `field`.
    pub fn parse(field: &str, value: String) -> Result<Self> {
        validate::redirect_uri(field, &value)?;
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Scope {
    /// Checks `value`, given in the params field `field`.
    pub fn parse(field: &str, value: String) -> Result<Self> {
        validate::scope(field, &value)?;
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl ClientId {
    /// Checks `value`, given in the params field `field`.
    pub fn parse(field: &str, value: String) -> Result<Self> {
        validate::id(field, &value)?;
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl UserId {
    /// Checks `value`, given in the params field `field`.
    pub fn parse(field: &str, value: String) -> Result<Self> {
        validate::user_id(field, &value)?;
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl GrantId {
    /// Checks `value`, given in the params field `field`.
    pub fn parse(field: &str, value: String) -> Result<Self> {
        validate::id(field, &value)?;
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn a_bad_id_is_refused_naming_the_callers_field() {
        let field = |r: Result<ClientId>| match r {
            Err(Error::InvalidParams { field, .. }) => field,
            other => panic!("expected invalid params, got {other:?}"),
        };
        assert_eq!(field(ClientId::parse("client_id", String::new())), "client_id");
        assert_eq!(field(ClientId::parse("client_id", "a b".into())), "client_id");
        assert!(UserId::parse("user_id", "Zoë".into()).is_ok());
        assert!(GrantId::parse("grant_id", "g".repeat(257)).is_err());
    }
}
