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

/// Moves the app's manual clock forward to the next whole second.
fn to_whole_second(app: &TestApp) {
    let ms = i64::from(authstore::clock::Clock::now(&*app.clock).timestamp_subsec_millis());
    app.clock.advance(chrono::Duration::milliseconds((1000 - ms) % 1000));
}

/// SurrealDB keys a datetime index by its RFC 3339 text with as few fractional digits as are
/// exact, so a whole second (`…:10Z`) sorts after every `…:10.mmmZ`: a range scan up to
/// `…:10.500Z` misses it. A deadline on a whole second must still expire on time.
#[tokio::test]
async fn a_session_whose_deadline_falls_on_a_whole_second_expires_on_time() {
    let app = TestApp::spawn_with(crate::support::Options::live_expiry(backend())).await;
    app.register_client("app").await;
    to_whole_second(&app);
    app.client.put(SessionPut { ttl_secs: Some(10), ..put(Some("round"), "app") }.into()).await.unwrap();
    app.clock.advance(chrono::Duration::milliseconds(10_500));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let got = SessionApiClient::get(&app.client, SessionRef { id: "round".into() }.into()).await;
        if error_of(got) == (1001, "not_found".into()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the scheduler did not remove a session 500 ms past its deadline"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The other side of the same key order: read at a whole second, `expires_at > $now` must
/// still see a session that expires later in that second.
#[tokio::test]
async fn a_listing_on_a_whole_second_sees_the_sessions_that_expire_later_in_it() {
    let app = TestApp::spawn_on(backend()).await;
    app.register_client("app").await;
    to_whole_second(&app);
    app.clock.advance(chrono::Duration::milliseconds(500));
    app.client.put(SessionPut { ttl_secs: Some(10), ..put(Some("late"), "app") }.into()).await.unwrap();
    app.clock.advance(chrono::Duration::milliseconds(9_500));
    let listed = SessionApiClient::list(&app.client, SessionList::default().into()).await.unwrap();
    assert_eq!(listed.items.len(), 1, "a session 500 ms from its deadline is live");
    let stats = authstore::rpc::api::ServerApiClient::stats(&app.client).await.unwrap();
    assert_eq!(stats.sessions, 1);
}
