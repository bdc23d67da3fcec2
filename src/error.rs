//! What a call can be told when it fails: the contract's error vocabulary.
//!
//! Domain rules and the store produce this type; `rpc::error` is the only place that turns it
//! into a JSON-RPC error object. Nothing in here carries storage internals.

use std::fmt;

/// The result of a domain rule or a store operation, as the caller will see it.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A parameter is missing, has the wrong type or breaks a rule (-32602).
    #[error("invalid params: {field}: {message}")]
    InvalidParams { field: String, message: String },
    /// The record does not exist, or no longer does (1001).
    #[error("not found ({0})")]
    NotFound(NotFound),
    /// A caller-chosen identifier is taken (1002).
    #[error("already exists")]
    Conflict,
    /// A code or refresh token cannot be used (1003).
    #[error("invalid grant ({0})")]
    InvalidGrant(InvalidGrant),
    /// Client authentication failed, or the client is not registered (1004).
    #[error("invalid client ({0})")]
    InvalidClient(InvalidClient),
    /// Storage did not answer; nothing was changed (1005, `data.outcome = "unchanged"`).
    #[error("storage unavailable")]
    Unavailable,
    /// Storage stopped answering after a change was sent to it: it may or may not have been
    /// applied (1005, `data.outcome = "unknown"`). The caller must read before redoing it.
    #[error("storage unavailable; outcome unknown")]
    OutcomeUnknown,
    /// The subscription cursor is older than the retained events (1006).
    #[error("cursor expired")]
    CursorExpired { oldest: String },
    /// A subscription asked for over plain HTTP, which cannot carry its notifications (-32600).
    #[error("subscriptions need a WebSocket")]
    WebSocketRequired,
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidParams { field: field.into(), message: message.into() }
    }
}

macro_rules! reasons {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// The `data.reason` string on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

reasons! {
    /// Why something is not there.
    NotFound { Missing => "not_found", Expired => "expired" }
}

reasons! {
    /// Why a code or refresh token was refused.
    InvalidGrant {
        Expired => "expired",
        Consumed => "consumed",
        Revoked => "revoked",
        Rotated => "rotated",
        ReuseDetected => "reuse_detected",
        ClientMismatch => "client_mismatch",
        RedirectUriMismatch => "redirect_uri_mismatch",
        ResourceMismatch => "resource_mismatch",
        PkceMismatch => "pkce_mismatch",
    }
}

reasons! {
    /// Why client authentication failed.
    InvalidClient { InvalidSecret => "invalid_secret", UnknownClient => "unknown_client" }
}
