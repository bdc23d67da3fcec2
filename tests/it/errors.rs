//! Bad input over raw WebSocket frames: every fault gets the right JSON-RPC error and the
//! connection stays usable.

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{CHALLENGE, REDIRECT, TestApp};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn raw(app: &TestApp) -> Socket {
    let (socket, _) = tokio_tungstenite::connect_async(app.ws_url()).await.expect("connect");
    socket
}

async fn send(socket: &mut Socket, text: &str) -> Value {
    socket.send(Message::text(text.to_string())).await.expect("send");
    recv(socket).await
}

async fn recv(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(30), socket.next())
            .await
            .expect("an answer within 30 s")
            .expect("the connection stays open")
            .expect("a frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).expect("JSON answer");
        }
    }
}

async fn assert_alive(socket: &mut Socket) {
    let pong = send(socket, r#"{"jsonrpc":"2.0","id":"alive","method":"server.ping"}"#).await;
    assert_eq!(pong["result"], "pong");
}

fn call(method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string()
}

#[tokio::test]
async fn protocol_faults_get_standard_codes_and_the_connection_survives() {
    let app = TestApp::spawn().await;
    let mut socket = raw(&app).await;

    let parse = send(&mut socket, r#"{"jsonrpc":"2.0","id":1,"method":"#).await;
    assert_eq!(parse["error"]["code"], -32700);
    assert_alive(&mut socket).await;

    let unknown = send(&mut socket, &call("session.teleport", json!({}))).await;
    assert_eq!(unknown["error"]["code"], -32601);
    assert_alive(&mut socket).await;

    // Params must be structured; a scalar is reported as invalid params naming `params`.
    let not_object = send(&mut socket, r#"{"jsonrpc":"2.0","id":1,"method":"session.get","params":"s"}"#).await;
    assert_eq!(not_object["error"]["code"], -32602);
    assert_eq!(not_object["error"]["data"]["field"], "params");
    assert_alive(&mut socket).await;

    let no_version = send(&mut socket, r#"{"id":1,"method":"server.ping"}"#).await;
    assert_eq!(no_version["error"]["code"], -32600);
    assert_alive(&mut socket).await;
}

#[tokio::test]
async fn invalid_params_name_the_field() {
    let app = TestApp::spawn().await;
    app.register_client("app").await;
    let mut socket = raw(&app).await;
    let session = |extra: Value| {
        let mut params = json!({"client_id": "app", "redirect_uri": REDIRECT, "code_challenge": CHALLENGE});
        for (k, v) in extra.as_object().unwrap() {
            params[k] = v.clone();
        }
        call("session.put", params)
    };
    let cases: Vec<(String, &str)> = vec![
        (call("session.put", json!({"redirect_uri": REDIRECT})), "client_id"),
        (session(json!({"client_id": 42})), "client_id"),
        (session(json!({"ttl_secs": -5})), "ttl_secs"),
        (session(json!({"ttl_secs": 1.5})), "ttl_secs"),
        (session(json!({"ttl_secs": 99_999_999_999u64})), "ttl_secs"),
        (session(json!({"ttl_secs": 0})), "ttl_secs"),
        (session(json!({"redirect_uri": "not a uri"})), "redirect_uri"),
        (session(json!({"redirect_uri": "http://example.com/cb"})), "redirect_uri"),
        (session(json!({"code_challenge_method": "plain"})), "code_challenge_method"),
        (session(json!({"code_challenge_method": "S512"})), "code_challenge_method"),
        (session(json!({"code_challenge": "short"})), "code_challenge"),
        (session(json!({"id": "x".repeat(10_000)})), "id"),
        (session(json!({"state": "s".repeat(100_000)})), "state"),
        (session(json!({"data": {"blob": "d".repeat(100_000)}})), "data"),
        (session(json!({"scope": "read\u{0}write"})), "scope"),
        (call("session.get", json!({})), "id"),
        (
            call(
                "code.consume",
                json!({"code": "c", "client_id": "app", "redirect_uri": REDIRECT, "code_verifier": "short"}),
            ),
            "code_verifier",
        ),
        (call("token.rotate", json!({"token": "t", "client_id": "app", "ttl_secs": "soon"})), "ttl_secs"),
        (call("session.list", json!({"limit": 100_000})), "limit"),
        (call("client.register", json!({"redirect_uris": "https://a.example/cb"})), "redirect_uris"),
    ];
    for (request, field) in cases {
        let answer = send(&mut socket, &request).await;
        assert_eq!(answer["error"]["code"], -32602, "{request} -> {answer}");
        assert_eq!(answer["error"]["data"]["field"], field, "{request} -> {answer}");
    }
    assert_alive(&mut socket).await;
}

#[tokio::test]
async fn a_batch_answers_every_member_including_the_invalid_ones() {
    let app = TestApp::spawn().await;
    let mut socket = raw(&app).await;
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "server.ping"},
        {"jsonrpc": "2.0", "id": 2, "method": "nope.nope"},
        {"jsonrpc": "2.0", "id": 3, "method": "session.get", "params": {"id": 7}},
        {"oops": true},
        {"jsonrpc": "2.0", "id": 5, "method": "session.get", "params": {"id": "missing"}},
    ]);
    let answer = send(&mut socket, &batch.to_string()).await;
    let answers = answer.as_array().expect("a batch answer");
    assert_eq!(answers.len(), 5, "{answer}");
    let by_id = |id: i64| answers.iter().find(|a| a["id"] == id).cloned().unwrap_or(Value::Null);
    assert_eq!(by_id(1)["result"], "pong");
    assert_eq!(by_id(2)["error"]["code"], -32601);
    assert_eq!(by_id(3)["error"]["data"]["field"], "id");
    assert_eq!(by_id(5)["error"]["code"], 1001);
    assert!(answers.iter().any(|a| a["id"].is_null() && a["error"]["code"] == -32600), "{answer}");
    assert_alive(&mut socket).await;
}

#[tokio::test]
async fn the_same_methods_answer_plain_http_posts() {
    let app = TestApp::spawn().await;
    let client = jsonrpsee::http_client::HttpClientBuilder::default()
        .build(format!("http://{}", app.addr))
        .expect("http client");
    use jsonrpsee::core::client::ClientT;
    let pong: String = client.request("server.ping", jsonrpsee::rpc_params![]).await.expect("ping over HTTP");
    assert_eq!(pong, "pong");
}
