//! Running it in production: API keys, limits, health, readiness and metrics.

use std::time::Duration;

use authstore::rpc::api::SessionApiClient;
use authstore::types::*;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{Options, TestApp, connect_with};

const KEY_A: &str = "key-a-0123456789abcdef";
const KEY_B: &str = "key-b-0123456789abcdef";

fn with_keys() -> Options {
    Options {
        tweak: |c| c.api_keys = authstore::http::ApiKeys::new([KEY_A, KEY_B]),
        api_key: Some(KEY_A.into()),
        ..Options::default()
    }
}

/// A plain HTTP/1.1 request; returns the status and the body.
async fn http(app: &TestApp, method: &str, path: &str, key: Option<&str>, body: Option<&str>) -> (u16, String) {
    http_at(app.addr, method, path, key, body).await
}

async fn http_at(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(key) = key {
        request.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or_default());
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).to_string();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The HTTP status of a WebSocket upgrade with this key (101 when it succeeds).
async fn upgrade_status(app: &TestApp, key: Option<&str>) -> u16 {
    let mut request = app.ws_url().into_client_request().unwrap();
    if let Some(key) = key {
        request.headers_mut().insert("Authorization", format!("Bearer {key}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("unexpected handshake failure: {e}"),
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text frame, as JSON (pings and other control frames are skipped).
async fn next_json(socket: &mut Socket) -> Value {
    loop {
        match socket.next().await.expect("open").expect("frame") {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
            _ => continue,
        }
    }
}

const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"server.ping"}"#;
const BATCH: &str =
    r#"[{"jsonrpc":"2.0","id":1,"method":"server.ping"},{"jsonrpc":"2.0","id":2,"method":"client.list","params":{}}]"#;

#[tokio::test]
async fn with_api_keys_every_route_but_health_needs_one_of_them() {
    let app = TestApp::spawn_with(with_keys()).await;
    // WebSocket upgrades.
    assert_eq!(upgrade_status(&app, None).await, 401);
    assert_eq!(upgrade_status(&app, Some("key-c-0123456789abcdef")).await, 401);
    assert_eq!(upgrade_status(&app, Some(&KEY_A[..KEY_A.len() - 1])).await, 401);
    assert_eq!(upgrade_status(&app, Some(KEY_A)).await, 101);
    assert_eq!(upgrade_status(&app, Some(KEY_B)).await, 101, "a second key works: rotation without downtime");
    // HTTP calls, single and batched.
    assert_eq!(http(&app, "POST", "/", None, Some(PING)).await.0, 401);
    assert_eq!(http(&app, "POST", "/", None, Some(BATCH)).await.0, 401, "a batch cannot bypass the key");
    assert_eq!(http(&app, "POST", "/", Some("wrong-0123456789abcdef"), Some(BATCH)).await.0, 401);
    let (status, body) = http(&app, "POST", "/", Some(KEY_B), Some(BATCH)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("pong"));
    // Operational routes.
    assert_eq!(http(&app, "GET", "/health", None, None).await, (200, "ok\n".into()));
    assert_eq!(http(&app, "GET", "/ready", None, None).await.0, 401);
    assert_eq!(http(&app, "GET", "/metrics", None, None).await.0, 401);
    assert_eq!(http(&app, "GET", "/ready", Some(KEY_A), None).await, (200, "ready\n".into()));
    assert_eq!(http(&app, "GET", "/metrics", Some(KEY_A), None).await.0, 200);
}

// The probe listener answers health, readiness and metrics without a key, and nothing else:
// no call, batch or upgrade reaches a method through it.
#[tokio::test]
async fn the_probe_listener_answers_probes_without_a_key_and_nothing_else() {
    let app = TestApp::spawn_with(Options {
        tweak: |c| {
            c.api_keys = authstore::http::ApiKeys::new([KEY_A, KEY_B]);
            c.probe_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        },
        api_key: Some(KEY_A.into()),
        ..Options::default()
    })
    .await;
    let probe = app.probe.expect("a probe listener");
    assert_eq!(http_at(probe, "GET", "/health", None, None).await, (200, "ok\n".into()));
    assert_eq!(http_at(probe, "GET", "/ready", None, None).await, (200, "ready\n".into()));
    let (status, metrics) = http_at(probe, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    assert!(metrics.contains("authstore_"), "{metrics}");
    assert_eq!(http_at(probe, "POST", "/", None, Some(PING)).await.0, 404, "no JSON-RPC on the probe listener");
    assert_eq!(http_at(probe, "POST", "/", Some(KEY_A), Some(BATCH)).await.0, 404, "not even with a key");
    assert_eq!(http_at(probe, "GET", "/anything", None, None).await.0, 404);
    let upgrade = tokio_tungstenite::connect_async(format!("ws://{probe}")).await;
    assert!(upgrade.is_err(), "no WebSocket upgrade on the probe listener");
    // The main port still wants the key.
    assert_eq!(http(&app, "GET", "/metrics", None, None).await.0, 401);
}

// Plain HTTP cannot carry notifications: a subscription asked for over it is refused with a
// reason, not an internal error, alone or in a batch, and a WebSocket still subscribes.
#[tokio::test]
async fn subscribing_over_plain_http_says_a_websocket_is_needed() {
    let app = TestApp::spawn().await;
    let subscribe = r#"{"jsonrpc":"2.0","id":1,"method":"token.subscribe","params":{}}"#;
    let (status, body) = http(&app, "POST", "/", None, Some(subscribe)).await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["error"]["code"], -32600, "{body}");
    assert_eq!(answer["error"]["data"]["reason"], "websocket_required", "{body}");
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"session.subscribe","params":{}},{"jsonrpc":"2.0","id":2,"method":"server.ping"}]"#;
    let (_, body) = http(&app, "POST", "/", None, Some(batch)).await;
    let answers: Value = serde_json::from_str(&body).unwrap();
    let by_id = |id: i64| answers.as_array().unwrap().iter().find(|a| a["id"] == id).unwrap().clone();
    assert_eq!(by_id(1)["error"]["data"]["reason"], "websocket_required", "{body}");
    assert_eq!(by_id(2)["result"], "pong", "{body}");
    let mut socket = tokio_tungstenite::connect_async(app.ws_url()).await.unwrap().0;
    socket.send(Message::text(subscribe.to_string())).await.unwrap();
    assert!(next_json(&mut socket).await["result"].is_u64(), "a WebSocket subscribes");
}

#[tokio::test]
async fn without_api_keys_a_loopback_server_is_open() {
    let app = TestApp::spawn().await;
    assert_eq!(upgrade_status(&app, None).await, 101);
    assert_eq!(http(&app, "POST", "/", None, Some(PING)).await.0, 200);
    assert_eq!(http(&app, "GET", "/ready", None, None).await.0, 200);
}

#[test]
fn a_public_address_without_a_key_is_refused_at_start() {
    use authstore::config::{Cli, Command, Config};
    use clap::Parser;
    let parse = |args: &[&str]| {
        let Command::Serve(serve) = Cli::try_parse_from(args).unwrap().command;
        Config::try_from(&serve)
    };
    let refused = parse(&["authstore", "serve", "--listen", "0.0.0.0:8750"]).unwrap_err();
    assert!(refused.contains("without an API key"), "{refused}");
    assert!(parse(&["authstore", "serve", "--listen", "0.0.0.0:8750", "--allow-unauthenticated"]).is_ok());
    assert!(parse(&["authstore", "serve", "--listen", "0.0.0.0:8750", "--api-key", KEY_A]).is_ok());
    assert!(parse(&["authstore", "serve", "--listen", "[::1]:8750"]).is_ok(), "loopback needs no key");
    let short = parse(&["authstore", "serve", "--api-key", "short"]).unwrap_err();
    assert!(short.contains("at least 16"), "{short}");
}

#[tokio::test]
async fn connection_and_message_limits_answer_the_offender_only() {
    let app = TestApp::spawn_with(Options {
        tweak: |c| {
            c.max_connections = 3;
            c.max_message_bytes = 4096;
        },
        ..Options::default()
    })
    .await;
    // TestApp holds one connection; two more fit, the next is refused with HTTP 429.
    let second = app.connect().await;
    let third = app.connect().await;
    assert_eq!(upgrade_status(&app, None).await, 429);
    drop(third);
    // Room again once one leaves.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut socket = loop {
        match tokio_tungstenite::connect_async(app.ws_url()).await {
            Ok((socket, _)) => break socket,
            Err(_) if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("no room after a connection closed: {e}"),
        }
    };
    // An oversized message gets -32007 and the connection stays usable.
    let big = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"session.get","params":{{"id":"{}"}}}}"#, "x".repeat(8192));
    socket.send(Message::text(big)).await.unwrap();
    let answer = next_json(&mut socket).await;
    assert_eq!(answer["error"]["code"], -32007, "{answer}");
    socket.send(Message::text(PING)).await.unwrap();
    let answer = next_json(&mut socket).await;
    assert_eq!(answer["result"], "pong");
    drop(socket);
    assert!(SessionApiClient::list(&second, SessionList::default().into()).await.is_ok(), "others carry on");
}

#[tokio::test]
async fn subscription_and_in_flight_limits_answer_with_json_rpc_errors() {
    let app = TestApp::spawn_with(Options {
        tweak: |c| {
            c.max_subscriptions_per_connection = 2;
            c.max_in_flight_per_connection = 2;
        },
        ..Options::default()
    })
    .await;
    let c = &app.client;
    let _one = SessionApiClient::subscribe_events(c, Subscribe::default().into()).await.unwrap();
    let _two = SessionApiClient::subscribe_events(c, Subscribe::default().into()).await.unwrap();
    match SessionApiClient::subscribe_events(c, Subscribe::default().into()).await {
        Err(jsonrpsee::core::client::Error::Call(e)) => assert_eq!(e.code(), -32006),
        other => panic!("expected too many subscriptions, got {other:?}"),
    }

    // Fifty calls written at once on one connection: at most two run, the rest are "busy".
    let (mut socket, _) = tokio_tungstenite::connect_async(app.ws_url()).await.unwrap();
    for id in 0..50 {
        let list = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"client.list","params":{{}}}}"#);
        socket.feed(Message::text(list)).await.unwrap();
    }
    socket.flush().await.unwrap();
    let (mut ok, mut busy) = (0, 0);
    for _ in 0..50 {
        let answer = next_json(&mut socket).await;
        match answer["error"]["code"].as_i64() {
            None => ok += 1,
            Some(-32009) => busy += 1,
            Some(other) => panic!("unexpected error {other}: {answer}"),
        }
    }
    assert!(ok >= 1 && busy >= 1, "ok={ok} busy={busy}");
    // Another connection is unaffected.
    let other = app.connect().await;
    assert!(SessionApiClient::list(&other, SessionList::default().into()).await.is_ok());
}

#[tokio::test]
async fn a_connection_that_stops_answering_pings_is_closed() {
    let app = TestApp::spawn_with(Options {
        tweak: |c| c.ws_ping = Some((Duration::from_millis(200), Duration::from_millis(600))),
        ..Options::default()
    })
    .await;
    let (mut silent, _) = tokio_tungstenite::connect_async(app.ws_url()).await.unwrap();
    // Not reading means not answering pings.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut closed = false;
    while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(5), silent.next()).await {
        match frame {
            Ok(Message::Close(_)) | Err(_) => {
                closed = true;
                break;
            }
            Ok(_) => {}
        }
    }
    assert!(closed, "the server closed the inactive connection");
    // The library client answers pings, so its connection lives on.
    assert!(SessionApiClient::list(&app.client, SessionList::default().into()).await.is_ok());
}

#[tokio::test]
async fn metrics_count_calls_errors_connections_subscriptions_records_and_events() {
    let app = TestApp::spawn_with(with_keys()).await;
    app.register_client("app").await;
    let _sub = SessionApiClient::subscribe_events(&app.client, Subscribe::default().into()).await.unwrap();
    let put = SessionPut {
        id: Some("s".into()),
        client_id: "app".into(),
        redirect_uri: crate::support::REDIRECT.into(),
        ..Default::default()
    };
    app.client.put(put.into()).await.unwrap();
    let _ = SessionApiClient::get(&app.client, SessionRef { id: "missing".into() }.into()).await;
    SessionApiClient::delete(&app.client, SessionDelete { id: "s".into(), idempotency_key: None }.into())
        .await
        .unwrap();
    let other = connect_with(app.addr, Some(KEY_B)).await;
    let _ = http(&app, "POST", "/", Some(KEY_A), Some(r#"{"jsonrpc":"2.0","id":1,"method":"no.such.method"}"#)).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (status, text) = http(&app, "GET", "/metrics", Some(KEY_A), None).await;
        assert_eq!(status, 200);
        if text.contains("authstore_events_total 1") || tokio::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for line in [
        "authstore_rpc_calls_total{method=\"session.put\"} 1",
        "authstore_rpc_calls_total{method=\"session.get\"} 1",
        "authstore_rpc_calls_total{method=\"unknown\"} 1",
        "authstore_rpc_errors_total{code=\"1001\"} 1",
        "authstore_rpc_errors_total{code=\"-32601\"} 1",
        "authstore_connections 2",
        "authstore_subscriptions 1",
        "authstore_records{kind=\"clients\"} 1",
        "authstore_records{kind=\"sessions\"} 0",
        "authstore_events_total 1",
        "authstore_rpc_duration_seconds_count{method=\"session.put\"} 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(!text.contains("no.such.method"), "labels are limited to real method names");
    drop(other);
}
