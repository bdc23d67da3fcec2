//! `server.stats`: counts read from COUNT indexes, less what is past its deadline and not yet
//! removed. They must equal what is live, through every kind of change.

use authstore::rpc::api::{CodeApiClient, ServerApiClient, SessionApiClient, TokenApiClient};
use authstore::types::*;

use super::backend;
use crate::support::{REDIRECT, TestApp};

/// (clients, sessions, codes, tokens) as `server.stats` counts them.
async fn counts(app: &TestApp) -> (u64, u64, u64, u64) {
    let s = ServerApiClient::stats(&app.client).await.unwrap();
    (s.clients, s.sessions, s.codes, s.tokens)
}

// The test harness runs no expiry scheduler: records past their deadline stay stored, and
// must not be counted.
#[tokio::test]
async fn stats_count_what_is_live_through_every_change_and_past_every_deadline() {
    let app = TestApp::spawn_on(backend()).await;
    assert_eq!(counts(&app).await, (0, 0, 0, 0));
    app.register_client("app").await;
    app.register_client("other").await;
    let put = |id: &str, ttl: u64| SessionPut {
        id: Some(id.into()),
        client_id: "app".into(),
        redirect_uri: REDIRECT.into(),
        ttl_secs: Some(ttl),
        ..Default::default()
    };
    for (id, ttl) in [("ten", 10), ("twenty", 20), ("thirty", 30)] {
        SessionApiClient::put(&app.client, put(id, ttl).into()).await.unwrap();
    }
    // Putting a session again replaces it.
    SessionApiClient::put(&app.client, put("thirty", 30).into()).await.unwrap();
    let consumed = app.issue_code("app", "alice").await;
    app.issue_code("app", "bob").await;
    CodeApiClient::consume(&app.client, TestApp::consume_params(&consumed.code, "app").into()).await.unwrap();
    let rotated = app.issue_token("app", "alice", None).await;
    let revoked = app.issue_token("other", "bob", None).await;
    app.issue_token("other", "carol", None).await;
    let rotate = TokenRotate { token: rotated.token.clone(), client_id: "app".into(), ..Default::default() };
    TokenApiClient::rotate(&app.client, rotate.into()).await.unwrap();
    let revoke = TokenRevoke { token: Some(revoked.token.clone()), ..Default::default() };
    TokenApiClient::revoke(&app.client, revoke.into()).await.unwrap();
    SessionApiClient::delete(&app.client, SessionDelete { id: "twenty".into(), idempotency_key: None }.into())
        .await
        .unwrap();
    // Tokens: the rotated one's successor and carol's; codes: bob's.
    assert_eq!(counts(&app).await, (2, 2, 1, 2));

    app.advance(15);
    assert_eq!(counts(&app).await, (2, 1, 1, 2), "a session past its deadline is not counted");
    app.advance(60);
    assert_eq!(counts(&app).await, (2, 0, 0, 2), "nor a code past its deadline");
    app.advance(31 * 86_400);
    assert_eq!(counts(&app).await, (2, 0, 0, 0), "nor a token past its deadline");
}
