//! Retrying over a lost connection: a call retried with its idempotency key gets its first
//! answer back, applies nothing again and is never taken for a replay or a reuse.

use std::sync::Arc;

use authstore::rpc::api::{ClientApiClient, SessionApiClient, TokenApiClient};
use authstore::types::*;
use futures::SinkExt;
use jsonrpsee::core::client::{ClientT, Error as ClientError};
use jsonrpsee::core::params::ObjectParams;
use jsonrpsee::ws_client::WsClient;
use serde_json::{Value, json};
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::Message;

use super::backend;
use crate::support::{CHALLENGE, Options, REDIRECT, TestApp, VERIFIER, error_of, field_of};

/// Rounds of the two-caller races: the portal's retry overtaking its own first call.
const ROUNDS: usize = 30;

async fn call(client: &WsClient, method: &str, params: Value) -> Result<Value, ClientError> {
    let mut object = ObjectParams::new();
    for (name, value) in params.as_object().expect("params object") {
        object.insert(name, value).expect("param");
    }
    client.request(method, object).await
}

fn keyed(mut params: Value, key: &str) -> Value {
    params["idempotency_key"] = json!(key);
    params
}

/// A unique key per call, as a portal would make one.
fn new_key() -> String {
    authstore::secret::generate_id()
}

async fn app() -> TestApp {
    let app = TestApp::spawn_with(Options { backend: backend(), ..Options::default() }).await;
    app.register_client("app").await;
    app
}

fn session_params(id: &str) -> Value {
    json!({"id": id, "client_id": "app", "redirect_uri": REDIRECT, "state": "st", "code_challenge": CHALLENGE})
}

fn consume_params(code: &str) -> Value {
    json!({"code": code, "client_id": "app", "redirect_uri": REDIRECT, "code_verifier": VERIFIER})
}

async fn active_tokens(app: &TestApp, grant_id: &str) -> Vec<String> {
    let page =
        TokenApiClient::list(&app.client, TokenList { grant_id: Some(grant_id.into()), ..Default::default() }.into())
            .await
            .expect("token.list");
    page.items.into_iter().map(|t| t.token_id).collect()
}

/// Calls `method` twice with one key and checks the second answer is the first, secret
/// included; `after` then checks that the change was applied once.
async fn twice(app: &TestApp, method: &str, params: Value) -> Value {
    let params = keyed(params, &new_key());
    let first = call(&app.client, method, params.clone()).await.unwrap_or_else(|e| panic!("{method}: {e}"));
    let again = call(&app.client, method, params).await.unwrap_or_else(|e| panic!("{method} again: {e}"));
    assert_eq!(again, first, "{method}: a retry with the key gets the first answer");
    first
}

// Every state-changing method, each retried once with its key: the same answer (secrets too),
// and the state shows one application, not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_state_changing_method_answers_a_keyed_retry_with_its_first_answer() {
    let app = app().await;
    let c = &app.client;

    // client.register: with a generated id, a second application would be a second client.
    let before = ClientApiClient::list(c, ClientList::default().into()).await.unwrap().items.len();
    let registered = twice(
        &app,
        "client.register",
        json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_basic"}),
    )
    .await;
    let conf = registered["client_id"].as_str().unwrap().to_string();
    let secret = registered["client_secret"].as_str().unwrap().to_string();
    assert_eq!(ClientApiClient::list(c, ClientList::default().into()).await.unwrap().items.len(), before + 1);
    c.authenticate(ClientAuthenticate { client_id: conf.clone(), client_secret: secret.clone() }.into())
        .await
        .expect("the secret handed back twice is the one stored");

    // client.update with rotate_secret: a second application would rotate again.
    let updated = twice(
        &app,
        "client.update",
        json!({"client_id": conf, "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_basic", "rotate_secret": true}),
    )
    .await;
    let rotated = updated["client_secret"].as_str().unwrap().to_string();
    assert_ne!(rotated, secret);
    c.authenticate(ClientAuthenticate { client_id: conf.clone(), client_secret: rotated }.into())
        .await
        .expect("the rotated secret handed back twice is the one stored");

    // client.cache_document.
    let url = "https://mcp-client.example/client.json";
    twice(
        &app,
        "client.cache_document",
        json!({"client_id": url, "document": {"client_id": url, "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}}),
    )
    .await;

    // session.put without an id: a second application would be a second session.
    let put = twice(&app, "session.put", json!({"client_id": "app", "redirect_uri": REDIRECT})).await;
    let listed = SessionApiClient::list(c, SessionList::default().into()).await.unwrap().items;
    assert_eq!(listed.len(), 1, "one session, not two: {listed:?}");
    assert_eq!(listed[0].id, put["id"].as_str().unwrap());

    // session.update, session.delete.
    twice(&app, "session.update", json!({"id": put["id"], "user_id": "alice"})).await;
    let deleted = twice(&app, "session.delete", json!({"id": put["id"]})).await;
    assert_eq!(deleted["deleted"], true, "the retry reports the first call's deletion");

    // session.purge.
    call(c, "session.put", session_params("to-purge")).await.unwrap();
    let purged = twice(&app, "session.purge", json!({"client_id": "app"})).await;
    assert_eq!(purged["purged"], 1);

    // code.issue from a session: a second application would find the session consumed.
    call(c, "session.put", session_params("s")).await.unwrap();
    let issued = twice(&app, "code.issue", json!({"session_id": "s", "user_id": "alice"})).await;
    assert_eq!(issued["state"], "st");
    assert_eq!(issued["client_id"], "app");
    assert_eq!(issued["redirect_uri"], REDIRECT);

    // code.consume: a second application would be a replay, revoking the grant.
    let code = issued["code"].as_str().unwrap();
    let consumed = twice(&app, "code.consume", consume_params(code)).await;
    let grant_id = consumed["grant_id"].as_str().unwrap().to_string();

    // token.issue: a second application would supersede the first token.
    let first_token =
        twice(&app, "token.issue", json!({"client_id": "app", "user_id": "alice", "grant_id": grant_id})).await;
    assert_eq!(active_tokens(&app, &grant_id).await, vec![first_token["token_id"].as_str().unwrap().to_string()]);

    // token.rotate: a second application would be reuse, revoking the family.
    let rotated = twice(&app, "token.rotate", json!({"token": first_token["token"], "client_id": "app"})).await;
    assert_eq!(rotated["user_id"], "alice");
    assert_eq!(active_tokens(&app, &grant_id).await, vec![rotated["token_id"].as_str().unwrap().to_string()]);
    TokenApiClient::get(c, TokenRef { token: rotated["token"].as_str().unwrap().into() }.into())
        .await
        .expect("the token handed back twice is the active one");

    // token.revoke.
    let revoked = twice(&app, "token.revoke", json!({"grant_id": grant_id})).await;
    assert_eq!(revoked["revoked"], 1, "the retry reports the first call's count");

    // client.delete.
    let gone = twice(&app, "client.delete", json!({"client_id": conf})).await;
    assert_eq!(gone["deleted"], true);
}

// The same key with other params is a different request: refused, naming the key, and
// nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_presented_with_other_params_is_refused_and_changes_nothing() {
    let app = app().await;
    let key = new_key();
    call(&app.client, "session.put", session_params("s")).await.unwrap();
    let issued =
        call(&app.client, "code.issue", keyed(json!({"session_id": "s", "user_id": "alice"}), &key)).await.unwrap();
    let other = call(&app.client, "code.issue", keyed(json!({"session_id": "s", "user_id": "mallory"}), &key)).await;
    assert_eq!(field_of(other), "idempotency_key");
    let consumed = call(&app.client, "code.consume", keyed(consume_params(issued["code"].as_str().unwrap()), &key))
        .await
        .expect("a key names an operation per method: code.consume under the same key is its own");
    assert_eq!(consumed["user_id"], "alice");
}

#[tokio::test]
async fn keys_are_one_to_128_printable_ascii_characters() {
    let app = app().await;
    for bad in [json!(""), json!("k".repeat(129)), json!("tab\tkey"), json!("clé"), json!(7)] {
        let mut params = session_params("s");
        params["idempotency_key"] = bad.clone();
        let refused = call(&app.client, "session.put", params).await;
        assert_eq!(field_of(refused), "idempotency_key", "{bad}");
    }
    let read = call(&app.client, "session.get", json!({"id": "s", "idempotency_key": "k"})).await;
    assert_eq!(field_of(read), "idempotency_key", "a read takes no key");
    call(&app.client, "session.put", keyed(session_params("s"), &"k".repeat(128))).await.expect("128 is the limit");
}

/// The same call with the same key from each of `clients` at one instant: their answers.
async fn pair(clients: &[Arc<WsClient>], method: &'static str, params: Value, round: usize) -> Vec<Value> {
    let barrier = Arc::new(Barrier::new(clients.len()));
    let tasks: Vec<_> = clients
        .iter()
        .map(|client| {
            let (client, params, barrier) = (client.clone(), params.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                call(&client, method, params).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap().unwrap_or_else(|e| panic!("{method}, round {round}: {e}")));
    }
    answers
}

/// Two callers present one code with one key at the same instant, `rounds` times: both get the
/// grant, and the grant is not revoked. A second key is a replay, and still revokes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_retry_racing_its_first_consume_is_not_a_replay() {
    let app = app().await;
    let clients = [Arc::new(app.connect().await), Arc::new(app.connect().await)];
    for round in 0..ROUNDS {
        let code = app.issue_code("app", "alice").await.code;
        let answers = pair(&clients, "code.consume", keyed(consume_params(&code), &new_key()), round).await;
        assert_eq!(answers[0], answers[1], "round {round}: one answer for one operation");
        let grant_id = answers[0]["grant_id"].as_str().unwrap().to_string();
        let token = app.issue_token("app", "alice", Some(grant_id.clone())).await;
        assert_eq!(active_tokens(&app, &grant_id).await, vec![token.token_id], "round {round}: the grant is intact");
    }
    // Control: the same race without a key has one winner, and the loser's replay revokes.
    let code = app.issue_code("app", "alice").await.code;
    let first = call(&app.client, "code.consume", consume_params(&code)).await.unwrap();
    let replay = call(&app.client, "code.consume", consume_params(&code)).await;
    assert_eq!(error_of(replay), (1003, "consumed".into()));
    let grant_id = first["grant_id"].as_str().unwrap();
    let refused = TokenApiClient::issue(
        &app.client,
        TokenIssue {
            client_id: "app".into(),
            user_id: "alice".into(),
            grant_id: Some(grant_id.into()),
            ..Default::default()
        }
        .into(),
    )
    .await;
    assert_eq!(error_of(refused), (1003, "revoked".into()));
}

/// Two callers rotate one token with one key at the same instant, `rounds` times: both get the
/// same new token, it is the family's only active one, and nothing is revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_retry_racing_its_first_rotation_is_not_reuse() {
    let app = app().await;
    let clients = [Arc::new(app.connect().await), Arc::new(app.connect().await)];
    let mut token = app.issue_token("app", "alice", None).await;
    for round in 0..ROUNDS {
        let params = keyed(json!({"token": token.token, "client_id": "app"}), &new_key());
        let answers = pair(&clients, "token.rotate", params, round).await;
        assert_eq!(answers[0], answers[1], "round {round}: one answer for one rotation");
        let next: IssuedToken = serde_json::from_value(answers[0].clone()).unwrap();
        assert_eq!(active_tokens(&app, &token.grant_id).await, vec![next.token_id.clone()], "round {round}");
        token = next;
    }
}

/// A failure that changed state is recorded too: a code burned by a wrong verifier, retried
/// with the key, answers the same refusal instead of being taken for a replay that revokes.
#[tokio::test]
async fn a_keyed_retry_of_a_refusal_that_burned_the_code_revokes_nothing() {
    let app = app().await;
    for with_key in [true, false] {
        let issued = app.issue_code("app", "alice").await;
        let mut params = consume_params(&issued.code);
        params["code_verifier"] = json!("a".repeat(43));
        if with_key {
            params = keyed(params, &new_key());
        }
        let first = call(&app.client, "code.consume", params.clone()).await;
        assert_eq!(error_of(first), (1003, "pkce_mismatch".into()));
        let again = call(&app.client, "code.consume", params).await;
        let joined = TokenApiClient::issue(
            &app.client,
            TokenIssue {
                client_id: "app".into(),
                user_id: "alice".into(),
                grant_id: Some(issued.grant_id.clone()),
                ..Default::default()
            }
            .into(),
        )
        .await;
        if with_key {
            assert_eq!(error_of(again), (1003, "pkce_mismatch".into()), "the retry hears the first refusal");
            joined.expect("and the grant was not revoked as a replay");
        } else {
            // Control: without a key the retry is a replay, and the grant is revoked.
            assert_eq!(error_of(again), (1003, "consumed".into()));
            assert_eq!(error_of(joined), (1003, "revoked".into()));
        }
    }
}

/// The connection drops after the request left and before the answer came back: the retry on
/// a new connection, with the same key, completes the operation; nothing is revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_mid_call_is_completed_by_the_keyed_retry() {
    let app = app().await;
    for round in 0..10 {
        let issued = app.issue_code("app", "alice").await;
        let key = new_key();
        let request = json!({"jsonrpc": "2.0", "id": 1, "method": "code.consume", "params": keyed(consume_params(&issued.code), &key)});
        let (mut socket, _) = tokio_tungstenite::connect_async(app.ws_url()).await.expect("connect");
        socket.send(Message::text(request.to_string())).await.expect("send");
        // Hang up without reading the answer; after `round` ms, so the cut lands anywhere
        // between the request's arrival and its commit.
        tokio::time::sleep(std::time::Duration::from_millis(round)).await;
        drop(socket);
        let retried = call(&app.connect().await, "code.consume", keyed(consume_params(&issued.code), &key))
            .await
            .unwrap_or_else(|e| panic!("round {round}: the retry completes: {e}"));
        assert_eq!(retried["grant_id"], issued.grant_id.as_str());
        let token = app.issue_token("app", "alice", Some(issued.grant_id.clone())).await;
        let rotate = json!({"token": token.token, "client_id": "app"});
        let key = new_key();
        let (mut socket, _) = tokio_tungstenite::connect_async(app.ws_url()).await.expect("connect");
        let request =
            json!({"jsonrpc": "2.0", "id": 2, "method": "token.rotate", "params": keyed(rotate.clone(), &key)});
        socket.send(Message::text(request.to_string())).await.expect("send");
        tokio::time::sleep(std::time::Duration::from_millis(round)).await;
        drop(socket);
        let next = call(&app.connect().await, "token.rotate", keyed(rotate, &key))
            .await
            .unwrap_or_else(|e| panic!("round {round}: the rotation's retry completes: {e}"));
        let next_id = next["token_id"].as_str().unwrap().to_string();
        assert_eq!(active_tokens(&app, &issued.grant_id).await, vec![next_id], "round {round}: not taken for reuse");
    }
}
