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
        Ok(Params(match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(typed) => Decoded::Ok(typed),
            Err(e) => {
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                let field = field_name(&path, &message).unwrap_or_else(|| blame::<T>(&value));
                Decoded::Err { field, message }
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

/// The field a decoding error is about: the error's path, or for a missing field (reported at
/// the parent) the name serde quotes in the message.
fn field_name(path: &str, message: &str) -> Option<String> {
    if path != "." && !path.is_empty() {
        return Some(path.to_string());
    }
    message
        .split('`')
        .nth(1)
        .filter(|_| message.starts_with("missing field") || message.starts_with("unknown field"))
        .map(str::to_string)
}

/// Flattened structs lose serde's error path. Blame the first key whose removal lets the
/// object decode (every such field is optional), or `params` when none does.
fn blame<T: DeserializeOwned>(value: &serde_json::Value) -> String {
    let Some(object) = value.as_object() else { return "params".into() };
    for key in object.keys() {
        let mut without = object.clone();
        without.remove(key);
        if serde_json::from_value::<T>(serde_json::Value::Object(without)).is_ok() {
            return key.clone();
        }
    }
    "params".into()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::types::SessionPut;

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
        assert_eq!(field(json!("nope")), "params");
    }
}
