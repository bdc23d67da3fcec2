//! Params as the contract sends them: one JSON object per call.
//!
//! jsonrpsee's generated server code would report a bad param as a bare string. [`Params`]
//! accepts any JSON value and defers typing to the handler, which turns a failure into
//! -32602 with `data.field` naming the offending field.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// A method's params object, decoded when the handler asks for it.
pub struct Params<T>(Decoded<T>);

enum Decoded<T> {
    Ok(T),
    Err { field: String, message: String },
}

impl<T> Params<T> {
    pub fn new(value: T) -> Self {
        Params(Decoded::Ok(value))
    }

    /// The typed params, or invalid params naming the field that did not fit.
    pub fn into_inner(self) -> Result<T, Error> {
        match self.0 {
            Decoded::Ok(value) => Ok(value),
            Decoded::Err { field, message } => Err(Error::InvalidParams { field, message }),
        }
    }
}

impl<T> From<T> for Params<T> {
    fn from(value: T) -> Self {
        Params::new(value)
    }
}

impl<T> fmt::Debug for Params<T> {
    // Params carry secrets (codes, tokens, client secrets): never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Params(..)")
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Params<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        if !value.is_object() {
            return Ok(Params(Decoded::Err {
                field: "params".into(),
                message: "must be an object of named params".into(),
            }));
        }
        // One decode, linear in the size of the params: every params type is a plain struct
        // (no `#[serde(flatten)]`, unknown keys refused), so the error path names the field.
        Ok(Params(match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(typed) => Decoded::Ok(typed),
            Err(e) => {
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                // An empty key cannot name anything: the whole params object is blamed.
                let field = field_name(&path, &message).filter(|f| !f.is_empty()).unwrap_or("params");
                Decoded::Err { field: clip(field, MAX_FIELD_BYTES), message: clip(&message, MAX_MESSAGE_BYTES) }
            }
        }))
    }
}

impl<T: Serialize> Serialize for Params<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Decoded::Ok(value) => value.serialize(serializer),
            Decoded::Err { message, .. } => Err(serde::ser::Error::custom(message)),
        }
    }
}

/// The most of a caller's key or value an error echoes back: serde quotes the offending key or
/// string, and a megabyte-long one must not make the answer too large to send.
const MAX_FIELD_BYTES: usize = 256;
const MAX_MESSAGE_BYTES: usize = 1024;

/// The field a decoding error is about: the error's path, or for a missing or unknown field
/// (reported at the parent) the name serde quotes in the message.
fn field_name<'m>(path: &'m str, message: &'m str) -> Option<&'m str> {
    if path != "." && !path.is_empty() {
        return Some(path);
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        return rest.split('`').next();
    }
    // "unknown field `KEY`, expected one of `a`, `b`" (or ", there are no fields"): the key
    // itself may contain backticks.
    let rest = message.strip_prefix("unknown field `")?;
    let end = rest.find("`, expected").or_else(|| rest.find("`, there are no fields")).unwrap_or(rest.len());
    rest.get(..end)
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub(super) fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;
    use crate::types::{ClientRegister, SessionPut};

    fn field(value: serde_json::Value) -> String {
        match serde_json::from_value::<Params<SessionPut>>(value).unwrap().into_inner() {
            Err(Error::InvalidParams { field, .. }) => field,
            other => panic!("expected invalid params, got {other:?}"),
        }
    }

    #[test]
    fn wrong_types_and_missing_fields_are_named() {
        assert_eq!(field(json!({"client_id": "c", "redirect_uri": "https://a/cb", "ttl_secs": -5})), "ttl_secs");
        assert_eq!(field(json!({"client_id": 7, "redirect_uri": "https://a/cb"})), "client_id");
        assert_eq!(field(json!({"redirect_uri": "https://a/cb"})), "client_id");
        assert_eq!(field(json!("nope")), "params");
    }

    #[test]
    fn unknown_fields_are_named_even_with_backticks() {
        assert_eq!(field(json!({"client_id": "c", "redirect_uri": "https://a/cb", "ttl_sec": 5})), "ttl_sec");
        assert_eq!(field(json!({"client_id": "c", "redirect_uri": "https://a/cb", "a`, b": 5})), "a`, b");
        assert_eq!(field(json!({"client_id": "c", "redirect_uri": "https://a/cb", "": 5})), "params");
    }

    #[test]
    fn huge_keys_and_values_are_clipped_in_the_error() {
        let key = "k".repeat(100_000);
        let Err(Error::InvalidParams { field, message }) =
            serde_json::from_value::<Params<SessionPut>>(json!({ key: 1 })).unwrap().into_inner()
        else {
            panic!("expected invalid params");
        };
        assert!(field.len() <= MAX_FIELD_BYTES + 3 && field.starts_with("kkk"), "{}", field.len());
        assert!(message.len() <= MAX_MESSAGE_BYTES + 3);
        let Err(Error::InvalidParams { field, message }) =
            serde_json::from_value::<Params<SessionPut>>(json!({"ttl_secs": "é".repeat(100_000)}))
                .unwrap()
                .into_inner()
        else {
            panic!("expected invalid params");
        };
        assert_eq!(field, "ttl_secs");
        assert!(message.len() <= MAX_MESSAGE_BYTES + 3);
    }

    static DECODES: AtomicUsize = AtomicUsize::new(0);

    /// Counts how often the params type is decoded.
    #[derive(Debug)]
    struct Counting<T>(T);

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Counting<T> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            DECODES.fetch_add(1, Ordering::SeqCst);
            T::deserialize(deserializer).map(Counting)
        }
    }

    // A bad field among thousands of keys is found with one decode, not one per key (which made
    // a 112 KB `client.register` cost seconds of CPU and a 1 MiB one minutes).
    #[test]
    fn a_bad_field_among_many_keys_costs_one_decode() {
        let mut object = serde_json::Map::new();
        object.insert("redirect_uris".into(), json!(5));
        for i in 0..2000 {
            object.insert(format!("a{i:04}"), json!(0));
        }
        DECODES.store(0, Ordering::SeqCst);
        let decoded: Params<Counting<ClientRegister>> =
            serde_json::from_value(serde_json::Value::Object(object)).unwrap();
        let Err(Error::InvalidParams { field, .. }) = decoded.into_inner() else { panic!("expected invalid params") };
        assert_eq!(DECODES.load(Ordering::SeqCst), 1, "decodes for one bad message (field {field})");
        assert!(field == "redirect_uris" || field.starts_with('a'), "{field}");
    }
}
