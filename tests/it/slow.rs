//! A subscriber that stops reading never slows the writers or other subscribers: it is closed
//! with a reason and the cursor to resume from, and resuming from there misses nothing.

use std::time::Duration;

use authstore::rpc::api::SessionApiClient;
use authstore::types::*;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Options, REDIRECT, TestApp};

const ROUNDS: usize = 10;
const PER_ROUND: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_subscriber_is_closed_and_resumes_while_writers_and_others_carry_on() {
    let app = TestApp::spawn_with(Options {
        subscriber_lag_limit: 64,
        subscriber_send_timeout: Duration::from_millis(300),
        connection_buffer: 16,
        socket_send_buffer: Some(8192),
        ..Options::default()
    })
    .await;
    app.register_client("app").await;

    // The stalled subscriber: a raw socket with a tiny receive buffer that stops reading
    // right after its subscription is confirmed.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(app.addr).await.unwrap();
    let (mut stalled, _) = tokio_tungstenite::client_async(app.ws_url(), stream).await.unwrap();
    let subscribe = r#"{"jsonrpc":"2.0","id":1,"method":"session.subscribe","params":{}}"#;
    stalled.send(Message::text(subscribe)).await.unwrap();
    let confirmed = loop {
        if let Message::Text(text) = stalled.next().await.unwrap().unwrap() {
            break text;
        }
    };
    assert!(confirmed.contains("\"result\""), "{confirmed}");

    // A healthy subscriber on another connection.
    let healthy = app.connect().await;
    let mut follower = SessionApiClient::subscribe_events(&healthy, Subscribe::default().into()).await.unwrap();
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < ROUNDS * PER_ROUND {
            match tokio::time::timeout(Duration::from_secs(60), follower.next()).await {
                Ok(Some(Ok(event))) => seen.push(event),
                other => panic!("healthy subscriber stopped after {}: {other:?}", seen.len()),
            }
        }
        seen
    });

    // The writers: every round stores sessions and purges them, one event per session.
    let writer = app.connect().await;
    let started = std::time::Instant::now();
    for round in 0..ROUNDS {
        for i in 0..PER_ROUND {
            let put = SessionPut {
                id: Some(format!("r{round:02}-{i:03}")),
                client_id: "app".into(),
                redirect_uri: REDIRECT.into(),
                user_id: Some(format!("round-{round}")),
                ..Default::default()
            };
            writer.put(put.into()).await.unwrap();
        }
        let purged = writer
            .purge(SessionPurge { user_id: Some(format!("round-{round}")), ..Default::default() }.into())
            .await
            .unwrap();
        assert_eq!(purged.purged as usize, PER_ROUND);
    }
    let writing = started.elapsed();
    let seen = reader.await.unwrap();
    assert_eq!(seen.len(), ROUNDS * PER_ROUND, "the healthy subscriber got every event");
    eprintln!("slow consumer: {} events written in {writing:?} while one subscriber stalled", seen.len());

    // Now the stalled subscriber reads: what it was sent, then the closing notice.
    let mut delivered = Vec::new();
    let closing = loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), stalled.next())
            .await
            .expect("the closing notice arrives")
            .expect("socket open")
            .unwrap();
        let Message::Text(text) = frame else { continue };
        let value: Value = serde_json::from_str(&text).unwrap();
        if let Some(error) = value["params"].get("error") {
            break error.clone();
        }
        delivered.push(value["params"]["result"]["cursor"].as_str().unwrap().to_string());
    };
    let reason = closing["reason"].as_str().unwrap();
    assert!(matches!(reason, "slow_consumer" | "lagged"), "{closing}");
    let resume = closing["cursor"].as_str().unwrap().to_string();
    assert_eq!(delivered.last().map(String::as_str).unwrap_or("0"), resume, "resume after the last delivered event");
    assert!(delivered.len() < seen.len(), "the stalled subscriber was cut off early");

    let mut resumed =
        SessionApiClient::subscribe_events(&healthy, Subscribe { since: Some(resume), ..Default::default() }.into())
            .await
            .unwrap();
    let mut rest = Vec::new();
    while delivered.len() + rest.len() < seen.len() {
        rest.push(
            tokio::time::timeout(Duration::from_secs(30), resumed.next()).await.unwrap().unwrap().unwrap().cursor,
        );
    }
    let all: Vec<String> = delivered.into_iter().chain(rest).collect();
    assert_eq!(all, seen.iter().map(|e| e.cursor.clone()).collect::<Vec<_>>(), "nothing missed, nothing twice");
}

/// Opens a raw WebSocket with a small receive buffer, so that a client which stops reading is
/// stalled after a few kilobytes of answers.
async fn small_window_socket(app: &TestApp) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(app.addr).await.unwrap();
    tokio_tungstenite::client_async(app.ws_url(), stream).await.map(|(ws, _)| ws)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

// A client that sends calls (and garbage) as fast as it can and reads none of the answers:
// once the answers have waited on it for the write-stall limit, the server closes the
// connection, and its slot under `max_connections` is free again. Without the limit, the
// connection (and everything it sent) would be held for as long as the client stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_reads_none_of_its_answers_is_closed_and_its_slot_freed() {
    let app = TestApp::spawn_with(Options {
        socket_send_buffer: Some(8192),
        tweak: |config| {
            config.write_stall = Duration::from_secs(1);
            // TestApp's own client holds one slot; the flooder takes the other.
            config.max_connections = 2;
        },
        ..Options::default()
    })
    .await;
    let mut flooder = small_window_socket(&app).await.unwrap();
    assert!(small_window_socket(&app).await.is_err(), "a third connection is refused while the flooder holds its slot");

    let started = std::time::Instant::now();
    let frames = [r#"{"jsonrpc":"2.0","id":1,"method":"server.ping"}"#, "not json at all"];
    let mut sent = 0usize;
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(5), flooder.send(Message::text(frames[sent % 2]))).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(e)) => break format!("send failed: {e}"),
            Err(_) => break "send blocked for 5 s".to_string(),
        }
        assert!(started.elapsed() < Duration::from_secs(60), "still sending after 60 s ({sent} frames)");
    };

    // The slot comes back while the flooder still holds its end of the socket.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut again = loop {
        if let Ok(ws) = small_window_socket(&app).await {
            break ws;
        }
        assert!(std::time::Instant::now() < deadline, "the slot was never freed ({sent} frames sent, then {ended})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // What the flooder reads now is at most the answers already delivered, then the end.
    let drained =
        tokio::time::timeout(Duration::from_secs(20), async { while let Some(Ok(_)) = flooder.next().await {} }).await;
    assert!(drained.is_ok(), "the flooder's connection is closed");

    // The new connection is served.
    again.send(Message::text(frames[0])).await.unwrap();
    let answer = loop {
        if let Message::Text(text) = again.next().await.unwrap().unwrap() {
            break text;
        }
    };
    assert!(answer.contains("\"result\""), "{answer}");
    drop(flooder);
}

// A client that reads, only slowly, keeps its connection however long its answers take to
// drain: the limit counts time without any progress, not time behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_reads_slowly_keeps_its_connection() {
    let app = TestApp::spawn_with(Options {
        socket_send_buffer: Some(8192),
        tweak: |config| config.write_stall = Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    app.register_client("app").await;
    let put = SessionPut {
        id: Some("big".into()),
        client_id: "app".into(),
        redirect_uri: REDIRECT.into(),
        data: Some(serde_json::json!({ "filler": "x".repeat(2000) })),
        ..Default::default()
    };
    app.client.put(put.into()).await.unwrap();
    let mut slow = small_window_socket(&app).await.unwrap();
    // 300 answers of ~2 KiB: far more than the two socket buffers hold.
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"session.get","params":{"id":"big"}}"#;
    for _ in 0..300 {
        slow.send(Message::text(call)).await.unwrap();
    }
    let started = std::time::Instant::now();
    let mut answers = 0;
    while answers < 300 {
        // 100 ms between reads of a few answers: behind for seconds, never still for 2 s.
        tokio::time::sleep(Duration::from_millis(100)).await;
        for _ in 0..4 {
            match tokio::time::timeout(Duration::from_secs(5), slow.next()).await {
                Ok(Some(Ok(Message::Text(_)))) => answers += 1,
                Ok(Some(Ok(_))) => {}
                other => panic!("closed after {answers} answers, {:?}: {other:?}", started.elapsed()),
            }
            if answers == 300 {
                break;
            }
        }
    }
    assert!(started.elapsed() > Duration::from_secs(4), "the answers took longer than twice the limit to drain");
}

/// How many calls of `method` the server has answered, from `/metrics`.
async fn answered(app: &TestApp, method: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    socket.write_all(b"GET /metrics HTTP/1.1\r\nHost: authstore\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut text = String::new();
    socket.read_to_string(&mut text).await.unwrap();
    let line = format!("authstore_rpc_calls_total{{method=\"{method}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{text}"))
}

// A client that asks for large answers faster than it reads them gets them all, but the server
// computes only about a budget (one largest message) ahead of what the socket has taken: the
// rest wait as requests, not as answers in the connection's send queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_reads_large_answers_slowly_has_a_budget_of_them_computed_ahead() {
    let app = TestApp::spawn_with(Options {
        socket_send_buffer: Some(8192),
        tweak: |config| {
            config.write_stall = Duration::from_secs(60);
            // The budget: rpc.discover's answer (~38 KB) fits, two do not.
            config.max_message_bytes = 64 * 1024;
        },
        ..Options::default()
    })
    .await;
    let mut slow = small_window_socket(&app).await.unwrap();
    const CALLS: u64 = 300;
    for id in 0..CALLS {
        let call = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"rpc.discover"}}"#);
        slow.send(Message::text(call)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ahead = answered(&app, "rpc.discover").await;
    assert!(ahead <= 10, "{ahead} of {CALLS} answers computed while the client read none");

    // Reading, the client gets every answer.
    let mut got = 0;
    while got < CALLS {
        match tokio::time::timeout(Duration::from_secs(10), slow.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                assert!(text.contains("\"openrpc\""), "an rpc.discover answer");
                got += 1;
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("closed after {got} answers: {other:?}"),
        }
    }
    assert_eq!(answered(&app, "rpc.discover").await, CALLS);
}
