//! Lifecycle events: committed with their change, sequenced, replayed and followed live.

use std::time::Duration;

use authstore::background::Timings;
use authstore::rpc::api::{SessionApiClient, TokenApiClient};
use authstore::types::*;
use jsonrpsee::core::client::Subscription;
use jsonrpsee::ws_client::WsClient;

use super::backend;
use crate::support::{CHALLENGE, Options, REDIRECT, TestApp, error_of, field_of};

fn session(id: &str, ttl_secs: Option<u64>) -> SessionPut {
    SessionPut {
        id: Some(id.into()),
        client_id: "app".into(),
        redirect_uri: REDIRECT.into(),
        code_challenge: Some(CHALLENGE.into()),
        user_id: Some("alice".into()),
        ttl_secs,
        ..Default::default()
    }
}

fn since(cursor: &str) -> Subscribe {
    Subscribe { since: Some(cursor.into()), ..Default::default() }
}

/// The next `n` notifications, failing after 30 s without one.
async fn take<T: serde::de::DeserializeOwned + std::fmt::Debug>(sub: &mut Subscription<T>, n: usize) -> Vec<T> {
    let mut items = Vec::with_capacity(n);
    while items.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .unwrap_or_else(|_| panic!("no event after {} of {n}", items.len()));
        items.push(next.expect("subscription open").expect("event decodes"));
    }
    items
}

async fn session_events(client: &WsClient, params: Subscribe) -> Subscription<SessionEvent> {
    SessionApiClient::subscribe_events(client, params.into()).await.expect("session.subscribe")
}

async fn token_events(client: &WsClient, params: Subscribe) -> Subscription<TokenEvent> {
    TokenApiClient::subscribe_events(client, params.into()).await.expect("token.subscribe")
}

#[tokio::test]
async fn every_change_writes_its_events_and_they_replay_in_commit_order() {
    let app = TestApp::spawn_on(backend()).await;
    app.register_client("app").await;
    let c = &app.client;
    c.put(session("s1", None).into()).await.unwrap();
    c.put(session("s2", None).into()).await.unwrap();
    SessionApiClient::delete(c, SessionRef { id: "s2".into() }.into()).await.unwrap();
    authstore::rpc::api::CodeApiClient::issue(
        c,
        CodeIssue { session_id: Some("s1".into()), ..Default::default() }.into(),
    )
    .await
    .unwrap();
    c.put(session("s3", None).into()).await.unwrap();
    c.purge(SessionPurge { user_id: Some("alice".into()), ..Default::default() }.into()).await.unwrap();

    let first = app.issue_token("app", "alice", None).await;
    c.rotate(TokenRotate { token: first.token.clone(), client_id: "app".into(), ..Default::default() }.into())
        .await
        .unwrap();
    let _ = c
        .rotate(TokenRotate { token: first.token.clone(), client_id: "app".into(), ..Default::default() }.into())
        .await;
    let bob = app.issue_token("app", "bob", None).await;
    c.revoke(TokenRevoke { user_id: Some("bob".into()), ..Default::default() }.into()).await.unwrap();

    let mut sessions = session_events(c, since("0")).await;
    let got: Vec<(String, String)> = take(&mut sessions, 3).await.into_iter().map(|e| (e.kind, e.session_id)).collect();
    let expected = [("deleted", "s2"), ("completed", "s1"), ("purged", "s3")];
    assert_eq!(got, expected.map(|(k, s)| (k.to_string(), s.to_string())));

    let mut tokens = token_events(c, since("0")).await;
    let got: Vec<(String, String, Option<String>)> =
        take(&mut tokens, 4).await.into_iter().map(|e| (e.kind, e.token_id, e.reason)).collect();
    assert_eq!(got[0], ("rotated".into(), first.token_id.clone(), None));
    assert_eq!(got[1], ("reuse_detected".into(), first.token_id.clone(), Some("reuse_detected".into())));
    assert_eq!((got[2].0.as_str(), got[2].2.as_deref()), ("revoked", Some("reuse_detected")), "the successor");
    assert_eq!(got[3], ("revoked".into(), bob.token_id, Some("requested".into())));
}

#[tokio::test]
async fn expiry_is_emitted_on_time_without_anyone_reading_the_record() {
    let app = TestApp::spawn_with(Options::live_expiry(backend())).await;
    app.register_client("app").await;
    let mut sessions =
        session_events(&app.client, Subscribe { kinds: Some(vec!["expired".into()]), ..Default::default() }).await;
    let mut tokens = token_events(&app.client, Subscribe::default()).await;
    app.client.put(session("brief", Some(5)).into()).await.unwrap();
    let token = authstore::rpc::api::TokenApiClient::issue(
        &app.client,
        TokenIssue { client_id: "app".into(), user_id: "alice".into(), ttl_secs: Some(5), ..Default::default() }.into(),
    )
    .await
    .unwrap();
    app.advance(5);

    let expired = take(&mut sessions, 1).await.remove(0);
    assert_eq!((expired.kind.as_str(), expired.session_id.as_str()), ("expired", "brief"));
    let expired = take(&mut tokens, 1).await.remove(0);
    assert_eq!((expired.kind.as_str(), expired.token_id.as_str()), ("expired", token.token_id.as_str()));
    // The scheduler removed the records in the same transaction.
    let gone = SessionApiClient::get(&app.client, SessionRef { id: "brief".into() }.into()).await;
    assert_eq!(error_of(gone), (1001, "not_found".into()));
}

// Disconnect mid-stream while events keep coming, resume from the last cursor, and compare
// what was received with the log: no gap, no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscription_resumed_from_its_last_cursor_misses_nothing_and_repeats_nothing() {
    let app = TestApp::spawn_on(backend()).await;
    app.register_client("app").await;
    const TOTAL: usize = 120;
    let writer = {
        let client = app.connect().await;
        tokio::spawn(async move {
            for i in 0..TOTAL {
                let id = format!("w{i:03}");
                client.put(session(&id, None).into()).await.unwrap();
                SessionApiClient::delete(&client, SessionRef { id }.into()).await.unwrap();
            }
        })
    };

    let first = app.connect().await;
    let mut sub = session_events(&first, since("0")).await;
    let mut received = take(&mut sub, 30).await;
    drop(sub);
    drop(first); // hang up mid-stream; the writer keeps going

    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = app.connect().await;
    let last = received.last().unwrap().cursor.clone();
    let mut resumed = session_events(&second, since(&last)).await;
    received.extend(take(&mut resumed, TOTAL - 30).await);
    writer.await.unwrap();

    let log = take(&mut session_events(&app.client, since("0")).await, TOTAL).await;
    assert_eq!(received, log, "resumed stream equals the log");
    let cursors: Vec<i64> = received.iter().map(|e| e.cursor.parse().unwrap()).collect();
    assert!(cursors.windows(2).all(|w| w[1] == w[0] + 1), "cursors are consecutive: {cursors:?}");
    let mut ids: Vec<&str> = received.iter().map(|e| e.session_id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), TOTAL);
}

#[tokio::test]
async fn bad_subscriptions_are_refused_and_old_cursors_have_expired() {
    let app = TestApp::spawn_with(Options {
        backend: backend(),
        timings: Timings {
            expiry_tick: Duration::from_secs(3600),
            retention: Duration::from_secs(60),
            prune_every: Duration::from_millis(50),
            ..Timings::default()
        },
        ..Options::default()
    })
    .await;
    app.register_client("app").await;
    let c = &app.client;
    let bad_kind = SessionApiClient::subscribe_events(
        c,
        Subscribe { kinds: Some(vec!["rotated".into()]), ..Default::default() }.into(),
    );
    assert_eq!(field_of(bad_kind.await), "kinds");
    assert_eq!(field_of(SessionApiClient::subscribe_events(c, since("abc").into()).await), "since");
    assert_eq!(field_of(SessionApiClient::subscribe_events(c, since("999999").into()).await), "since");

    for id in ["a", "b", "c"] {
        c.put(session(id, None).into()).await.unwrap();
        SessionApiClient::delete(c, SessionRef { id: id.into() }.into()).await.unwrap();
    }
    let all = take(&mut session_events(c, since("0")).await, 3).await;
    assert_eq!(all.iter().map(|e| e.cursor.as_str()).collect::<Vec<_>>(), vec!["1", "2", "3"]);

    app.advance(61); // past retention: the pruner drops all three
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let expired = loop {
        match SessionApiClient::subscribe_events(c, since("0").into()).await {
            Err(jsonrpsee::core::client::Error::Call(e)) => break e,
            Ok(_) if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("expected cursor_expired, got {other:?}"),
        }
    };
    assert_eq!(expired.code(), 1006);
    let data: serde_json::Value = serde_json::from_str(expired.data().unwrap().get()).unwrap();
    assert_eq!((data["reason"].as_str(), data["oldest"].as_str()), (Some("cursor_expired"), Some("3")));
    // The oldest cursor still works, and so does a live subscription.
    let mut from_oldest = session_events(c, since("3")).await;
    c.put(session("d", None).into()).await.unwrap();
    SessionApiClient::delete(c, SessionRef { id: "d".into() }.into()).await.unwrap();
    let next = take(&mut from_oldest, 1).await.remove(0);
    assert_eq!((next.cursor.as_str(), next.session_id.as_str()), ("4", "d"));
}

#[tokio::test]
async fn filters_select_by_kind_client_and_user_and_unsubscribe_ends_the_stream() {
    let app = TestApp::spawn_on(backend()).await;
    app.register_client("app").await;
    app.register_client("other").await;
    let c = &app.client;
    let mut only_bob = token_events(c, Subscribe { user_id: Some("bob".into()), ..Default::default() }).await;
    let mut only_other = token_events(
        c,
        Subscribe { client_id: Some("other".into()), kinds: Some(vec!["revoked".into()]), ..Default::default() },
    )
    .await;
    let alice = app.issue_token("app", "alice", None).await;
    let bob = app.issue_token("app", "bob", None).await;
    let other = app.issue_token("other", "carol", None).await;
    for t in [&alice, &bob, &other] {
        c.revoke(TokenRevoke { token: Some(t.token.clone()), ..Default::default() }.into()).await.unwrap();
    }
    assert_eq!(take(&mut only_bob, 1).await[0].token_id, bob.token_id);
    assert_eq!(take(&mut only_other, 1).await[0].token_id, other.token_id);
    only_bob.unsubscribe().await.expect("token.unsubscribe");
}
