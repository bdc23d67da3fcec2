//! `code.*`: single-use authorization codes with PKCE.

use authstore::domain::Policy;
use authstore::rpc::api::{CodeApiClient, SessionApiClient, TokenApiClient};
use authstore::types::*;
use serde_json::json;

use super::backend;
use crate::support::{CHALLENGE, Options, REDIRECT, TestApp, VERIFIER, error_of, field_of};

#[tokio::test]
async fn a_code_redeems_once_with_its_bindings() {
    let app = TestApp::spawn_on(backend()).await;
    app.register_client("app").await;
    let issued = app.issue_code("app", "alice").await;
    assert_eq!(issued.code.len(), 43, "256 bits, base64url");

    let consumed = app
        .client
        .consume(
            CodeConsume {
                resource: Some("https://mcp.example/".into()),
                ..TestApp::consume_params(&issued.code, "app")
            }
            .into(),
        )
        .await
        .unwrap();
    assert_eq!(consumed.grant_id, issued.grant_id);
    assert_eq!(consumed.user_id, "alice");
    assert_eq!(consumed.scope.as_deref(), Some("read write"));
    assert_eq!(consumed.resource.as_deref(), Some("https://mcp.example/"));
    assert_eq!(consumed.redirect_uri, REDIRECT);

    let again = app.client.consume(TestApp::consume_params(&issued.code, "app").into()).await;
    assert_eq!(error_of(again), (1003, "consumed".into()));
}

#[tokio::test]
async fn every_failed_attempt_burns_the_code() {
    let app = TestApp::spawn_on(backend()).await;
    app.register_client("app").await;
    app.register_client("other").await;
    let ok = || TestApp::consume_params("", "app");
    let cases: Vec<(CodeConsume, &str)> = vec![
        (CodeConsume { client_id: "other".into(), ..ok() }, "client_mismatch"),
        (CodeConsume { redirect_uri: "http://127.0.0.1:9000/elsewhere".into(), ..ok() }, "redirect_uri_mismatch"),
        (CodeConsume { resource: Some("https://other.example/".into()), ..ok() }, "resource_mismatch"),
        (CodeConsume { code_verifier: VERIFIER.replace('d', "e"), ..ok() }, "pkce_mismatch"),
    ];
    for (attempt, reason) in cases {
        let issued = app.issue_code("app", "alice").await;
        let failed = app.client.consume(CodeConsume { code: issued.code.clone(), ..attempt }.into()).await;
        assert_eq!(error_of(failed), (1003, reason.to_string()));
        // The right verifier afterwards is too late: the failed attempt burned the code.
        let retry = app.client.consume(TestApp::consume_params(&issued.code, "app").into()).await;
        assert_eq!(error_of(retry), (1003, "consumed".into()), "after {reason}");
    }
}

#[tokio::test]
async fn a_code_expires_at_its_deadline() {
    let app = TestApp::spawn_on(backend()).await;
    app.register_client("app").await;
    let issued = app.issue_code("app", "alice").await;
    app.advance(60);
    let late = app.client.consume(TestApp::consume_params(&issued.code, "app").into()).await;
    assert_eq!(error_of(late), (1003, "expired".into()));
    let unknown = app.client.consume(TestApp::consume_params("never-issued", "app").into()).await;
    assert_eq!(error_of(unknown), (1001, "not_found".into()));
}

// RFC 6749 §4.1.2: "If an authorization code is used more than once, the authorization server
// MUST deny the request and SHOULD revoke (when possible) all tokens previously issued based on
// that authorization code."
#[tokio::test]
async fn replaying_a_code_revokes_every_token_of_its_grant() {
    let app = TestApp::spawn_on(backend()).await;
    app.register_client("app").await;
    let issued = app.issue_code("app", "alice").await;
    let consumed = app.client.consume(TestApp::consume_params(&issued.code, "app").into()).await.unwrap();
    let token = app.issue_token("app", "alice", Some(consumed.grant_id.clone())).await;
    let rotated = app
        .client
        .rotate(TokenRotate { token: token.token.clone(), client_id: "app".into(), ..Default::default() }.into())
        .await
        .unwrap();

    let replay = app.client.consume(TestApp::consume_params(&issued.code, "app").into()).await;
    assert_eq!(error_of(replay), (1003, "consumed".into()));
    let after = TokenApiClient::get(&app.client, TokenRef { token: rotated.token.clone() }.into()).await;
    assert_eq!(error_of(after), (1003, "revoked".into()));
    let rejoin = TokenApiClient::issue(
        &app.client,
        TokenIssue {
            client_id: "app".into(),
            user_id: "alice".into(),
            grant_id: Some(consumed.grant_id),
            ..Default::default()
        }
        .into(),
    )
    .await;
    assert_eq!(error_of(rejoin), (1003, "revoked".into()), "a revoked grant mints nothing more");
}

#[tokio::test]
async fn a_late_replay_is_still_recognised_after_the_code_would_have_expired() {
    let app = TestApp::spawn_with(Options::live_expiry(backend())).await;
    app.register_client("app").await;
    let issued = app.issue_code("app", "alice").await;
    let consumed = app.client.consume(TestApp::consume_params(&issued.code, "app").into()).await.unwrap();
    let token = app.issue_token("app", "alice", Some(consumed.grant_id)).await;
    app.advance(600); // ten minutes: long past the code's 60 s, inside the replay window
    tokio::time::sleep(std::time::Duration::from_millis(300)).await; // the scheduler runs meanwhile
    let replay = app.client.consume(TestApp::consume_params(&issued.code, "app").into()).await;
    assert_eq!(error_of(replay), (1003, "consumed".into()));
    let revoked = TokenApiClient::get(&app.client, TokenRef { token: token.token }.into()).await;
    assert_eq!(error_of(revoked), (1003, "revoked".into()));
}

#[tokio::test]
async fn issuing_from_a_session_consumes_it_and_inherits_its_fields() {
    let app = TestApp::spawn_on(backend()).await;
    app.register_client("app").await;
    app.client
        .put(
            SessionPut {
                id: Some("pending".into()),
                client_id: "app".into(),
                redirect_uri: REDIRECT.into(),
                code_challenge: Some(CHALLENGE.into()),
                scope: Some("read".into()),
                resource: Some("https://mcp.example/".into()),
                user_id: Some("alice".into()),
                data: Some(json!({"tenant": 7})),
                ..Default::default()
            }
            .into(),
        )
        .await
        .unwrap();
    let issued = CodeApiClient::issue(
        &app.client,
        CodeIssue { session_id: Some("pending".into()), ..Default::default() }.into(),
    )
    .await
    .unwrap();
    let gone = SessionApiClient::get(&app.client, SessionRef { id: "pending".into() }.into()).await;
    assert_eq!(error_of(gone), (1001, "not_found".into()), "the session is consumed with the code");
    let second = CodeApiClient::issue(
        &app.client,
        CodeIssue { session_id: Some("pending".into()), ..Default::default() }.into(),
    )
    .await;
    assert_eq!(error_of(second), (1001, "not_found".into()));

    let consumed = app.client.consume(TestApp::consume_params(&issued.code, "app").into()).await.unwrap();
    assert_eq!(consumed.user_id, "alice");
    assert_eq!(consumed.scope.as_deref(), Some("read"));
    assert_eq!(consumed.resource.as_deref(), Some("https://mcp.example/"));
    assert_eq!(consumed.data, Some(json!({"tenant": 7})));
}

#[tokio::test]
async fn pkce_is_mandatory_and_s256_only_unless_plain_is_enabled() {
    let app = TestApp::spawn_on(backend()).await;
    app.register_client("app").await;
    let base = || CodeIssue {
        client_id: Some("app".into()),
        user_id: Some("alice".into()),
        redirect_uri: Some(REDIRECT.into()),
        code_challenge: Some(CHALLENGE.into()),
        ..Default::default()
    };
    let missing = CodeApiClient::issue(&app.client, CodeIssue { code_challenge: None, ..base() }.into()).await;
    assert_eq!(field_of(missing), "code_challenge");
    let plain =
        CodeApiClient::issue(&app.client, CodeIssue { code_challenge_method: Some("plain".into()), ..base() }.into())
            .await;
    assert_eq!(field_of(plain), "code_challenge_method");
    let too_long = CodeApiClient::issue(&app.client, CodeIssue { ttl_secs: Some(601), ..base() }.into()).await;
    assert_eq!(field_of(too_long), "ttl_secs");

    let lenient = TestApp::spawn_with(Options {
        policy: Policy { allow_plain_pkce: true, ..Policy::default() },
        backend: backend(),
        ..Options::default()
    })
    .await;
    lenient.register_client("app").await;
    let issued = CodeApiClient::issue(
        &lenient.client,
        CodeIssue { code_challenge: Some(VERIFIER.into()), code_challenge_method: Some("plain".into()), ..base() }
            .into(),
    )
    .await
    .unwrap();
    lenient.client.consume(TestApp::consume_params(&issued.code, "app").into()).await.unwrap();
}
