//! Idempotency keys: a state-changing call retried over a lost connection gets the first
//! call's answer back instead of applying again.
//!
//! A portal that loses its WebSocket mid-call cannot know whether the change committed. Without
//! a key, retrying `code.consume` is a replay (it revokes the grant) and retrying `token.rotate`
//! is reuse (it revokes the family). With a key, the store records the first answer in the
//! same transaction as the change, and a retry with the same key and the same params gets that
//! answer back. What is recorded names neither the key nor any secret: the record is named by
//! a digest of method and key, the params are kept as a digest, and a secret minted under a key
//! is derived from it ([`Mint::keyed`]), so the retry can mint it again.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::secret::{self, Mint};

/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 128;

/// How long a first answer is kept for retries. The contract promises at least 10 minutes.
pub const KEPT_FOR_SECS: i64 = 3600;

/// The params field that carries the key.
pub const FIELD: &str = "idempotency_key";

/// A state-changing call that carries an idempotency key, as the store sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyed {
    /// Names the record of the first answer: the digest of method and key.
    pub record: String,
    /// The digest of the call's params (without the key): a retry must present the same.
    pub params: String,
    /// Until when the first answer is kept.
    pub expires_at: DateTime<Utc>,
    /// Names the server secret the call's mint derives from: an answer recorded under another
    /// one cannot be handed back (its secret would not be minted again).
    pub secret_id: String,
}

/// What a state-changing call needs besides its params: its key, if it has one, and where
/// the secret it may mint comes from.
#[derive(Debug, Clone)]
pub struct Call {
    pub keyed: Option<Keyed>,
    pub mint: Mint,
}

impl Call {
    /// A call without a key: nothing recorded, secrets from the OS RNG.
    pub fn unkeyed() -> Self {
        Call { keyed: None, mint: Mint::Random }
    }
}

/// Checks `key` (1 to 128 printable ASCII characters) and describes the call `method` with
/// `params` (given without the key). `server_secret` (named `secret_id`) keys the derivation
/// of minted secrets.
pub fn call<P: Serialize>(
    method: &str,
    key: Option<&str>,
    params: &P,
    server_secret: &[u8],
    secret_id: &str,
    now: DateTime<Utc>,
) -> Result<Call> {
    let Some(key) = key else {
        return Ok(Call::unkeyed());
    };
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(Error::invalid(FIELD, format!("must be 1 to {MAX_KEY_LEN} characters")));
    }
    if !key.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err(Error::invalid(FIELD, "must be printable ASCII"));
    }
    let params = serde_json::to_vec(params).map_err(|e| Error::invalid("params", e.to_string()))?;
    let params = secret::digest_bytes(&params);
    Ok(Call {
        keyed: Some(Keyed {
            record: secret::digest(&format!("{method}\0{key}")),
            params,
            expires_at: now + Duration::seconds(KEPT_FOR_SECS),
            secret_id: secret_id.to_string(),
        }),
        mint: Mint::keyed(server_secret, method, key),
    })
}

/// Whether a first answer recorded with `params` (a digest) under the server secret named
/// `secret_id` may be handed back to `keyed`: the same key with other params is refused, and so
/// is an answer minted under another idempotency secret (its secret cannot be minted again
/// here, so handing it back would give one that matches nothing).
pub fn may_recall(keyed: &Keyed, params: &str, secret_id: Option<&str>) -> Result<()> {
    if !secret::constant_time_eq(params, &keyed.params) {
        return Err(reused_with_other_params());
    }
    if secret_id.is_some_and(|id| id != keyed.secret_id) {
        return Err(recorded_under_another_secret());
    }
    Ok(())
}

/// The refusal for a retry whose first answer was minted under another server secret (the
/// idempotency secret was changed since): its secret cannot be minted again.
pub fn recorded_under_another_secret() -> Error {
    Error::invalid(FIELD, "was answered under another idempotency secret; its answer cannot be handed back")
}

/// The refusal for a key presented again with other params.
pub fn reused_with_other_params() -> Error {
    Error::invalid(FIELD, "was already used with different params for this method")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SERVER: &[u8] = b"server secret of thirty-two bytes";

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn keyed(method: &str, key: &str, params: serde_json::Value) -> Keyed {
        call(method, Some(key), &params, SERVER, "id", now()).unwrap().keyed.unwrap()
    }

    #[test]
    fn no_key_records_nothing_and_mints_at_random() {
        let c = call("code.issue", None, &json!({}), SERVER, "id", now()).unwrap();
        assert!(c.keyed.is_none());
        assert!(matches!(c.mint, Mint::Random));
    }

    #[test]
    fn keys_are_one_to_128_printable_ascii_characters() {
        for bad in ["", "tab\there", "nul\0", "é", &"k".repeat(129)] {
            let err = call("code.issue", Some(bad), &json!({}), SERVER, "id", now()).unwrap_err();
            assert!(matches!(err, Error::InvalidParams { ref field, .. } if field == FIELD), "{bad:?}: {err:?}");
        }
        for good in ["k", "a key with spaces", "~!@#$%^&*()", &"k".repeat(128)] {
            assert!(call("code.issue", Some(good), &json!({}), SERVER, "id", now()).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn the_record_is_named_by_method_and_key_and_holds_no_key() {
        let a = keyed("code.consume", "key-1", json!({"code": "c"}));
        assert_eq!(a.record, keyed("code.consume", "key-1", json!({"code": "other"})).record);
        assert_ne!(a.record, keyed("token.rotate", "key-1", json!({"code": "c"})).record);
        assert_ne!(a.record, keyed("code.consume", "key-2", json!({"code": "c"})).record);
        assert!(!a.record.contains("key-1"));
        assert_eq!(a.expires_at, now() + Duration::seconds(KEPT_FOR_SECS));
    }

    #[test]
    fn params_are_kept_as_a_digest_that_tells_them_apart() {
        let a = keyed("code.consume", "k", json!({"code": "secret-code", "client_id": "c"}));
        assert_eq!(a.params, keyed("code.consume", "k", json!({"code": "secret-code", "client_id": "c"})).params);
        assert_ne!(a.params, keyed("code.consume", "k", json!({"code": "secret-code", "client_id": "d"})).params);
        assert!(!a.params.contains("secret-code"));
        assert_eq!(a.params.len(), 64);
    }
}
