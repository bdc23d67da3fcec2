//! PKCE (RFC 7636): challenge and verifier syntax, and the S256 check.

use crate::error::{Error, Result};
use crate::secret;

/// The transformation a code challenge was made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    S256,
    Plain,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::S256 => "S256",
            Method::Plain => "plain",
        }
    }

    /// Parses a `code_challenge_method`; `plain` only when the server allows it.
    pub fn parse(field: &str, value: Option<&str>, allow_plain: bool) -> Result<Self> {
        match value {
            None | Some("S256") => Ok(Method::S256),
            Some("plain") if allow_plain => Ok(Method::Plain),
            Some("plain") => Err(Error::invalid(field, "plain is disabled on this server; use S256")),
            Some(_) => Err(Error::invalid(field, "must be S256")),
        }
    }
}

/// A code challenge made with `method` (RFC 7636 §4.2). `plain` is the verifier itself:
/// 43..=128 unreserved characters. `S256` is BASE64URL(SHA256(verifier)) without padding:
/// exactly 43 characters of the base64url alphabet, the last one carrying only 2 of the 6 bits
/// (any other challenge could never verify, so it is refused here rather than stored).
pub fn challenge(field: &str, value: &str, method: Method) -> Result<()> {
    match method {
        Method::Plain => unreserved_43_to_128(field, value),
        Method::S256 => {
            let base64url = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
            if value.len() != 43 || !value.bytes().all(base64url) {
                return Err(Error::invalid(field, "an S256 challenge is exactly 43 base64url characters (RFC 7636)"));
            }
            // 43 characters carry 258 bits; a SHA-256 digest leaves the last 2 at zero.
            if !value.ends_with(|c: char| "AEIMQUYcgkosw048".contains(c)) {
                return Err(Error::invalid(field, "not the base64url encoding of a SHA-256 digest"));
            }
            Ok(())
        }
    }
}

/// A code verifier: 43..=128 unreserved characters (RFC 7636 §4.1).
pub fn verifier(field: &str, value: &str) -> Result<()> {
    unreserved_43_to_128(field, value)
}

/// Whether `verifier` answers `challenge` under `method`, compared in constant time.
pub fn verify(method: Method, challenge: &str, verifier: &str) -> bool {
    match method {
        Method::S256 => secret::constant_time_eq(&secret::s256(verifier), challenge),
        Method::Plain => secret::constant_time_eq(verifier, challenge),
    }
}

fn unreserved_43_to_128(field: &str, value: &str) -> Result<()> {
    if !(43..=128).contains(&value.len()) {
        return Err(Error::invalid(field, "must be 43 to 128 characters (RFC 7636)"));
    }
    if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)) {
        return Err(Error::invalid(field, "must use only unreserved characters (RFC 7636)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn s256_accepts_the_rfc_example_and_rejects_others() {
        assert!(verify(Method::S256, CHALLENGE, VERIFIER));
        assert!(!verify(Method::S256, CHALLENGE, &VERIFIER.replace('d', "e")));
    }

    #[test]
    fn plain_is_refused_unless_enabled() {
        assert!(Method::parse("m", Some("plain"), false).is_err());
        assert_eq!(Method::parse("m", Some("plain"), true), Ok(Method::Plain));
        assert_eq!(Method::parse("m", None, false), Ok(Method::S256));
        assert!(Method::parse("m", Some("s256"), false).is_err());
    }

    #[test]
    fn s256_challenges_are_exactly_43_base64url_characters() {
        assert!(challenge("c", CHALLENGE, Method::S256).is_ok());
        assert!(challenge("c", &secret::s256(&"v".repeat(128)), Method::S256).is_ok());
        // Long enough for RFC 7636's general rule, but no SHA-256 digest looks like these.
        assert!(challenge("c", &"a".repeat(60), Method::S256).is_err());
        assert!(challenge("c", &"a".repeat(44), Method::S256).is_err());
        assert!(challenge("c", &format!("{}~", &CHALLENGE[..42]), Method::S256).is_err());
        assert!(challenge("c", &format!("{}.", &CHALLENGE[..42]), Method::S256).is_err());
        assert!(challenge("c", &format!("{}N", &CHALLENGE[..42]), Method::S256).is_err());
        // plain is the verifier itself: 43..=128 unreserved characters.
        assert!(challenge("c", &"a~".repeat(30), Method::Plain).is_ok());
        assert!(challenge("c", &"a".repeat(129), Method::Plain).is_err());
    }

    #[test]
    fn verifier_syntax_is_enforced() {
        assert!(verifier("v", VERIFIER).is_ok());
        assert!(verifier("v", "short").is_err());
        assert!(verifier("v", &"a".repeat(129)).is_err());
        assert!(verifier("v", &format!("{}+", &VERIFIER[..43])).is_err());
    }
}
