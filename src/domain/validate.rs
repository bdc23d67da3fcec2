//! Field-level rules shared by every method. Each check names the field it failed on.

use std::collections::HashSet;

use serde_json::Value;
use url::Url;

use crate::error::{Error, Result};

/// Longest identifier a caller may choose (client, session, grant, user ids).
pub const MAX_ID_LEN: usize = 256;
/// Longest URI we store.
pub const MAX_URI_LEN: usize = 2048;
/// Longest free text (`state`, `scope`, client names...).
pub const MAX_TEXT_LEN: usize = 4096;
/// Largest `data` blob, measured as serialized JSON.
pub const MAX_DATA_BYTES: usize = 64 * 1024;
/// Most entries in a list-valued metadata field.
pub const MAX_LIST_LEN: usize = 64;

/// An opaque identifier: 1..=256 visible ASCII characters.
pub fn id(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(Error::invalid(field, format!("longer than {MAX_ID_LEN} bytes")));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(field, "must be visible ASCII without spaces"));
    }
    Ok(())
}

/// A user identifier: non-empty text of at most 256 bytes, under the rules of [`display_text`]
/// (portals show it, and a user id that only looks like another must not pass for it).
pub fn user_id(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(Error::invalid(field, format!("longer than {MAX_ID_LEN} bytes")));
    }
    display_text(field, value)
}

/// Free text: no control characters, bounded length.
pub fn text(field: &str, value: &str) -> Result<()> {
    if value.len() > MAX_TEXT_LEN {
        return Err(Error::invalid(field, format!("longer than {MAX_TEXT_LEN} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// Text people read (client names, contacts, software ids, user ids): bounded, no control
/// characters, no bidirectional formatting characters (U+202E RIGHT-TO-LEFT OVERRIDE makes
/// "Evil\u{202E}gnp.exe" display as "Evilexe.png"), no line or paragraph separators, and no
/// leading or trailing whitespace.
pub fn display_text(field: &str, value: &str) -> Result<()> {
    text(field, value)?;
    if let Some(c) = value.chars().find(|&c| is_bidi_control(c) || matches!(c, '\u{2028}' | '\u{2029}')) {
        return Err(Error::invalid(
            field,
            format!("must not contain U+{:04X} (bidirectional or line formatting character)", u32::from(c)),
        ));
    }
    if value.starts_with(char::is_whitespace) || value.ends_with(char::is_whitespace) {
        return Err(Error::invalid(field, "must not start or end with whitespace"));
    }
    Ok(())
}

/// The Unicode bidirectional formatting characters (UAX #9 §2): marks, embeddings, overrides
/// and isolates.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A `state` value (RFC 6749 appendix A.5: `1*VSCHAR`, printable ASCII including space),
/// bounded. The portal echoes it into a redirect, so nothing else may pass.
pub fn state(field: &str, value: &str) -> Result<()> {
    vschar(field, value)?;
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty (omit it instead)"));
    }
    Ok(())
}

/// Printable ASCII, space included (RFC 6749 appendix A's `VSCHAR`), bounded.
pub fn vschar(field: &str, value: &str) -> Result<()> {
    if value.len() > MAX_TEXT_LEN {
        return Err(Error::invalid(field, format!("longer than {MAX_TEXT_LEN} bytes")));
    }
    if !value.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(Error::invalid(field, "must be printable ASCII (RFC 6749 VSCHAR)"));
    }
    Ok(())
}

/// An OAuth scope: space-separated tokens of the characters RFC 6749 §3.3 allows.
pub fn scope(field: &str, value: &str) -> Result<()> {
    if value.len() > MAX_TEXT_LEN {
        return Err(Error::invalid(field, format!("longer than {MAX_TEXT_LEN} bytes")));
    }
    let ok = value.bytes().all(|b| b == b' ' || (b'\x21'..=b'\x7e').contains(&b) && b != b'"' && b != b'\\');
    if !ok || value.split(' ').any(str::is_empty) {
        return Err(Error::invalid(field, "must be space-separated scope tokens (RFC 6749 §3.3)"));
    }
    Ok(())
}

/// True when every token of `requested` is also in `granted` (linear in their lengths).
pub fn scope_is_subset(requested: &str, granted: Option<&str>) -> bool {
    let granted: HashSet<&str> = granted.map(|g| g.split(' ').collect()).unwrap_or_default();
    requested.split(' ').all(|token| granted.contains(token))
}

/// An absolute URI without a fragment, parsed. The text itself must already be a URI as
/// RFC 3986 writes one (see [`uri_text`]): `Url::parse` would strip tabs and newlines, trim
/// spaces and percent-encode the rest, and what is stored and handed back is the text, not the
/// parse.
pub fn absolute_uri(field: &str, value: &str) -> Result<Url> {
    if value.len() > MAX_URI_LEN {
        return Err(Error::invalid(field, format!("longer than {MAX_URI_LEN} bytes")));
    }
    uri_text(field, value)?;
    if value.contains('#') {
        return Err(Error::invalid(field, "must not contain a fragment"));
    }
    let url = Url::parse(value).map_err(|e| Error::invalid(field, format!("not an absolute URI: {e}")))?;
    Ok(url)
}

/// RFC 3986 §2: a URI is ASCII letters and digits, `-._~`, the delimiters `:/?#[]@!$&'()*+,;=`,
/// and `%` followed by two hex digits. Anything else (control characters, spaces anywhere,
/// non-ASCII, and `"`, `<`, `>`, `\`, `^`, the backquote, `{`, `|`, `}`) is refused rather
/// than normalised.
pub fn uri_text(field: &str, value: &str) -> Result<()> {
    let bytes = value.as_bytes();
    let mut at = 0;
    while let Some(&b) = bytes.get(at) {
        let ok = match b {
            b'%' => {
                let hex = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(at + 1) && hex(at + 2)) {
                    return Err(Error::invalid(field, "a % must start a percent-encoded octet (RFC 3986)"));
                }
                at += 2;
                true
            }
            b if b.is_ascii_alphanumeric() => true,
            b => b"-._~:/?#[]@!$&'()*+,;=".contains(&b),
        };
        if !ok {
            let why = match b {
                b' ' => "must not contain spaces (percent-encode them)".to_string(),
                b if b.is_ascii_control() => "must not contain control characters".to_string(),
                b if !b.is_ascii() => "must be ASCII (percent-encode other characters; punycode hosts)".to_string(),
                b => format!("must not contain {:?} (RFC 3986)", char::from(b)),
            };
            return Err(Error::invalid(field, why));
        }
        at += 1;
    }
    Ok(())
}

/// An http(s) URL such as `client_uri` or `logo_uri`.
pub fn web_url(field: &str, value: &str) -> Result<Url> {
    let url = absolute_uri(field, value)?;
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        return Err(Error::invalid(field, "must be an http or https URL"));
    }
    Ok(url)
}

/// A redirect URI: absolute, no fragment, `https`, or `http` only on a loopback host.
pub fn redirect_uri(field: &str, value: &str) -> Result<Url> {
    let url = absolute_uri(field, value)?;
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(Error::invalid(field, "http is allowed only for loopback hosts")),
        _ => Err(Error::invalid(field, "must use https (or http on a loopback host)")),
    }
}

/// Whether `presented` matches one of the `registered` redirect URIs: exactly, or for loopback
/// URIs with any port (RFC 8252 §7.3, OAuth 2.1 §8.4.2).
pub fn redirect_uri_registered(presented: &str, registered: &[String]) -> bool {
    if registered.iter().any(|r| r == presented) {
        return true;
    }
    let Ok(presented) = Url::parse(presented) else { return false };
    if !is_loopback(&presented) {
        return false;
    }
    registered.iter().filter_map(|r| Url::parse(r).ok()).any(|mut r| {
        let mut p = presented.clone();
        // Ports are free on loopback; everything else must match.
        let _ = r.set_port(None);
        let _ = p.set_port(None);
        is_loopback(&r) && r == p
    })
}

/// A `resource` indicator (RFC 8707 §2): an absolute URI without a fragment.
pub fn resource(field: &str, value: &str) -> Result<()> {
    absolute_uri(field, value).map(drop)
}

/// The caller's opaque `data`: any JSON up to [`MAX_DATA_BYTES`] once serialized.
pub fn data(field: &str, value: &Value) -> Result<String> {
    let text = serde_json::to_string(value).map_err(|e| Error::invalid(field, e.to_string()))?;
    if text.len() > MAX_DATA_BYTES {
        return Err(Error::invalid(field, format!("larger than {MAX_DATA_BYTES} bytes")));
    }
    Ok(text)
}

/// A list-valued field: bounded number of entries.
pub fn list_len<T>(field: &str, items: &[T]) -> Result<()> {
    if items.len() > MAX_LIST_LEN {
        return Err(Error::invalid(field, format!("more than {MAX_LIST_LEN} entries")));
    }
    Ok(())
}

/// A page size: 1..=1000, default 100.
pub fn limit(value: Option<u32>) -> Result<usize> {
    match value {
        None => Ok(100),
        Some(n @ 1..=1000) => Ok(n as usize),
        Some(_) => Err(Error::invalid("limit", "must be between 1 and 1000")),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(result: Result<impl Sized>) -> String {
        match result {
            Err(Error::InvalidParams { field, .. }) => field,
            Err(other) => panic!("expected invalid params, got {other:?}"),
            Ok(_) => panic!("expected invalid params, got Ok"),
        }
    }

    #[test]
    fn redirect_uris_must_be_https_or_loopback_http_without_fragment() {
        assert!(redirect_uri("r", "https://app.example/cb").is_ok());
        assert!(redirect_uri("r", "http://127.0.0.1:8080/cb").is_ok());
        assert!(redirect_uri("r", "http://localhost/cb").is_ok());
        assert!(redirect_uri("r", "http://[::1]:9/cb").is_ok());
        assert_eq!(field_of(redirect_uri("r", "http://app.example/cb")), "r");
        assert_eq!(field_of(redirect_uri("r", "https://app.example/cb#x")), "r");
        assert_eq!(field_of(redirect_uri("r", "/relative")), "r");
        assert_eq!(field_of(redirect_uri("r", "javascript:alert(1)")), "r");
    }

    #[test]
    fn loopback_redirects_match_on_any_port_and_others_exactly() {
        let registered = vec!["http://127.0.0.1/cb".to_string(), "https://a.example/cb".to_string()];
        assert!(redirect_uri_registered("http://127.0.0.1:53121/cb", &registered));
        assert!(!redirect_uri_registered("http://127.0.0.1:53121/other", &registered));
        assert!(redirect_uri_registered("https://a.example/cb", &registered));
        assert!(!redirect_uri_registered("https://a.example:444/cb", &registered));
        assert!(!redirect_uri_registered("https://a.example/cb/", &registered));
    }

    #[test]
    fn scopes_follow_rfc6749_and_narrowing_is_a_subset_check() {
        assert!(scope("scope", "read write").is_ok());
        assert!(scope("scope", "read  write").is_err());
        assert!(scope("scope", "re\"ad").is_err());
        assert!(scope_is_subset("read", Some("read write")));
        assert!(!scope_is_subset("admin", Some("read write")));
        assert!(!scope_is_subset("read", None));
    }

    // Url::parse strips tabs and newlines and trims spaces, so each of these used to pass and
    // be stored as given: "https://a.example/cb\r\nX-Injected: y" came back from code.consume.
    #[test]
    fn uris_are_refused_unless_their_text_is_an_rfc3986_uri() {
        for bad in [
            "https://a.example/cb\r\nX-Injected: y",
            "https://a.example/cb\n",
            "https://a.example/c\tb",
            " https://a.example/cb",
            "https://a.example/cb ",
            "https://a.example/c b",
            "https://a.example/\u{202E}cb",
            "https://a.example/é",
            "https://ä.example/cb",
            "https://a.example\\cb",
            "https://a.example/cb?x=<script>",
            "https://a.example/cb?x=%zz",
            "https://a.example/cb?x=%4",
            "https://a.example/\u{0}",
        ] {
            assert_eq!(field_of(absolute_uri("u", bad)), "u", "{bad:?}");
            assert_eq!(field_of(redirect_uri("r", bad)), "r", "{bad:?}");
            assert_eq!(field_of(web_url("w", bad)), "w", "{bad:?}");
            assert_eq!(field_of(resource("res", bad)), "res", "{bad:?}");
        }
        for good in [
            "https://a.example/cb",
            "https://a.example/cb?x=1&y=%2F~._-!$'()*+,;=:@",
            "https://xn--4ca.example/cb",
            "http://[::1]:8080/cb",
            "https://a.example/%E2%80%AE",
        ] {
            assert_eq!(absolute_uri("u", good).map(drop), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn display_text_refuses_control_bidi_and_surrounding_whitespace() {
        for bad in
            ["a\tb", "Evil\u{202E}gnp.exe", "a\u{2066}b", "\u{200F}x", "x\u{2028}y", " x", "x ", "x\u{a0}", "\u{85}"]
        {
            assert_eq!(field_of(display_text("n", bad)), "n", "{bad:?}");
            assert_eq!(field_of(user_id("user_id", bad)), "user_id", "{bad:?}");
        }
        for good in ["Zoë", "名前", "a b", "Family \u{1F468}\u{200D}\u{1F469}", "\u{0645}\u{0647}\u{200C}\u{0631}"] {
            assert_eq!(display_text("n", good), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn state_is_non_empty_printable_ascii() {
        assert_eq!(state("state", "xyz 123 ~!"), Ok(()));
        for bad in ["", "a\u{202E}", "a\tb", "é", "\u{7f}"] {
            assert_eq!(field_of(state("state", bad)), "state", "{bad:?}");
        }
        assert!(state("state", &"s".repeat(MAX_TEXT_LEN + 1)).is_err());
    }

    #[test]
    fn ids_are_bounded_visible_ascii() {
        assert!(id("id", "abc-123").is_ok());
        assert!(id("id", "").is_err());
        assert!(id("id", "has space").is_err());
        assert!(id("id", &"x".repeat(257)).is_err());
    }
}
