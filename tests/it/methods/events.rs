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
    SessionApiClient::delete(c, SessionDelete { id: "s2".into(), idempotency_key: None }.into()).await.unwrap();
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
                SessionApiClient::delete(&client, SessionDelete { id, idempotency_key: None }.into()).await.unwrap();
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
            expiry: false,
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
        SessionApiClient::delete(c, SessionDelete { id: id.into(), idempotency_key: None }.into()).await.unwrap();
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
    SessionApiClient::delete(c, SessionDelete { id: "d".into(), idempotency_key: None }.into()).await.unwrap();
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

// === Pruning while a subscriber reads: closed with cursor_expired, never a silent jump ===

/// An app that prunes events older than a minute every 50 ms, with small per-connection
/// buffers and a patient send timeout, so a subscriber that does not read holds its replay
/// still (partway through the first page) without being closed as slow.
async fn pruning_app() -> TestApp {
    let app = TestApp::spawn_with(Options {
        backend: backend(),
        timings: Timings {
            expiry: false,
            retention: Duration::from_secs(60),
            prune_every: Duration::from_millis(50),
            ..Timings::default()
        },
        subscriber_send_timeout: Duration::from_secs(60),
        connection_buffer: 16,
        socket_send_buffer: Some(8192),
        ..Options::default()
    })
    .await;
    app.register_client("app").await;
    app
}

/// `n` `purged` events in one purge, for sessions of `user`.
async fn purged_events(app: &TestApp, user: &str, n: usize) {
    for i in 0..n {
        let put = SessionPut { user_id: Some(user.into()), ..session(&format!("{user}-{i:04}"), None) };
        app.client.put(put.into()).await.unwrap();
    }
    let purged = app.client.purge(SessionPurge { user_id: Some(user.into()), ..Default::default() }.into()).await;
    assert_eq!(purged.unwrap().purged as usize, n);
}

/// Waits until the log holds exactly `n` events.
async fn retained(app: &TestApp, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let stats = authstore::rpc::api::ServerApiClient::stats(&app.client).await.unwrap();
        if stats.events_retained == n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{} events retained, waiting for {n}", stats.events_retained);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

type RawSocket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A `session.subscribe` from `since` on a raw socket with a tiny receive buffer that reads
/// nothing after the confirmation: the server's replay soon blocks on it.
async fn stalled_subscriber(app: &TestApp, since: &str) -> RawSocket {
    use futures::{SinkExt, StreamExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(app.addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(app.ws_url(), stream).await.unwrap();
    let subscribe =
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"session.subscribe","params":{{"since":"{since}"}}}}"#);
    ws.send(tokio_tungstenite::tungstenite::Message::text(subscribe)).await.unwrap();
    loop {
        if let tokio_tungstenite::tungstenite::Message::Text(text) = ws.next().await.unwrap().unwrap() {
            assert!(text.contains("\"result\""), "{text}");
            break ws;
        }
    }
}

/// Reads the subscription to its closing notice, checking as it goes that every cursor is
/// the previous one + 1 (starting after `since`). Returns the cursors and the notice.
async fn read_to_close(ws: &mut RawSocket, since: i64) -> (Vec<i64>, serde_json::Value) {
    use futures::StreamExt;
    let mut cursors = Vec::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap_or_else(|_| {
            panic!("no closing notice after cursor {:?} ({} delivered)", cursors.last(), cursors.len())
        });
        let tokio_tungstenite::tungstenite::Message::Text(text) = frame.expect("socket open").unwrap() else {
            continue;
        };
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        if let Some(error) = value["params"].get("error") {
            return (cursors, error.clone());
        }
        let cursor: i64 = value["params"]["result"]["cursor"].as_str().unwrap().parse().unwrap();
        let previous = cursors.last().copied().unwrap_or(since);
        assert_eq!(cursor, previous + 1, "a gap: cursor {cursor} delivered right after {previous}");
        cursors.push(cursor);
    }
}

// The subscriber is stalled inside its first replay page (cursors 1..=256) when the pruner
// drops 1..=300; the next page would start at 301.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pruning_between_replay_pages_closes_the_subscription_with_cursor_expired() {
    let app = pruning_app().await;
    purged_events(&app, "old", 300).await;
    retained(&app, 300).await; // sequenced (and stamped) before the clock moves
    app.advance(30);
    purged_events(&app, "new", 100).await;
    retained(&app, 400).await;

    let mut stalled = stalled_subscriber(&app, "0").await;
    tokio::time::sleep(Duration::from_millis(300)).await; // the replay blocks on the socket
    app.advance(31); // cursors 1..=300 are now past retention, 301..=400 are not
    retained(&app, 100).await;

    let (cursors, closing) = read_to_close(&mut stalled, 0).await;
    assert_eq!(closing["reason"], "cursor_expired", "{closing}");
    assert_eq!(closing["code"], 1006, "{closing}");
    let last = cursors.last().copied().unwrap_or(0);
    assert_eq!(closing["cursor"], last.to_string(), "the cursor reached: {closing}");
    assert!(last < 300, "the subscriber was stopped at the hole, not after it: {last}");
    assert_eq!(closing["oldest"], "300", "{closing}");

    // Resuming from `oldest` delivers the rest, from 301 on.
    let mut resumed = session_events(&app.client, since("300")).await;
    let rest = take(&mut resumed, 100).await;
    let rest: Vec<i64> = rest.iter().map(|e| e.cursor.parse().unwrap()).collect();
    assert_eq!(rest, (301..=400).collect::<Vec<_>>());
}

// Everything after the subscriber's first page is pruned and nothing new is written: the
// replay's last page is empty, and the handover to the live feed notices that the head is
// ahead of the cursor instead of waiting for the next event and jumping to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pruning_before_the_handover_to_live_closes_the_subscription_with_cursor_expired() {
    let app = pruning_app().await;
    purged_events(&app, "old", 300).await;
    retained(&app, 300).await;

    let mut stalled = stalled_subscriber(&app, "0").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.advance(61);
    retained(&app, 0).await;

    let (cursors, closing) = read_to_close(&mut stalled, 0).await;
    assert_eq!((closing["reason"].as_str(), closing["code"].as_i64()), (Some("cursor_expired"), Some(1006)));
    assert_eq!(closing["cursor"], cursors.last().copied().unwrap_or(0).to_string(), "{closing}");
    assert_eq!(closing["oldest"], "300", "{closing}");

    let refused = SessionApiClient::subscribe_events(&app.client, since("0").into()).await;
    assert_eq!(error_of(refused).0, 1006);
    let mut resumed = session_events(&app.client, since("300")).await;
    c_put_delete(&app, "late").await;
    assert_eq!(take(&mut resumed, 1).await[0].cursor, "301");
}

async fn c_put_delete(app: &TestApp, id: &str) {
    app.client.put(session(id, None).into()).await.unwrap();
    SessionApiClient::delete(&app.client, SessionDelete { id: id.into(), idempotency_key: None }.into()).await.unwrap();
}

// === Which event ends a session ===

// A session past its deadline has already ended by expiring: whoever removes it, its one
// event is `expired`. `deleted` and `purged` report the end of a live session.
#[tokio::test]
async fn removing_a_session_past_its_deadline_reports_expired_whoever_removes_it() {
    let app = TestApp::spawn_on(backend()).await;
    app.register_client("app").await;
    let c = &app.client;
    let put = |id: &str, user: &str, ttl: Option<u64>| SessionPut { user_id: Some(user.into()), ..session(id, ttl) };
    c.put(put("carol-old", "carol", Some(5)).into()).await.unwrap();
    c.put(put("carol-live", "carol", None).into()).await.unwrap();
    c.put(put("dave-old", "dave", Some(5)).into()).await.unwrap();
    c.put(put("erin-old", "erin", Some(5)).into()).await.unwrap();
    c.put(put("erin-live", "erin", None).into()).await.unwrap();
    app.advance(6); // the scheduler is idle: the three short sessions are expired, not swept

    let by_user = c.purge(SessionPurge { user_id: Some("carol".into()), ..Default::default() }.into()).await.unwrap();
    assert_eq!(by_user.purged, 2, "the count is every session removed");
    let deleted = SessionApiClient::delete(c, SessionDelete { id: "dave-old".into(), idempotency_key: None }.into())
        .await
        .unwrap();
    assert!(!deleted.deleted);
    let no_filter = c.purge(SessionPurge::default().into()).await.unwrap();
    assert_eq!(no_filter.purged, 1, "no filter: the expired one");
    SessionApiClient::delete(c, SessionDelete { id: "erin-live".into(), idempotency_key: None }.into()).await.unwrap();

    let events = take(&mut session_events(c, since("0")).await, 5).await;
    let mut got: Vec<(String, String)> = events.into_iter().map(|e| (e.session_id, e.kind)).collect();
    got.sort();
    let expected = [
        ("carol-live", "purged"),
        ("carol-old", "expired"),
        ("dave-old", "expired"),
        ("erin-live", "deleted"),
        ("erin-old", "expired"),
    ];
    assert_eq!(got, expected.map(|(s, k)| (s.to_string(), k.to_string())));
}
