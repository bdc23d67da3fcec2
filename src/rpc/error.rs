//! The one place where errors become JSON-RPC error objects.

use jsonrpsee::types::ErrorObjectOwned;
use serde_json::json;

use crate::error::Error;

/// JSON-RPC's code for invalid params.
pub const INVALID_PARAMS: i32 = -32602;
/// JSON-RPC's code for a request that cannot be served as sent.
pub const INVALID_REQUEST: i32 = -32600;
pub const NOT_FOUND: i32 = 1001;
pub const CONFLICT: i32 = 1002;
pub const INVALID_GRANT: i32 = 1003;
pub const INVALID_CLIENT: i32 = 1004;
pub const UNAVAILABLE: i32 = 1005;
pub const CURSOR_EXPIRED: i32 = 1006;

impl From<Error> for ErrorObjectOwned {
    fn from(e: Error) -> Self {
        let (code, message, data) = match &e {
            Error::InvalidParams { field, message } => (
                INVALID_PARAMS,
                format!("Invalid params: {field}: {message}"),
                json!({ "reason": "invalid_params", "field": field, "detail": message }),
            ),
            Error::NotFound(reason) => (NOT_FOUND, "not_found".into(), json!({ "reason": reason.as_str() })),
            Error::Conflict => (CONFLICT, "conflict".into(), json!({ "reason": "already_exists" })),
            Error::InvalidGrant(reason) => {
                (INVALID_GRANT, "invalid_grant".into(), json!({ "reason": reason.as_str() }))
            }
            Error::InvalidClient(reason) => {
                (INVALID_CLIENT, "invalid_client".into(), json!({ "reason": reason.as_str() }))
            }
            Error::Unavailable => {
                (UNAVAILABLE, "unavailable".into(), json!({ "reason": "storage", "outcome": "unchanged" }))
            }
            Error::OutcomeUnknown => {
                (UNAVAILABLE, "unavailable".into(), json!({ "reason": "storage", "outcome": "unknown" }))
            }
            Error::WebSocketRequired => (
                INVALID_REQUEST,
                "Invalid request: subscriptions need a WebSocket".into(),
                json!({ "reason": "websocket_required" }),
            ),
            Error::CursorExpired { oldest } => {
                (CURSOR_EXPIRED, "cursor_expired".into(), json!({ "reason": "cursor_expired", "oldest": oldest }))
            }
        };
        ErrorObjectOwned::owned(code, message, Some(data))
    }
}
