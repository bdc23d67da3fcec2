//! Secrets: generation from the OS RNG, SHA-256 digests for storage, constant-time comparison.
//!
//! A plaintext secret exists only in the response that created it. Everything that is stored,
//! logged or compared at rest is [`digest`] output.
//!
//! A call that carries an idempotency key gets its secret from a [`Mint`] keyed by it, so a
//! retry of the call can hand back the same secret without any plaintext having been stored.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// 256 bits, as the contract requires for codes, refresh tokens and client secrets.
const SECRET_BYTES: usize = 32;
/// 128 bits: enough for identifiers that must not collide or be guessed.
const ID_BYTES: usize = 16;

/// A fresh secret: 32 bytes from the OS RNG, base64url without padding (43 characters).
pub fn generate_secret() -> String {
    random_b64(SECRET_BYTES)
}

/// A fresh opaque identifier (22 characters).
pub fn generate_id() -> String {
    random_b64(ID_BYTES)
}

/// Lowercase hex SHA-256 of a secret: the only form in which secrets are stored.
pub fn digest(secret: &str) -> String {
    digest_bytes(secret.as_bytes())
}

/// Lowercase hex SHA-256 of bytes.
pub fn digest_bytes(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for byte in hash {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

/// base64url(SHA-256(input)) without padding, as PKCE S256 defines it (RFC 7636 §4.2).
pub fn s256(input: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(input.as_bytes()))
}

/// Compares two strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Where the one secret a call mints comes from.
#[derive(Clone)]
pub enum Mint {
    /// The OS RNG: a call without an idempotency key.
    Random,
    /// Derived from a server-held secret and the call's idempotency key (see
    /// [`Mint::keyed`]): the same call retried under the same key mints the same secret.
    Keyed([u8; SECRET_BYTES]),
}

impl Mint {
    /// The mint of a call with an idempotency key: HMAC-SHA256 under `server_secret` of the
    /// method and the key. Whoever can recompute it needs both the server secret and the key,
    /// and the key is never stored (only a digest of it), so nothing at rest yields the secret
    /// unless the key can be guessed.
    pub fn keyed(server_secret: &[u8], method: &str, key: &str) -> Self {
        // HMAC accepts keys of any length.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(server_secret) else {
            return Mint::Random;
        };
        mac.update(b"authstore idempotency v1\0");
        mac.update(method.as_bytes());
        mac.update(b"\0");
        mac.update(key.as_bytes());
        Mint::Keyed(mac.finalize().into_bytes().into())
    }

    /// The secret: 256 bits, base64url without padding (43 characters), like
    /// [`generate_secret`].
    pub fn secret(&self) -> String {
        match self {
            Mint::Random => generate_secret(),
            Mint::Keyed(bytes) => URL_SAFE_NO_PAD.encode(bytes),
        }
    }
}

impl std::fmt::Debug for Mint {
    // A keyed mint is as good as the secret it makes: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mint::Random => "Mint::Random",
            Mint::Keyed(_) => "Mint::Keyed(..)",
        })
    }
}

/// Names a server secret without revealing it (16 hex digits of a keyed hash): recorded with
/// each keyed answer, so an answer minted under another secret is never handed back with a
/// secret minted under this one.
pub fn server_secret_id(server_secret: &[u8]) -> String {
    let mut id = digest(&Mint::keyed(server_secret, "", "server secret id").secret());
    id.truncate(16);
    id
}

/// A fresh server secret for keyed mints (32 bytes from the OS RNG), base64url.
pub fn generate_server_secret() -> String {
    random_b64(SECRET_BYTES)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn random_b64(len: usize) -> String {
    let mut buf = [0u8; SECRET_BYTES];
    let buf = &mut buf[..len];
    // The OS RNG failing is not something a caller can cause or recover from.
    #[allow(clippy::expect_used)]
    getrandom::fill(buf).expect("the operating system's random number generator failed");
    URL_SAFE_NO_PAD.encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_carry_256_bits_and_are_url_safe() {
        let s = generate_secret();
        assert_eq!(s.len(), 43);
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(s, generate_secret());
    }

    #[test]
    fn digest_is_hex_sha256() {
        assert_eq!(digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn s256_matches_rfc7636_appendix_b() {
        assert_eq!(s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn keyed_mints_repeat_per_method_and_key_and_differ_otherwise() {
        let server = b"0123456789abcdef0123456789abcdef";
        let a = Mint::keyed(server, "code.issue", "k1").secret();
        assert_eq!(a, Mint::keyed(server, "code.issue", "k1").secret());
        assert_eq!(a.len(), 43);
        assert_ne!(a, Mint::keyed(server, "code.issue", "k2").secret());
        assert_ne!(a, Mint::keyed(server, "token.issue", "k1").secret());
        assert_ne!(a, Mint::keyed(b"another server secret", "code.issue", "k1").secret());
        // The separator keeps method and key apart: ("ab", "c") is not ("a", "bc").
        assert_ne!(Mint::keyed(server, "ab", "c").secret(), Mint::keyed(server, "a", "bc").secret());
        assert_ne!(Mint::Random.secret(), Mint::Random.secret());
    }

    #[test]
    fn constant_time_eq_compares_content_and_length() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
    }
}
