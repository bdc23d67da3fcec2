//! Retries under idempotency keys, attacked from outside: the same key racing itself on every
//! method that mints or creates, retries after the world changed, answers that must read back
//! exactly as they were given.

use std::sync::Arc;

use authstore::domain::Policy;
use jsonrpsee::core::client::{ClientT, Error as ClientError};
use jsonrpsee::core::params::ObjectParams;
use jsonrpsee::ws_client::WsClient;
use serde_json::{Value, json};
use tokio::sync::Barrier;

use crate::support::{CHALLENGE, Options, REDIRECT, TestApp, VERIFIER, field_of};

const ROUNDS: usize = 40;

async fn call(client: &WsClient, method: &str, params: Value) -> Result<Value, ClientError> {
    let mut p = ObjectParams::new();
    for (name, value) in params.as_object().expect("params object") {
        p.insert(name, value).expect("param");
    }
    client.request(method, p).await
}

fn key() -> String {
    authstore::secret::generate_id()
}

/// Two connections send `method` with the same params (and key) at the same instant, `ROUNDS`
/// times; every answer of a round, and a later retry, must be the first call's answer.
async fn same_key_race(app: &TestApp, method: &'static str, params: impl AsyncFnMut(usize) -> Value) {
    same_key_race_on(app, app, method, params).await;
}

/// [`same_key_race`] with one caller on each of two instances (which may be the same).
async fn same_key_race_on(
    app: &TestApp,
    other: &TestApp,
    method: &'static str,
    mut params: impl AsyncFnMut(usize) -> Value,
) {
    let clients = [Arc::new(app.connect().await), Arc::new(other.connect().await)];
    for round in 0..ROUNDS {
        let mut p = params(round).await;
        p["idempotency_key"] = json!(key());
        let barrier = Arc::new(Barrier::new(clients.len()));
        let tasks: Vec<_> = clients
            .iter()
            .map(|client| {
                let (client, barrier, p) = (client.clone(), barrier.clone(), p.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    call(&client, method, p).await.map_err(|e| e.to_string())
                })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.expect("task"));
        }
        let again = call(&app.client, method, p.clone()).await.map_err(|e| e.to_string());
        for answer in &answers {
            assert!(answer.is_ok(), "{method} round {round}: a caller with the same key was refused: {answers:?}");
        }
        assert_eq!(answers[0], answers[1], "{method} round {round}: two answers under one key");
        assert_eq!(again, answers[0], "{method} round {round}: the retry answered otherwise");
    }
}

fn public_client(client_id: &str) -> Value {
    json!({
        "client_id": client_id,
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
    })
}

async fn issue_token(app: &TestApp) -> String {
    let issued = call(&app.client, "token.issue", json!({"client_id": "app", "user_id": "u"})).await.unwrap();
    issued["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn same_key_racing_code_issue_gets_the_first_answer() {
    let app = TestApp::spawn().await;
    call(&app.client, "client.register", public_client("app")).await.unwrap();
    same_key_race(
        &app,
        "code.issue",
        async |_| json!({"client_id": "app", "user_id": "u", "redirect_uri": REDIRECT, "code_challenge": CHALLENGE}),
    )
    .await;
}

#[tokio::test]
async fn same_key_racing_token_issue_gets_the_first_answer() {
    let app = TestApp::spawn().await;
    call(&app.client, "client.register", public_client("app")).await.unwrap();
    same_key_race(&app, "token.issue", async |_| json!({"client_id": "app", "user_id": "u"})).await;
}

#[tokio::test]
async fn same_key_racing_client_register_with_a_chosen_id_gets_the_first_answer() {
    let app = TestApp::spawn().await;
    same_key_race(&app, "client.register", async |round| {
        json!({
            "client_id": format!("chosen-{round}"),
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "client_secret_basic",
        })
    })
    .await;
}

#[tokio::test]
async fn same_key_racing_token_rotate_in_grace_mode_gets_the_first_answer() {
    let policy = Policy { rotation_grace_secs: 30, ..Policy::default() };
    let app = TestApp::spawn_with(Options { policy, ..Options::default() }).await;
    call(&app.client, "client.register", public_client("app")).await.unwrap();
    same_key_race(&app, "token.rotate", async |_| json!({"token": issue_token(&app).await, "client_id": "app"})).await;
}

/// The first `session.put` was recorded; the client's registration changed afterwards. The
/// retry must still get the first answer (the contract: "returns the first call's answer").
#[tokio::test]
async fn keyed_session_put_retry_answers_after_the_client_changed() {
    let app = TestApp::spawn().await;
    let other = "http://127.0.0.1:9001/cb";
    let mut client = public_client("app");
    client["redirect_uris"] = json!([REDIRECT, other]);
    call(&app.client, "client.register", client).await.unwrap();
    let put = json!({"client_id": "app", "redirect_uri": other, "idempotency_key": key()});
    let first = call(&app.client, "session.put", put.clone()).await.unwrap();

    call(&app.client, "client.update", public_client("app")).await.unwrap();
    let retry = call(&app.client, "session.put", put.clone()).await;
    assert_eq!(retry.map_err(|e| e.to_string()), Ok(first.clone()), "retry after client.update");

    call(&app.client, "client.delete", json!({"client_id": "app"})).await.unwrap();
    let retry = call(&app.client, "session.put", put).await;
    assert_eq!(retry.map_err(|e| e.to_string()), Ok(first), "retry after client.delete");
}

/// A recorded `code.consume` answer reads back exactly as it was first given, whatever JSON
/// the code's `data` holds.
#[tokio::test]
async fn keyed_code_consume_retry_hands_back_data_unchanged() {
    let app = TestApp::spawn().await;
    call(&app.client, "client.register", public_client("app")).await.unwrap();
    for data in [json!({"n": u64::MAX}), json!({"big": [u64::MAX, 1, -1]}), json!({"f": 1.5, "s": "x"})] {
        let issued = call(
            &app.client,
            "code.issue",
            json!({"client_id": "app", "user_id": "u", "redirect_uri": REDIRECT, "code_challenge": CHALLENGE,
                   "data": data}),
        )
        .await
        .unwrap();
        let consume = json!({"code": issued["code"], "client_id": "app", "redirect_uri": REDIRECT,
                             "code_verifier": VERIFIER, "idempotency_key": key()});
        let first = call(&app.client, "code.consume", consume.clone()).await.unwrap();
        assert_eq!(first["data"], data);
        let retry = call(&app.client, "code.consume", consume).await.unwrap();
        assert_eq!(retry, first, "the retry's answer differs from the first");
    }
}

/// A keyed `token.revoke` by token, retried once the token has expired and been removed,
/// still answers what the first call answered.
#[tokio::test]
async fn keyed_token_revoke_retry_answers_after_the_token_is_gone() {
    let app = TestApp::spawn_with(Options::live_expiry(crate::support::Backend::Memory)).await;
    call(&app.client, "client.register", public_client("app")).await.unwrap();
    let issued =
        call(&app.client, "token.issue", json!({"client_id": "app", "user_id": "u", "ttl_secs": 60})).await.unwrap();
    let token = issued["token"].as_str().unwrap().to_string();
    let revoke = json!({"token": token, "idempotency_key": key()});
    let first = call(&app.client, "token.revoke", revoke.clone()).await.unwrap();
    assert_eq!(first, json!({"revoked": 1}));

    app.advance(120);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match crate::support::error_of(call(&app.client, "token.get", json!({"token": token})).await) {
            (1001, _) => break,
            other => assert!(std::time::Instant::now() < deadline, "token still stored: {other:?}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let retry = call(&app.client, "token.revoke", revoke).await.unwrap();
    assert_eq!(retry, first, "the retry's answer differs from the first");
}

/// Two instances on one SurrealDB server: a portal's retry reaches the other instance while
/// its first call is still running there.
#[tokio::test]
async fn same_key_racing_on_two_instances_gets_the_first_answer() {
    let backend = crate::support::Backend::remote();
    let a = TestApp::spawn_on(backend.clone()).await;
    let b = TestApp::spawn_on(backend).await;
    call(&a.client, "client.register", public_client("app")).await.unwrap();
    same_key_race_on(
        &a,
        &b,
        "code.issue",
        async |_| json!({"client_id": "app", "user_id": "u", "redirect_uri": REDIRECT, "code_challenge": CHALLENGE}),
    )
    .await;
    same_key_race_on(&a, &b, "token.issue", async |_| json!({"client_id": "app", "user_id": "u"})).await;
    same_key_race_on(&a, &b, "token.rotate", async |_| json!({"token": issue_token(&a).await, "client_id": "app"}))
        .await;
    same_key_race_on(&a, &b, "code.consume", async |_| {
        let issued = call(
            &a.client,
            "code.issue",
            json!({"client_id": "app", "user_id": "u", "redirect_uri": REDIRECT, "code_challenge": CHALLENGE}),
        )
        .await
        .unwrap();
        json!({"code": issued["code"], "client_id": "app", "redirect_uri": REDIRECT, "code_verifier": VERIFIER})
    })
    .await;
    same_key_race_on(&a, &b, "session.put", async |_| json!({"client_id": "app", "redirect_uri": REDIRECT})).await;
}

const IDEMPOTENCY_SECRET: &str = "configured-idempotency-secret-0123456789";

fn with_configured_secret(config: &mut authstore::config::Config) {
    config.idempotency_secret = Some(authstore::config::IdempotencySecret(IDEMPOTENCY_SECRET.into()));
}

/// The at-rest rule: a copy of the database alone never yields a plaintext secret. A key is
/// any 1 to 128 printable characters, so a portal may well send a counter. With the
/// idempotency secret configured (kept out of the database), a copy plus a guessed key yields
/// nothing; without it (the server secret kept in the database) the same attack succeeds,
/// which is why the start warns and the docs say to configure it.
#[tokio::test]
async fn a_database_copy_alone_does_not_yield_a_secret_minted_under_a_short_key() {
    for configured in [true, false] {
        let recovered = copy_and_guess(configured).await;
        if configured {
            assert_eq!(recovered, None, "a refresh token was recovered from the database alone");
        } else {
            assert!(recovered.is_some(), "control: the server secret in the database yields the token");
        }
    }
}

/// Issues a token under the key "417", then searches a copy of the database for it.
async fn copy_and_guess(configured: bool) -> Option<String> {
    let backend = crate::support::Backend::remote();
    let crate::support::Backend::Remote { database, .. } = backend.clone() else { unreachable!() };
    let options =
        Options { backend, tweak: if configured { with_configured_secret } else { |_| {} }, ..Default::default() };
    let app = TestApp::spawn_with(options).await;
    call(&app.client, "client.register", public_client("app")).await.unwrap();
    call(&app.client, "token.issue", json!({"client_id": "app", "user_id": "u", "idempotency_key": "417"}))
        .await
        .unwrap();

    // What a copy of the database holds.
    let server = crate::remote::server();
    let db = surrealdb::engine::any::connect(server.url.as_str()).await.unwrap();
    db.signin(surrealdb::opt::auth::Root { username: server.user.clone(), password: server.pass.clone() })
        .await
        .unwrap();
    db.use_ns("authstore_test").use_db(database).await.unwrap();
    let mut found = db
        .query("SELECT VALUE secret FROM ONLY meta:idempotency; SELECT VALUE record::id(id) FROM token")
        .await
        .unwrap();
    let server_secret: Option<String> = found.take(0).unwrap();
    let hashes: Vec<String> = found.take(1).unwrap();

    server_secret.and_then(|server_secret| {
        (0..10_000).map(|n| n.to_string()).find_map(|key| {
            let candidate = authstore::secret::Mint::keyed(server_secret.as_bytes(), "token.issue", &key).secret();
            hashes.contains(&authstore::secret::digest(&candidate)).then_some(candidate)
        })
    })
}

/// An answer minted under one idempotency secret, retried on an instance that has another
/// (the secret was changed, or instances disagree): refused, naming the key, rather than
/// answered with a secret minted again under the wrong one, which would match nothing.
#[tokio::test]
async fn a_retry_under_another_idempotency_secret_is_refused_not_answered_wrongly() {
    let backend = crate::support::Backend::remote();
    let before =
        TestApp::spawn_with(Options { backend: backend.clone(), tweak: with_configured_secret, ..Default::default() })
            .await;
    let after = TestApp::spawn_on(backend).await;
    call(&before.client, "client.register", public_client("app")).await.unwrap();
    let issue = json!({"client_id": "app", "user_id": "u", "idempotency_key": key()});
    let first = call(&before.client, "token.issue", issue.clone()).await.unwrap();
    let retried = call(&after.client, "token.issue", issue).await;
    assert_eq!(field_of(retried), "idempotency_key");
    call(&after.client, "token.get", json!({"token": first["token"]})).await.expect("the first token is untouched");
}

/// Two instances started at the same moment against a fresh database must agree on the
/// server secret, or a retry reaching the other instance hands back a secret that matches
/// nothing.
#[tokio::test]
async fn instances_started_together_derive_the_same_keyed_secret() {
    for round in 0..3 {
        let backend = crate::support::Backend::remote();
        let (a, b) = tokio::join!(TestApp::spawn_on(backend.clone()), TestApp::spawn_on(backend));
        call(&a.client, "client.register", public_client("app")).await.unwrap();
        let issue = json!({"client_id": "app", "user_id": "u", "idempotency_key": key()});
        let first = call(&a.client, "token.issue", issue.clone()).await.unwrap();
        let retry = call(&b.client, "token.issue", issue).await.unwrap();
        assert_eq!(retry, first, "round {round}: the other instance answered another token");
        let got = call(&b.client, "token.get", json!({"token": retry["token"]})).await;
        assert!(got.is_ok(), "round {round}: the retried token is unknown: {got:?}");
    }
}
