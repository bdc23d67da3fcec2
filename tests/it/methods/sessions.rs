//! `session.*`: pending authorization sessions.

use authstore::rpc::api::SessionApiClient;
use authstore::types::*;
use serde_json::json;

use super::backend;
use crate::support::{CHALLENGE, REDIRECT, TestApp, error_of, field_of};

fn put(id: Option<&str>, client_id: &str) -> SessionPut {
    SessionPut {
        id: id.map(str::to_string),
        client_id: client_id.into(),
        redirect_uri: REDIRECT.into(),
        state: Some("xyz".into()),
        code_challenge: Some(CHALLENGE.into()),
        scope: Some("read".into()),
        data: Some(json!({"return_to": "/dashboard", "n": [1, 2, 3]})),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_session_round_trips_through_put_get_update_and_delete() {
    let app = TestApp::spawn_on(backend()).await;
    app.register_client("app").await;
    let c = &app.client;

    let created = c.put(put(Some("s-1"), "app").into()).await.unwrap();
    assert_eq!(created.id, "s-1");
    assert_eq!(created.code_challenge_method.as_deref(), Some("S256"));
    assert_eq!((created.expires_at - created.created_at).num_seconds(), 600, "default TTL is 600 s");

    let fetched = SessionApiClient::get(c, SessionRef { id: "s-1".into() }.into()).await.unwrap();
    assert_eq!(fetched, created);
    assert_eq!(fetched.data, Some(json!({"return_to": "/dashboard", "n": [1, 2, 3]})));

    app.advance(5);
    let updated = SessionApiClient::update(
        c,
        SessionUpdate { id: "s-1".into(), user_id: Some("alice".into()), ttl_secs: Some(60), ..Default::default() }
            .into(),
    )
    .await
    .unwrap();
    assert_eq!(updated.user_id.as_deref(), Some("alice"));
    assert_eq!(updated.scope.as_deref(), Some("read"), "fields not given stay as they were");
    assert_eq!((updated.expires_at - updated.updated_at).num_seconds(), 60);
    assert_eq!(updated.created_at, created.created_at);

    let deleted =
        SessionApiClient::delete(c, SessionDelete { id: "s-1".into(), idempotency_key: None }.into()).await.unwrap();
    assert!(deleted.deleted);
    let again =
        SessionApiClient::delete(c, SessionDelete { id: "s-1".into(), idempotency_key: None }.into()).await.unwrap();
    assert!(!again.deleted);
    let gone = SessionApiClient::get(c, SessionRef { id: "s-1".into() }.into()).await;
    assert_eq!(error_of(gone), (1001, "not_found".into()));
}

#[tokio::test]
async fn put_generates_an_id_and_upserts_by_id() {
    let app = TestApp::spawn_on(backend()).await;
    app.register_client("app").await;
    let generated = app.client.put(put(None, "app").into()).await.unwrap();
    assert!(generated.id.len() >= 22);
    let replaced = app
        .client
        .put(SessionPut { state: Some("second".into()), ..put(Some(&generated.id), "app") }.into())
        .await
        .unwrap();
    assert_eq!(replaced.id, generated.id);
    assert_eq!(replaced.state.as_deref(), Some("second"));
    let page = SessionApiClient::list(&app.client, SessionList::default().into()).await.unwrap();
    assert_eq!(page.items.len(), 1);
}

#[tokio::test]
async fn an_expired_session_is_not_found_even_before_any_purge() {
    let app = TestApp::spawn_on(backend()).await;
    app.register_client("app").await;
    app.client.put(SessionPut { ttl_secs: Some(30), ..put(Some("short"), "app") }.into()).await.unwrap();
    app.advance(29);
    assert!(SessionApiClient::get(&app.client, SessionRef { id: "short".into() }.into()).await.is_ok());
    app.advance(1);
    let expired = SessionApiClient::get(&app.client, SessionRef { id: "short".into() }.into()).await;
    assert_eq!(error_of(expired), (1001, "expired".into()));
    let update = SessionApiClient::update(
        &app.client,
        SessionUpdate { id: "short".into(), user_id: Some("u".into()), ..Default::default() }.into(),
    )
    .await;
    assert_eq!(error_of(update), (1001, "expired".into()));
    let listed = SessionApiClient::list(&app.client, SessionList::default().into()).await.unwrap();
    assert!(listed.items.is_empty(), "list shows live sessions only");
}

#[tokio::test]
async fn put_requires_a_registered_client_and_one_of_its_redirect_uris() {
    let app = TestApp::spawn_on(backend()).await;
    let unknown = app.client.put(put(Some("s"), "nobody").into()).await;
    assert_eq!(error_of(unknown), (1004, "unknown_client".into()));
    app.register_client("app").await;
    let other_uri = app
        .client
        .put(SessionPut { redirect_uri: "https://evil.example/cb".into(), ..put(Some("s"), "app") }.into())
        .await;
    assert_eq!(field_of(other_uri), "redirect_uri");
    // RFC 8252 §7.3: loopback redirect URIs match on any port.
    let other_port = app
        .client
        .put(SessionPut { redirect_uri: "http://127.0.0.1:54321/callback".into(), ..put(Some("s"), "app") }.into())
        .await;
    assert!(other_port.is_ok(), "{other_port:?}");
}

#[tokio::test]
async fn list_pages_through_every_live_session_exactly_once() {
    let app = TestApp::spawn_on(backend()).await;
    app.register_client("app").await;
    app.register_client("other").await;
    for i in 0..7 {
        app.client
            .put(SessionPut { user_id: Some("alice".into()), ..put(Some(&format!("s{i}")), "app") }.into())
            .await
            .unwrap();
    }
    app.client.put(put(Some("x"), "other").into()).await.unwrap();

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = SessionApiClient::list(
            &app.client,
            SessionList { client_id: Some("app".into()), cursor: cursor.clone(), limit: Some(3), ..Default::default() }
                .into(),
        )
        .await
        .unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.into_iter().map(|s| s.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, (0..7).map(|i| format!("s{i}")).collect::<Vec<_>>());
    let bad = SessionApiClient::list(
        &app.client,
        SessionList { cursor: Some("garbage!".into()), ..Default::default() }.into(),
    )
    .await;
    assert_eq!(field_of(bad), "cursor");
}

#[tokio::test]
async fn purge_removes_exactly_the_matching_sessions() {
    let app = TestApp::spawn_on(backend()).await;
    app.register_client("app").await;
    for i in 0..3 {
        app.client
            .put(SessionPut { ttl_secs: Some(10), ..put(Some(&format!("short{i}")), "app") }.into())
            .await
            .unwrap();
    }
    for i in 0..2 {
        app.client
            .put(SessionPut { user_id: Some("bob".into()), ..put(Some(&format!("bob{i}")), "app") }.into())
            .await
            .unwrap();
    }
    app.client.put(put(Some("keep"), "app").into()).await.unwrap();
    app.advance(11);

    let expired = app.client.purge(SessionPurge::default().into()).await.unwrap();
    assert_eq!(expired.purged, 3, "no filter: every expired session");
    let bobs =
        app.client.purge(SessionPurge { user_id: Some("bob".into()), ..Default::default() }.into()).await.unwrap();
    assert_eq!(bobs.purged, 2);
    let left = SessionApiClient::list(&app.client, SessionList::default().into()).await.unwrap();
    assert_eq!(left.items.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), vec!["keep"]);
}
