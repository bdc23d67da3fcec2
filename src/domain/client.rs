//! Client registration rules (RFC 7591, and MCP client ID metadata documents).

use chrono::{DateTime, Duration, Utc};
use url::Url;

use super::validate;
use crate::error::{Error, InvalidClient, Result};
use crate::secret::{self, Mint};
use crate::types::{ClientCacheDocument, ClientMetadata, ClientRegister};

/// How a client proves who it is at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    None,
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
        }
    }

    /// Whether this method needs a shared secret.
    pub fn is_confidential(self) -> bool {
        matches!(self, AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost)
    }
}

/// Where a client's metadata came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `client.register` (RFC 7591 dynamic registration).
    Registered,
    /// `client.cache_document` (a client ID metadata document fetched by the portal).
    Document,
}

/// A stored client, as the store read it back. `secret` is the plaintext only in the answer of
/// the call that minted it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientRecord {
    pub client_id: String,
    pub origin: Origin,
    pub metadata: ClientMetadata,
    pub issued_at: DateTime<Utc>,
    /// When the registration was last changed, or the document last cached.
    pub updated_at: DateTime<Utc>,
    /// How long a cached document stays fresh (documents only).
    pub max_age_secs: Option<i64>,
    pub secret: Option<String>,
}

impl ClientRecord {
    /// For a client cached from a metadata document, whether the portal should fetch the
    /// document again at `now` (its `max_age_secs` have passed); `None` for a registered client.
    pub fn document_stale(&self, now: DateTime<Utc>) -> Option<bool> {
        (self.origin == Origin::Document).then(|| {
            let fresh_until = Duration::try_seconds(self.max_age_secs.unwrap_or(0))
                .and_then(|max_age| self.updated_at.checked_add_signed(max_age));
            fresh_until.is_some_and(|until| now >= until)
        })
    }
}

/// Metadata that passed every rule, with RFC 7591 defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidMetadata {
    pub metadata: ClientMetadata,
    pub auth_method: AuthMethod,
}

/// Validates metadata for a client of the given origin, filling in defaults.
pub fn metadata(mut meta: ClientMetadata, origin: Origin) -> Result<ValidMetadata> {
    if meta.redirect_uris.is_empty() {
        return Err(Error::invalid("redirect_uris", "at least one redirect URI is required"));
    }
    validate::list_len("redirect_uris", &meta.redirect_uris)?;
    for uri in &meta.redirect_uris {
        validate::redirect_uri("redirect_uris", uri)?;
    }

    let default_method = match origin {
        // RFC 7591 §2: the default is client_secret_basic.
        Origin::Registered => "client_secret_basic",
        // A document can never carry a shared secret.
        Origin::Document => "none",
    };
    let method = meta.token_endpoint_auth_method.as_deref().unwrap_or(default_method);
    let auth_method = match (origin, method) {
        (_, "none") => AuthMethod::None,
        (Origin::Registered, "client_secret_basic") => AuthMethod::ClientSecretBasic,
        (Origin::Registered, "client_secret_post") => AuthMethod::ClientSecretPost,
        (Origin::Document, "private_key_jwt") => AuthMethod::PrivateKeyJwt,
        (Origin::Registered, _) => {
            return Err(Error::invalid(
                "token_endpoint_auth_method",
                "must be none, client_secret_basic or client_secret_post",
            ));
        }
        (Origin::Document, _) => {
            return Err(Error::invalid(
                "token_endpoint_auth_method",
                "a metadata document must use none or private_key_jwt",
            ));
        }
    };
    meta.token_endpoint_auth_method = Some(auth_method.as_str().to_string());

    let grant_types = meta.grant_types.get_or_insert_with(|| vec!["authorization_code".into()]);
    validate::list_len("grant_types", grant_types)?;
    if let Some(bad) = grant_types.iter().find(|g| !matches!(g.as_str(), "authorization_code" | "refresh_token")) {
        return Err(Error::invalid("grant_types", format!("unsupported grant type {bad:?}")));
    }
    let has_code_grant = grant_types.iter().any(|g| g == "authorization_code");
    let response_types = meta.response_types.get_or_insert_with(|| vec!["code".into()]);
    validate::list_len("response_types", response_types)?;
    if let Some(bad) = response_types.iter().find(|r| r.as_str() != "code") {
        return Err(Error::invalid("response_types", format!("unsupported response type {bad:?}")));
    }
    let has_code_response = response_types.iter().any(|r| r == "code");
    // RFC 7591 §2.1: grant_types and response_types must agree.
    if has_code_response != has_code_grant {
        return Err(Error::invalid(
            "grant_types",
            "authorization_code and response type code must be registered together",
        ));
    }

    for (field, value) in [
        ("client_uri", &meta.client_uri),
        ("logo_uri", &meta.logo_uri),
        ("tos_uri", &meta.tos_uri),
        ("policy_uri", &meta.policy_uri),
        ("jwks_uri", &meta.jwks_uri),
    ] {
        if let Some(value) = value {
            validate::web_url(field, value)?;
        }
    }
    for (field, value) in [
        ("client_name", &meta.client_name),
        ("software_id", &meta.software_id),
        ("software_version", &meta.software_version),
    ] {
        if let Some(value) = value {
            validate::display_text(field, value)?;
        }
    }
    if let Some(scope) = &meta.scope {
        validate::scope("scope", scope)?;
    }
    if let Some(contacts) = &meta.contacts {
        validate::list_len("contacts", contacts)?;
        for contact in contacts {
            validate::display_text("contacts", contact)?;
        }
    }
    if let Some(jwks) = &meta.jwks {
        validate::data("jwks", jwks)?;
        if meta.jwks_uri.is_some() {
            return Err(Error::invalid("jwks", "jwks and jwks_uri are mutually exclusive (RFC 7591 §2)"));
        }
    }
    if auth_method == AuthMethod::PrivateKeyJwt && meta.jwks.is_none() && meta.jwks_uri.is_none() {
        return Err(Error::invalid("jwks_uri", "private_key_jwt needs jwks or jwks_uri"));
    }
    Ok(ValidMetadata { metadata: meta, auth_method })
}

/// A client ID that is the URL of a metadata document: https, a path, no fragment, no dot
/// segments (MCP client ID metadata documents), and within the limits of every other client
/// ID (256 visible ASCII characters), or no flow method could name the client.
pub fn document_url(field: &str, value: &str) -> Result<Url> {
    let url = validate::absolute_uri(field, value)?;
    validate::id(field, value)?;
    if url.scheme() != "https" || url.host().is_none() {
        return Err(Error::invalid(field, "a metadata document client_id must be an https URL"));
    }
    if url.path() == "/" || url.path().is_empty() {
        return Err(Error::invalid(field, "a metadata document client_id must have a path"));
    }
    if value.split('/').any(|segment| segment == "." || segment == "..") {
        return Err(Error::invalid(field, "must not contain dot path segments"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::invalid(field, "must not contain credentials"));
    }
    Ok(url)
}

/// A caller-supplied client secret: long enough to be one, and printable ASCII (RFC 6749
/// appendix A.2), so that it survives HTTP Basic and form encoding unchanged.
pub fn client_secret(field: &str, value: &str) -> Result<()> {
    if value.len() < 32 {
        return Err(Error::invalid(field, "must be at least 32 characters"));
    }
    validate::vschar(field, value)
}

/// What the rules need to know of a stored client to let a session, a code or a token name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub redirect_uris: Vec<String>,
    /// Random per registration (`None` for clients stored before it existed).
    pub incarnation: Option<String>,
    pub issued_at: DateTime<Utc>,
}

/// A redirect URI a flow may send the user back to: one `client` registered.
pub fn redirect_uri_registered(uri: &str, client: &Registration) -> Result<()> {
    if validate::redirect_uri_registered(uri, &client.redirect_uris) {
        Ok(())
    } else {
        Err(Error::invalid("redirect_uri", "not registered for this client"))
    }
}

/// A client about to be stored by `client.register`. `secret` is the plaintext, returned once;
/// only `secret_hash` is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewClient {
    pub client_id: String,
    pub meta: ValidMetadata,
    pub secret: Option<String>,
    pub secret_hash: Option<String>,
    /// Tells this registration apart from an earlier one under the same `client_id`.
    pub incarnation: String,
}

/// Validates `client.register` params (given without the idempotency key). A confidential
/// client gets the caller's secret or one from `mint`; the id is the caller's or a fresh one.
pub fn register(p: ClientRegister, mint: &Mint) -> Result<NewClient> {
    let meta = metadata(p.metadata, Origin::Registered)?;
    let client_id = match p.client_id {
        Some(id) => {
            validate::id("client_id", &id)?;
            id
        }
        None => secret::generate_id(),
    };
    let secret = match (meta.auth_method.is_confidential(), p.client_secret) {
        (true, Some(s)) => {
            client_secret("client_secret", &s)?;
            Some(s)
        }
        (true, None) => Some(mint.secret()),
        (false, Some(_)) => return Err(Error::invalid("client_secret", "a public client has no secret")),
        (false, None) => None,
    };
    Ok(registration(client_id, meta, secret))
}

/// A registration of `client_id` with metadata that passed the rules and its secret, if any.
pub fn registration(client_id: String, meta: ValidMetadata, secret: Option<String>) -> NewClient {
    NewClient {
        client_id,
        meta,
        secret_hash: secret.as_deref().map(secret::digest),
        secret,
        incarnation: secret::generate_id(),
    }
}

/// A client ID metadata document about to be cached by `client.cache_document`.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedDocument {
    pub client_id: String,
    pub meta: ValidMetadata,
    pub max_age_secs: u64,
    /// The incarnation the client gets if this document is its first.
    pub incarnation: String,
}

/// Validates `client.cache_document` params once `client_id` passed [`document_url`];
/// `default_max_age_secs` applies when the caller gives none.
pub fn cache_document(p: ClientCacheDocument, default_max_age_secs: u64) -> Result<CachedDocument> {
    let document_id = p.document.get("client_id").and_then(|v| v.as_str());
    if document_id != Some(p.client_id.as_str()) {
        return Err(Error::invalid("document.client_id", "must equal the URL the document was fetched from"));
    }
    let metadata: ClientMetadata = serde_path_to_error::deserialize(p.document)
        .map_err(|e| Error::invalid(format!("document.{}", e.path()), e.into_inner().to_string()))?;
    let meta = self::metadata(metadata, Origin::Document)?;
    let max_age_secs = match p.max_age_secs {
        None => default_max_age_secs,
        Some(0) => return Err(Error::invalid("max_age_secs", "must be at least 1")),
        Some(n) if n > 366 * 86_400 => return Err(Error::invalid("max_age_secs", "must be at most a year")),
        Some(n) => n,
    };
    Ok(CachedDocument { client_id: p.client_id, meta, max_age_secs, incarnation: secret::generate_id() })
}

/// A validated `client.update`, with the secret it would mint.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub client_id: String,
    pub meta: ValidMetadata,
    pub rotate_secret: bool,
    /// The secret this call mints if it needs one: from the call's mint, so a retry under the
    /// same idempotency key mints it again.
    minted: String,
}

/// What `client.update` writes over the client it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretChange {
    /// The digest to store.
    pub secret_hash: Option<String>,
    /// The plaintext of a newly minted secret, returned once.
    pub new_secret: Option<String>,
}

/// Validates `client.update` params once `client_id` passed its syntax check.
pub fn update(client_id: String, metadata: ClientMetadata, rotate_secret: bool, mint: &Mint) -> Result<Update> {
    let meta = self::metadata(metadata, Origin::Registered)?;
    Ok(Update { client_id, meta, rotate_secret, minted: mint.secret() })
}

impl Update {
    /// Decides the update over the client as read: `found` is its origin and stored secret
    /// digest. A confidential client gets a new secret when asked to rotate or when it had
    /// none; a public one loses its secret.
    pub fn decide(&self, found: Option<(Origin, Option<&str>)>) -> Result<SecretChange> {
        let Some((origin, current)) = found else {
            return Err(Error::NotFound(crate::error::NotFound::Missing));
        };
        if origin != Origin::Registered {
            return Err(Error::invalid(
                "client_id",
                "a cached metadata document changes only through client.cache_document",
            ));
        }
        let confidential = self.meta.auth_method.is_confidential();
        let new_secret = (confidential && (self.rotate_secret || current.is_none())).then(|| self.minted.clone());
        let secret_hash = match (&new_secret, confidential) {
            (Some(s), _) => Some(secret::digest(s)),
            (None, true) => current.map(str::to_string),
            (None, false) => None,
        };
        Ok(SecretChange { secret_hash, new_secret })
    }

    /// For a retry that found the first call's answer: the secret it minted, if the recorded
    /// digest is that of the secret this call mints.
    pub fn minted_again(&self, recorded_hash: Option<&str>) -> Option<String> {
        recorded_hash
            .is_some_and(|h| secret::constant_time_eq(h, &secret::digest(&self.minted)))
            .then(|| self.minted.clone())
    }
}

/// A validated `client.authenticate`: the presented secret, kept only as its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticate {
    pub client_id: String,
    presented_hash: String,
}

/// Validates `client.authenticate` params once `client_id` passed its syntax check.
pub fn authenticate(client_id: String, presented: &str) -> Result<Authenticate> {
    validate::text("client_secret", presented)?;
    Ok(Authenticate { client_id, presented_hash: secret::digest(presented) })
}

impl Authenticate {
    /// Decides over the client as read (`Some` of its stored secret digest, if it has one),
    /// comparing digests in constant time.
    pub fn decide(&self, found: Option<Option<&str>>) -> Result<()> {
        let stored = found.ok_or(Error::InvalidClient(InvalidClient::UnknownClient))?;
        match stored {
            Some(stored) if secret::constant_time_eq(stored, &self.presented_hash) => Ok(()),
            _ => Err(Error::InvalidClient(InvalidClient::InvalidSecret)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(uris: &[&str]) -> ClientMetadata {
        ClientMetadata { redirect_uris: uris.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    #[test]
    fn a_cached_document_is_stale_once_its_max_age_has_passed() {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let record = |origin, max_age_secs| ClientRecord {
            client_id: "c".into(),
            origin,
            metadata: meta(&["https://a.example/cb"]),
            issued_at: t0,
            updated_at: t0,
            max_age_secs,
            secret: None,
        };
        let doc = record(Origin::Document, Some(60));
        assert_eq!(doc.document_stale(t0 + Duration::seconds(59)), Some(false));
        assert_eq!(doc.document_stale(t0 + Duration::seconds(60)), Some(true));
        assert_eq!(record(Origin::Document, Some(i64::MAX)).document_stale(t0), Some(false));
        assert_eq!(record(Origin::Registered, None).document_stale(t0), None);
    }

    #[test]
    fn registration_defaults_follow_rfc7591() {
        let v = metadata(meta(&["https://a.example/cb"]), Origin::Registered).unwrap();
        assert_eq!(v.auth_method, AuthMethod::ClientSecretBasic);
        assert_eq!(v.metadata.grant_types.as_deref(), Some(&["authorization_code".to_string()][..]));
        assert_eq!(v.metadata.response_types.as_deref(), Some(&["code".to_string()][..]));
    }

    #[test]
    fn inconsistent_grant_and_response_types_are_refused() {
        let mut m = meta(&["https://a.example/cb"]);
        m.grant_types = Some(vec!["refresh_token".into()]);
        let err = metadata(m, Origin::Registered).unwrap_err();
        assert!(matches!(err, Error::InvalidParams { field, .. } if field == "grant_types"));
    }

    #[test]
    fn documents_cannot_use_shared_secrets() {
        let mut m = meta(&["https://a.example/cb"]);
        m.token_endpoint_auth_method = Some("client_secret_basic".into());
        assert!(metadata(m, Origin::Document).is_err());
        assert_eq!(metadata(meta(&["https://a.example/cb"]), Origin::Document).unwrap().auth_method, AuthMethod::None);
    }

    #[test]
    fn display_text_and_uris_are_refused_unless_stored_exactly_as_given() {
        let field = |m: ClientMetadata| match metadata(m, Origin::Registered) {
            Err(Error::InvalidParams { field, .. }) => field,
            other => panic!("expected invalid params, got {other:?}"),
        };
        let base = || meta(&["https://a.example/cb"]);
        assert_eq!(field(meta(&["https://a.example/cb\r\nX-Injected: y"])), "redirect_uris");
        assert_eq!(field(meta(&[" https://a.example/cb"])), "redirect_uris");
        assert_eq!(field(ClientMetadata { client_name: Some("Evil\u{202E}gnp.exe".into()), ..base() }), "client_name");
        assert_eq!(field(ClientMetadata { client_name: Some(" Google".into()), ..base() }), "client_name");
        assert_eq!(field(ClientMetadata { client_uri: Some("https://a.example/\t".into()), ..base() }), "client_uri");
        assert_eq!(field(ClientMetadata { logo_uri: Some("https://a.example/l.png ".into()), ..base() }), "logo_uri");
        assert_eq!(field(ClientMetadata { tos_uri: Some("https://a.example/\n".into()), ..base() }), "tos_uri");
        assert_eq!(
            field(ClientMetadata { policy_uri: Some("https://a.example/\u{202E}".into()), ..base() }),
            "policy_uri"
        );
        assert_eq!(field(ClientMetadata { jwks_uri: Some("\thttps://a.example/j".into()), ..base() }), "jwks_uri");
        assert_eq!(field(ClientMetadata { contacts: Some(vec!["a@b.example\u{2066}".into()]), ..base() }), "contacts");
        assert_eq!(field(ClientMetadata { software_id: Some("id\u{200F}".into()), ..base() }), "software_id");
        let fine = ClientMetadata { client_name: Some("Zoë's Client (ß)".into()), ..base() };
        assert_eq!(
            metadata(fine, Origin::Registered).unwrap().metadata.client_name.as_deref(),
            Some("Zoë's Client (ß)")
        );
    }

    #[test]
    fn client_secrets_are_printable_ascii() {
        assert!(client_secret("s", &"s".repeat(32)).is_ok());
        assert!(client_secret("s", &format!("{}é", "s".repeat(32))).is_err());
        assert!(client_secret("s", &format!("{}\u{7f}", "s".repeat(32))).is_err());
    }

    #[test]
    fn document_urls_need_https_and_a_path() {
        assert!(document_url("client_id", &format!("https://app.example/{}.json", "a".repeat(200))).is_ok());
        // Every flow method takes client ids of at most 256 visible ASCII characters.
        assert!(document_url("client_id", &format!("https://app.example/{}.json", "a".repeat(240))).is_err());
        assert!(document_url("client_id", "https://app.example/clïent.json").is_err());
        assert!(document_url("client_id", "https://app.example/oauth/client.json").is_ok());
        assert!(document_url("client_id", "https://app.example/").is_err());
        assert!(document_url("client_id", "http://app.example/c.json").is_err());
        assert!(document_url("client_id", "https://app.example/a/../c.json").is_err());
    }
}
