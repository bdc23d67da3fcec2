//! Opaque pagination cursors: the key of the last item of the previous page.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{Error, Result};

const PREFIX: &str = "k1:";

/// The cursor that resumes after `last_key`.
pub fn encode(last_key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{PREFIX}{last_key}"))
}

/// The key a cursor resumes after.
pub fn decode(cursor: &str) -> Result<String> {
    let invalid = || Error::invalid("cursor", "not a cursor returned by this server");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    text.strip_prefix(PREFIX).map(str::to_string).ok_or_else(invalid)
}

/// Splits a page fetched with `limit + 1` rows into items and the next cursor.
pub fn page<T>(mut rows: Vec<T>, limit: usize, key: impl Fn(&T) -> &str) -> (Vec<T>, Option<String>) {
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(|last| encode(key(last)));
        (rows, next)
    } else {
        (rows, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(decode(&encode("abc")).unwrap(), "abc");
        assert!(decode("not base64!").is_err());
        assert!(decode(&URL_SAFE_NO_PAD.encode("x")).is_err());
    }

    #[test]
    fn a_full_page_has_a_cursor_and_the_last_does_not() {
        let (items, next) = page(vec!["a", "b", "c"], 2, |s| s);
        assert_eq!(items, vec!["a", "b"]);
        assert_eq!(decode(&next.unwrap()).unwrap(), "b");
        let (items, next) = page(vec!["a"], 2, |s| s);
        assert_eq!(items, vec!["a"]);
        assert!(next.is_none());
    }
}
