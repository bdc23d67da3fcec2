//! The contract's shapes: params and results of every method, exactly as they travel as JSON.
//!
//! Plain serde data with no behaviour. `domain` validates params into commands, the `store`
//! returns domain records that `rpc` turns into these results (`rpc/wire.rs`), and the `rpc`
//! traits use them for both server and client.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One page of a list method. `next_cursor` is absent on the last page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

// === Clients ===

/// RFC 7591 client metadata, as accepted by `client.register` and `client.update`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ClientMetadata {
    pub redirect_uris: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_types: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_types: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contacts: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tos_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub software_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub software_version: Option<String>,
    /// Only meaningful for `private_key_jwt` clients (client ID metadata documents).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks: Option<Value>,
}

/// `client.register` params: metadata plus optional caller-chosen credentials.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(from = "ClientRegisterParams")]
pub struct ClientRegister {
    #[serde(flatten)]
    pub metadata: ClientMetadata,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `client.update` params: a full replacement of the metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(from = "ClientUpdateParams")]
pub struct ClientUpdate {
    pub client_id: String,
    #[serde(flatten)]
    pub metadata: ClientMetadata,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_secret: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `client.register` and `client.update` take the metadata fields at the top level of their
/// params. Decoded through `#[serde(flatten)]`, an unknown key could not be refused and a bad
/// field inside the metadata lost its name (serde buffers flattened fields and reports their
/// errors at the object). So they are decoded from these wire shapes, which list every field
/// inline (the metadata list is written once, here), and then split into `metadata` and the
/// rest. `rpc.discover` describes the wire shapes.
macro_rules! metadata_params {
    ($(#[$attr:meta])* $wire:ident => $params:ident { $($(#[$fattr:meta])* $field:ident: $ty:ty,)* }) => {
        #[derive(Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        $(#[$attr])*
        struct $wire {
            $($(#[$fattr])* $field: $ty,)*
            #[serde(default)]
            redirect_uris: Vec<String>,
            token_endpoint_auth_method: Option<String>,
            grant_types: Option<Vec<String>>,
            response_types: Option<Vec<String>>,
            client_name: Option<String>,
            client_uri: Option<String>,
            logo_uri: Option<String>,
            scope: Option<String>,
            contacts: Option<Vec<String>>,
            tos_uri: Option<String>,
            policy_uri: Option<String>,
            software_id: Option<String>,
            software_version: Option<String>,
            /// Only meaningful for `private_key_jwt` clients (client ID metadata documents).
            jwks_uri: Option<String>,
            jwks: Option<Value>,
        }

        impl From<$wire> for $params {
            fn from(w: $wire) -> Self {
                $params {
                    $($field: w.$field,)*
                    metadata: ClientMetadata {
                        redirect_uris: w.redirect_uris,
                        token_endpoint_auth_method: w.token_endpoint_auth_method,
                        grant_types: w.grant_types,
                        response_types: w.response_types,
                        client_name: w.client_name,
                        client_uri: w.client_uri,
                        logo_uri: w.logo_uri,
                        scope: w.scope,
                        contacts: w.contacts,
                        tos_uri: w.tos_uri,
                        policy_uri: w.policy_uri,
                        software_id: w.software_id,
                        software_version: w.software_version,
                        jwks_uri: w.jwks_uri,
                        jwks: w.jwks,
                    },
                }
            }
        }
    };
}

metadata_params! {
    #[schemars(rename = "ClientRegister")]
    ClientRegisterParams => ClientRegister {
        client_id: Option<String>,
        client_secret: Option<String>,
        idempotency_key: Option<String>,
    }
}

metadata_params! {
    #[schemars(rename = "ClientUpdate")]
    ClientUpdateParams => ClientUpdate {
        client_id: String,
        rotate_secret: Option<bool>,
        idempotency_key: Option<String>,
    }
}

/// `client.cache_document` params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientCacheDocument {
    pub client_id: String,
    pub document: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_secs: Option<u64>,
    /// Makes a retry of this call over a lost connection return the first answer (1 to 128
    /// printable ASCII characters, unique per operation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Params naming one client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientRef {
    pub client_id: String,
}

/// `client.delete` params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientDelete {
    pub client_id: String,
    /// Makes a retry of this call over a lost connection return the first answer (1 to 128
    /// printable ASCII characters, unique per operation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `client.authenticate` params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthenticate {
    pub client_id: String,
    pub client_secret: String,
}

/// A stored client: its metadata plus what the server assigned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Client {
    pub client_id: String,
    /// Seconds since the epoch (RFC 7591 §3.2.1).
    pub client_id_issued_at: i64,
    /// 0: the secret never expires.
    pub client_secret_expires_at: i64,
    /// Present only in the response that created or rotated the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    #[serde(flatten)]
    pub metadata: ClientMetadata,
    /// Present for clients cached from a client ID metadata document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_stale: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_cached_at: Option<DateTime<Utc>>,
}

/// `client.list` params.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientList {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `{deleted: bool}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Deleted {
    pub deleted: bool,
}

/// `{authenticated: true}`: the answer to a successful `client.authenticate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Authenticated {
    pub authenticated: bool,
    pub client: Client,
}

// === Sessions ===

/// `session.put` params.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionPut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub client_id: String,
    pub redirect_uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_challenge: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_challenge_method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
    /// Makes a retry of this call over a lost connection return the first answer (1 to 128
    /// printable ASCII characters, unique per operation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// A pending authorization session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Session {
    pub id: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub scope: Option<String>,
    pub resource: Option<String>,
    pub user_id: Option<String>,
    pub data: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Params naming one session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRef {
    pub id: String,
}

/// `session.delete` params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionDelete {
    pub id: String,
    /// Makes a retry of this call over a lost connection return the first answer (1 to 128
    /// printable ASCII characters, unique per operation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `session.update` params: only the fields given change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionUpdate {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
    /// Makes a retry of this call over a lost connection return the first answer (1 to 128
    /// printable ASCII characters, unique per operation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `session.list` params.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(default)]
pub struct SessionList {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `session.purge` params.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(default)]
pub struct SessionPurge {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Makes a retry of this call over a lost connection return the first answer (1 to 128
    /// printable ASCII characters, unique per operation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `{purged: n}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Purged {
    pub purged: u64,
}

// === Authorization codes ===

/// `code.issue` params. With `session_id`, omitted fields come from the session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(default)]
pub struct CodeIssue {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_challenge: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_challenge_method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Makes a retry of this call over a lost connection return the first answer (1 to 128
    /// printable ASCII characters, unique per operation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// A freshly issued authorization code: the only time its plaintext is seen. It also carries
/// what the portal needs to build the redirect (`state` is the session's, when the code was
/// issued from one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IssuedCode {
    pub code: String,
    pub grant_id: String,
    pub expires_at: DateTime<Utc>,
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub scope: Option<String>,
    pub resource: Option<String>,
}

/// `code.consume` params.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeConsume {
    pub code: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub code_verifier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Makes a retry of this call over a lost connection return the first answer (1 to 128
    /// printable ASCII characters, unique per operation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// What a successful `code.consume` hands back to the token endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConsumedCode {
    pub grant_id: String,
    pub client_id: String,
    pub user_id: String,
    pub scope: Option<String>,
    pub resource: Option<String>,
    pub data: Option<Value>,
    pub redirect_uri: String,
}

// === Refresh tokens ===

/// `token.issue` params.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenIssue {
    pub client_id: String,
    pub user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Makes a retry of this call over a lost connection return the first answer (1 to 128
    /// printable ASCII characters, unique per operation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// A freshly issued refresh token: the only time its plaintext is seen. It also carries what
/// the portal needs to mint the access token that goes with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IssuedToken {
    pub token: String,
    pub token_id: String,
    pub grant_id: String,
    pub expires_at: DateTime<Utc>,
    pub client_id: String,
    pub user_id: String,
    pub scope: Option<String>,
    pub resource: Option<String>,
}

/// Params carrying one refresh token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRef {
    pub token: String,
}

/// An active refresh token's metadata; never its value or hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TokenInfo {
    pub token_id: String,
    pub grant_id: String,
    pub client_id: String,
    pub user_id: String,
    pub scope: Option<String>,
    pub resource: Option<String>,
    pub data: Option<Value>,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// `token.rotate` params.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRotate {
    pub token: String,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
    /// Makes a retry of this call over a lost connection return the first answer (1 to 128
    /// printable ASCII characters, unique per operation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `token.revoke` params: exactly one of `{token}`, `{grant_id}`, `{client_id, user_id?}`,
/// `{user_id}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(default)]
pub struct TokenRevoke {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Makes a retry of this call over a lost connection return the first answer (1 to 128
    /// printable ASCII characters, unique per operation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `{revoked: n}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Revoked {
    pub revoked: u64,
}

/// `token.list` params.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(default)]
pub struct TokenList {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

// === Server ===

/// `server.info` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServerInfo {
    pub name: String,
    pub version: String,
    /// `surrealkv`, `mem` or `ws`.
    pub storage: String,
    pub started_at: DateTime<Utc>,
    pub uptime_secs: u64,
    /// The wire contract this server speaks (`v1`).
    pub contract: String,
    /// The newest event cursor: subscribe with `since: head` to start "from now" and still
    /// hold a cursor to resume from.
    pub head: String,
    /// The oldest cursor `since` still accepts (the cursor just before the oldest retained
    /// event, or `head` when none is retained); older ones are `cursor_expired`.
    pub oldest: String,
}

/// `server.stats` result: live counts per kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServerStats {
    pub clients: u64,
    pub sessions: u64,
    pub codes: u64,
    pub tokens: u64,
    pub events_retained: u64,
    /// How far behind its deadline the oldest unexpired-but-due record is, in milliseconds.
    pub expiry_lag_ms: u64,
}

// === Events ===

/// `session.subscribe` / `token.subscribe` params.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[serde(default)]
pub struct Subscribe {
    /// Only these kinds; all when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kinds: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Replay every retained event after this cursor, then continue live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// A `session.event` notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SessionEvent {
    pub cursor: String,
    /// `expired`, `purged`, `deleted` or `completed`.
    pub kind: String,
    pub session_id: String,
    pub client_id: String,
    pub user_id: Option<String>,
    pub at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A `token.event` notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TokenEvent {
    pub cursor: String,
    /// `rotated`, `revoked`, `reuse_detected` or `expired`.
    pub kind: String,
    pub token_id: String,
    pub grant_id: String,
    pub client_id: String,
    pub user_id: String,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;

    fn properties<T: JsonSchema>() -> BTreeSet<String> {
        let schema = schemars::schema_for!(T);
        schema.as_value()["properties"].as_object().unwrap().keys().cloned().collect()
    }

    // The wire shapes list the metadata fields a second time: they must not drift apart.
    #[test]
    fn register_and_update_params_carry_every_metadata_field() {
        let metadata = properties::<ClientMetadata>();
        let mut register = metadata.clone();
        register.extend(["client_id".to_string(), "client_secret".to_string(), "idempotency_key".to_string()]);
        assert_eq!(properties::<ClientRegister>(), register);
        let mut update = metadata;
        update.extend(["client_id".to_string(), "rotate_secret".to_string(), "idempotency_key".to_string()]);
        assert_eq!(properties::<ClientUpdate>(), update);
    }

    #[test]
    fn register_params_round_trip_through_the_wire_shape() {
        let params = ClientRegister {
            client_id: Some("c".into()),
            client_secret: None,
            idempotency_key: Some("k".into()),
            metadata: ClientMetadata {
                redirect_uris: vec!["https://a.example/cb".into()],
                client_name: Some("n".into()),
                jwks: Some(json!({"keys": []})),
                ..Default::default()
            },
        };
        let decoded: ClientRegister = serde_json::from_value(serde_json::to_value(&params).unwrap()).unwrap();
        assert_eq!(decoded, params);
    }
}
