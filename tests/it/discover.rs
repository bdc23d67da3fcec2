//! `rpc.discover` describes every registered method and is a valid OpenRPC document.

use jsonrpsee::core::client::ClientT;
use jsonrpsee::rpc_params;
use serde_json::Value;

use crate::support::TestApp;

/// The server's RPC module, built the way the application builds it.
async fn registered_module() -> jsonrpsee::RpcModule<()> {
    use std::sync::Arc;

    use authstore::clock::SystemClock;
    use authstore::config::Config;
    use authstore::hub::Hub;
    use authstore::metrics::Metrics;
    use authstore::rpc::{Context, module};
    use authstore::store::Store;

    let config = Config::ephemeral();
    let store = Store::open(&config.store).await.unwrap();
    let (_closing, closing) = tokio::sync::watch::channel(false);
    let cx = Context {
        store,
        policy: config.policy,
        clock: Arc::new(SystemClock),
        started_at: chrono::DateTime::UNIX_EPOCH,
        hub: Hub::new(16, closing),
        subscriber_send_timeout: config.subscriber_send_timeout,
        metrics: Arc::new(Metrics::new()),
        idempotency_secret: b"test".to_vec(),
        idempotency_secret_id: "test".into(),
    };
    module(Arc::new(cx)).unwrap()
}

#[tokio::test]
async fn rpc_discover_lists_every_method_and_validates_against_the_openrpc_meta_schema() {
    let app = TestApp::spawn().await;
    let document: Value = app.client.request("rpc.discover", rpc_params![]).await.unwrap();

    let meta: Value =
        serde_json::from_str(include_str!("../fixtures/openrpc-meta-schema.json")).expect("the meta-schema parses");
    let validator = jsonschema::validator_for(&meta).expect("the meta-schema compiles");
    let problems: Vec<String> =
        validator.iter_errors(&document).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(problems.is_empty(), "not a valid OpenRPC document: {problems:#?}");

    let described: Vec<&str> =
        document["methods"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    let module = registered_module().await;
    let mut registered: Vec<&str> = module.method_names().collect();
    registered.sort();
    let mut listed = described.clone();
    listed.sort();
    assert_eq!(listed, registered, "rpc.discover describes exactly the registered methods");

    // The schemas come from the Rust types: spot-check one method end to end.
    let consume = document["methods"].as_array().unwrap().iter().find(|m| m["name"] == "code.consume").unwrap();
    let names: Vec<&str> = consume["params"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for field in ["code", "client_id", "redirect_uri", "code_verifier", "resource"] {
        assert!(names.contains(&field), "code.consume params include {field}: {names:?}");
    }
    let required: Vec<&str> = consume["params"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["required"] == true)
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(!required.contains(&"resource") && required.contains(&"code_verifier"), "{required:?}");
    assert!(consume["result"]["schema"]["properties"]["grant_id"].is_object());
    assert!(consume["errors"].as_array().unwrap().iter().any(|e| e["code"] == 1003));
}

// Every state-changing method takes an idempotency key, and rpc.discover says so (a portal
// reads it to know which calls it may retry); reads take none.
#[tokio::test]
async fn rpc_discover_lists_the_idempotency_key_on_exactly_the_state_changing_methods() {
    const CHANGING: &[&str] = &[
        "client.register",
        "client.update",
        "client.delete",
        "client.cache_document",
        "session.put",
        "session.update",
        "session.delete",
        "session.purge",
        "code.issue",
        "code.consume",
        "token.issue",
        "token.rotate",
        "token.revoke",
    ];
    let app = TestApp::spawn().await;
    let document: Value = app.client.request("rpc.discover", rpc_params![]).await.unwrap();
    for method in document["methods"].as_array().unwrap() {
        let name = method["name"].as_str().unwrap();
        let keyed =
            method["params"].as_array().is_some_and(|params| params.iter().any(|p| p["name"] == "idempotency_key"));
        assert_eq!(keyed, CHANGING.contains(&name), "{name}: idempotency_key listed = {keyed}");
    }
}
