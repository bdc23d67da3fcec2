//! The one place where errors become JSON-RPC error objects, and the table of every error
//! code authstore puts on the wire (`docs/api.md` documents the same table).

use jsonrpsee::types::ErrorObjectOwned;
use serde_json::json;

use crate::error::Error;

// JSON-RPC 2.0's own codes.

/// The request is not valid JSON (answered by jsonrpsee).
pub const PARSE_ERROR: i32 = -32700;
/// A request that cannot be served as sent.
pub const INVALID_REQUEST: i32 = -32600;
/// No such method (answered by jsonrpsee).
pub const METHOD_NOT_FOUND: i32 = -32601;
/// Invalid params, with `data.field` naming the offending one.
pub const INVALID_PARAMS: i32 = -32602;

// jsonrpsee's server codes: answered by jsonrpsee itself, except `BUSY`, which the per-connection
// in-flight cap (`middleware.rs`) answers with jsonrpsee's code.

/// Batches are disabled.
pub const BATCHES_DISABLED: i32 = -32005;
/// The connection holds as many subscriptions as it may.
pub const TOO_MANY_SUBSCRIPTIONS: i32 = -32006;
/// The request is larger than `--max-message-bytes`.
pub const REQUEST_TOO_LARGE: i32 = -32007;
/// Too many calls in flight on this connection.
pub const BUSY: i32 = -32009;

// authstore's codes, one per kind of refusal in `crate::error::Error`.

pub const NOT_FOUND: i32 = 1001;
pub const CONFLICT: i32 = 1002;
pub const INVALID_GRANT: i32 = 1003;
pub const INVALID_CLIENT: i32 = 1004;
pub const UNAVAILABLE: i32 = 1005;
/// Also the code in the notification that closes a subscription whose next events were pruned.
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
