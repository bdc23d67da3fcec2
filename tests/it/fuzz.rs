//! Property-based fuzzing of the request decoding and validation path: arbitrary JSON as params
//! for every method must decode and validate to a value or to invalid params naming a field,
//! never panic. `PROPTEST_CASES` raises the case count (docs/benchmarks.md records a long run).

use authstore::domain::client::{self, Origin};
use authstore::domain::{Policy, code, session, token, validate};
use authstore::error::Error;
use authstore::rpc::Params;
use authstore::secret::Mint;
use authstore::types::*;
use chrono::DateTime;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const FIELDS: &[&str] = &[
    "id",
    "client_id",
    "redirect_uri",
    "redirect_uris",
    "state",
    "code_challenge",
    "code_challenge_method",
    "scope",
    "resource",
    "user_id",
    "data",
    "ttl_secs",
    "code",
    "code_verifier",
    "token",
    "grant_id",
    "cursor",
    "limit",
    "token_endpoint_auth_method",
    "grant_types",
    "response_types",
    "client_secret",
    "session_id",
    "kinds",
    "since",
    "logo_uri",
    "contacts",
    "jwks",
    "jwks_uri",
    "max_age_secs",
    "document",
    "rotate_secret",
];

fn interesting_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("https://app.example/cb".to_string()),
        Just("http://127.0.0.1:9000/callback".to_string()),
        Just("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_string()),
        Just("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".to_string()),
        Just("S256".to_string()),
        Just("plain".to_string()),
        Just("none".to_string()),
        Just("authorization_code".to_string()),
        Just("read write".to_string()),
        Just("javascript:alert(1)".to_string()),
        Just("https://x/#frag".to_string()),
        "\\PC{0,80}",
        ".{0,300}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)),
        interesting_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((field(), inner), 0..10)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn field() -> impl Strategy<Value = String> {
    prop_oneof![4 => prop::sample::select(FIELDS).prop_map(str::to_string), 1 => "[a-z_]{0,12}"]
}

/// Params objects that mostly use the real field names.
fn params() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::collection::vec((field(), json_value()), 0..12).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        1 => json_value(),
    ]
}

/// Decodes like a handler does; a failure must name a field.
fn decode<T: serde::de::DeserializeOwned>(value: &Value) -> Option<T> {
    let params: Params<T> = serde_json::from_value(json!(value)).expect("Params accepts any JSON");
    match params.into_inner() {
        Ok(typed) => Some(typed),
        Err(Error::InvalidParams { field, .. }) => {
            assert!(!field.is_empty(), "an invalid-params error names its field");
            None
        }
        Err(other) => panic!("decoding produced {other:?}"),
    }
}

/// Validation may refuse, but only as invalid params with a field.
fn refused_cleanly<T>(result: Result<T, Error>) {
    if let Err(e) = result {
        match e {
            Error::InvalidParams { field, .. } => assert!(!field.is_empty()),
            other => panic!("validation produced {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_params_decode_and_validate_without_panicking(value in params()) {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let policy = Policy::default();
        if let Some(p) = decode::<SessionPut>(&value) { refused_cleanly(session::put(p, &policy, now)); }
        if let Some(p) = decode::<SessionUpdate>(&value) { refused_cleanly(session::update(p, &policy, now)); }
        if let Some(p) = decode::<CodeIssue>(&value) { refused_cleanly(code::issue(p, &policy, now, &Mint::Random).and_then(|issue| match issue.session_id() {
            // The rest is decided over the stored session.
            Some(_) => Ok(()),
            None => issue.decide(None).map(drop),
        })); }
        if let Some(p) = decode::<CodeConsume>(&value) { refused_cleanly(code::consume_params(&p)); }
        if let Some(p) = decode::<TokenIssue>(&value) { refused_cleanly(token::issue(p, &policy, now, &Mint::Random)); }
        if let Some(p) = decode::<TokenRotate>(&value) { refused_cleanly(token::rotate_params(&p)); }
        if let Some(p) = decode::<TokenRevoke>(&value) { refused_cleanly(token::revoke_scope(p)); }
        if let Some(p) = decode::<ClientRegister>(&value) { refused_cleanly(client::metadata(p.metadata, Origin::Registered)); }
        if let Some(p) = decode::<ClientUpdate>(&value) { refused_cleanly(client::metadata(p.metadata, Origin::Document)); }
        if let Some(p) = decode::<SessionList>(&value) { refused_cleanly(validate::limit(p.limit)); }
        if let Some(p) = decode::<ClientCacheDocument>(&value) { refused_cleanly(client::document_url("client_id", &p.client_id)); }
        let _ = decode::<Subscribe>(&value);
        let _ = decode::<TokenList>(&value);
    }
}
