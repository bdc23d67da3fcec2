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

/// A request frame of about `size` bytes: `client.register` whose `redirect_uris` is a number,
/// after tens of thousands of dummy keys (first in any key order). Removing one key at a time
/// to find the bad one (what the server once did) costs one decode per key: minutes at this
/// size, with a worker thread held all along.
fn pathological_register(size: usize) -> String {
    let mut text = String::from(r#"{"jsonrpc":"2.0","id":"big","method":"client.register","params":{"#);
    let mut i = 0u32;
    while text.len() + 40 < size {
        text.push_str(&format!(r#""a{i:07}":0,"#));
        i += 1;
    }
    text.push_str(r#""redirect_uris":5}}"#);
    text
}

// Finding 5: error paths are linear in the input, and one bad message holds no worker.
#[tokio::test]
async fn a_mebibyte_of_bad_params_is_refused_at_once_and_delays_no_one() {
    let app = TestApp::spawn().await;
    let mut big = raw(&app).await;
    let mut other = raw(&app).await;
    let request = pathological_register(1_000_000);
    assert!(request.len() > 999_000 && request.len() < 1_048_576);

    big.send(Message::text(request)).await.expect("send");
    // A ping on another connection answers while the big message is being handled.
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let pong = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            send(&mut other, r#"{"jsonrpc":"2.0","id":"p","method":"server.ping"}"#),
        )
        .await
        .expect("a ping on another connection answers within 5 s");
        assert_eq!(pong["result"], "pong", "{pong} after {:?}", started.elapsed());
    }
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), recv(&mut big))
        .await
        .expect("the 1 MiB message is answered within 10 s");
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    // The first key the method does not know.
    assert_eq!(answer["error"]["data"]["field"], "a0000000", "{answer}");

    // Megabyte values and keys are named too, and the answer stays small.
    let long_value =
        call("session.put", json!({"client_id": "app", "redirect_uri": REDIRECT, "ttl_secs": "9".repeat(1_000_000)}));
    let answer = send(&mut big, &long_value).await;
    assert_eq!(answer["error"]["data"]["field"], "ttl_secs", "{:.300}", answer.to_string());
    assert!(answer.to_string().len() < 4096);
    let long_key = call("session.list", json!({ "k".repeat(1_000_000): 1 }));
    let answer = send(&mut big, &long_key).await;
    assert_eq!(answer["error"]["code"], -32602);
    assert!(answer["error"]["data"]["field"].as_str().unwrap().starts_with("kkk"));
    assert!(answer.to_string().len() < 4096);
    assert_alive(&mut big).await;
}

/// `client.register` params for a public client, with `extra` merged in.
fn register(extra: Value) -> String {
    let mut params = json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "none"});
    for (k, v) in extra.as_object().unwrap() {
        params[k] = v.clone();
    }
    call("client.register", params)
}

fn with(method: &str, mut params: Value, extra: Value) -> String {
    for (k, v) in extra.as_object().unwrap() {
        params[k] = v.clone();
    }
    call(method, params)
}

// Finding 8: text is stored exactly as validated, so anything a parser would silently strip,
// trim or encode, anything that reorders what a person reads, anything that can never work
// later, and any parameter the method does not know, is refused naming the field.
#[tokio::test]
async fn refused_inputs_name_their_field() {
    let app = TestApp::spawn().await;
    app.register_client("app").await;
    let mut socket = raw(&app).await;
    let put = |extra: Value| {
        with("session.put", json!({"client_id": "app", "redirect_uri": REDIRECT, "code_challenge": CHALLENGE}), extra)
    };
    let issue = |extra: Value| {
        with(
            "code.issue",
            json!({"client_id": "app", "user_id": "alice", "redirect_uri": REDIRECT, "code_challenge": CHALLENGE}),
            extra,
        )
    };
    let consume = |extra: Value| {
        with(
            "code.consume",
            json!({"code": "c", "client_id": "app", "redirect_uri": REDIRECT, "code_verifier": crate::support::VERIFIER}),
            extra,
        )
    };
    let token = |extra: Value| with("token.issue", json!({"client_id": "app", "user_id": "alice"}), extra);
    let document = |client_id: &str, extra: Value| {
        let mut document = json!({"client_id": client_id, "redirect_uris": ["https://a.example/cb"]});
        for (k, v) in extra.as_object().unwrap() {
            document[k] = v.clone();
        }
        call("client.cache_document", json!({"client_id": client_id, "document": document}))
    };
    let long_document_id = format!("https://docs.example/{}.json", "a".repeat(300));
    let s60 = "a".repeat(60);
    let cases: Vec<(String, &str)> = vec![
        // URIs of every kind: control characters, surrounding or inner spaces, non-ASCII.
        (register(json!({"redirect_uris": ["https://a.example/cb\r\nX-Injected: y"]})), "redirect_uris"),
        (register(json!({"redirect_uris": [" https://a.example/cb"]})), "redirect_uris"),
        (register(json!({"redirect_uris": ["https://a.example/cb "]})), "redirect_uris"),
        (register(json!({"redirect_uris": ["https://a.example/c\tb"]})), "redirect_uris"),
        (register(json!({"redirect_uris": ["https://a.example/cb\u{202E}"]})), "redirect_uris"),
        (register(json!({"client_uri": "https://a.example/\r\n"})), "client_uri"),
        (register(json!({"logo_uri": " https://a.example/l.png"})), "logo_uri"),
        (register(json!({"tos_uri": "https://a.example/tos\t"})), "tos_uri"),
        (register(json!({"policy_uri": "https://a.example/p p"})), "policy_uri"),
        (register(json!({"jwks_uri": "https://a.example/j\n"})), "jwks_uri"),
        (put(json!({"redirect_uri": format!("{REDIRECT}\r\nX-Injected: y")})), "redirect_uri"),
        (put(json!({"redirect_uri": format!(" {REDIRECT}")})), "redirect_uri"),
        (put(json!({"resource": "https://mcp.example/\t"})), "resource"),
        (issue(json!({"redirect_uri": format!("{REDIRECT}\n")})), "redirect_uri"),
        (issue(json!({"resource": " https://mcp.example/"})), "resource"),
        (consume(json!({"redirect_uri": format!("{REDIRECT}\r\nX-Injected: y")})), "redirect_uri"),
        (consume(json!({"resource": "https://mcp.example/ x"})), "resource"),
        (token(json!({"resource": "https://mcp.example/\u{202E}"})), "resource"),
        // Display text: control, bidi-override, surrounding whitespace.
        (register(json!({"client_name": "Evil\u{202E}gnp.exe"})), "client_name"),
        (register(json!({"client_name": "a\tb"})), "client_name"),
        (register(json!({"client_name": " Google"})), "client_name"),
        (register(json!({"contacts": ["ops@a.example\r\nBcc: x@y.example"]})), "contacts"),
        (register(json!({"software_id": "\u{2066}x"})), "software_id"),
        (register(json!({"software_version": "1.0\u{2028}"})), "software_version"),
        (
            register(json!({"token_endpoint_auth_method": "client_secret_post", "client_secret": "é".repeat(32)})),
            "client_secret",
        ),
        (
            call("client.update", json!({"client_id": "app", "redirect_uris": [REDIRECT], "client_name": "x\u{202E}"})),
            "client_name",
        ),
        (put(json!({"user_id": "alice\u{202E}"})), "user_id"),
        (put(json!({"user_id": " alice"})), "user_id"),
        (token(json!({"user_id": "alice\n"})), "user_id"),
        (call("session.update", json!({"id": "s", "user_id": "bob\u{202E}"})), "user_id"),
        // state is 1*VSCHAR (RFC 6749 appendix A.5).
        (put(json!({"state": "s\u{202E}"})), "state"),
        (put(json!({"state": "a\r\nb"})), "state"),
        (put(json!({"state": ""})), "state"),
        (put(json!({"scope": "read\twrite"})), "scope"),
        // An S256 challenge is exactly 43 base64url characters: anything else never verifies.
        (put(json!({"code_challenge": s60})), "code_challenge"),
        (put(json!({"code_challenge": format!("{}~", &CHALLENGE[..42])})), "code_challenge"),
        (issue(json!({"code_challenge": s60})), "code_challenge"),
        // Document client ids that no flow method would accept.
        (document(&long_document_id, json!({})), "client_id"),
        (document("https://docs.example/clïent.json", json!({})), "client_id"),
        (
            document("https://docs.example/c.json", json!({"redirect_uris": ["https://a.example/cb\r\n"]})),
            "redirect_uris",
        ),
        (document("https://docs.example/c.json", json!({"client_name": "x\u{202E}"})), "client_name"),
        // Parameters the method does not know.
        (put(json!({"ttl_sec": 5})), "ttl_sec"),
        (register(json!({"redirect_uri": "https://a.example/cb"})), "redirect_uri"),
        (register(json!({"client_secret_expires_at": 0})), "client_secret_expires_at"),
        (call("client.update", json!({"client_id": "app", "redirect_uris": [REDIRECT], "rotate": true})), "rotate"),
        (
            call(
                "client.cache_document",
                json!({"client_id": "https://docs.example/c.json", "document": {}, "max_age": 5}),
            ),
            "max_age",
        ),
        (issue(json!({"state": "xyz"})), "state"),
        (consume(json!({"state": "xyz"})), "state"),
        (token(json!({"expires_in": 5})), "expires_in"),
        (call("token.rotate", json!({"token": "t", "client_id": "app", "grant_id": "g"})), "grant_id"),
        (call("session.subscribe", json!({"kind": ["expired"]})), "kind"),
        (call("server.ping", json!({"verbose": true})), "verbose"),
    ];
    let mut wrong = Vec::new();
    for (request, field) in &cases {
        let answer = send(&mut socket, request).await;
        if answer["error"]["code"] != -32602 || answer["error"]["data"]["field"] != *field {
            wrong.push(format!("{request}\n  -> {answer}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} inputs not refused naming their field:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    assert_alive(&mut socket).await;

    // What passes is stored and handed back exactly as given.
    let registered = send(
        &mut socket,
        &register(json!({
            "client_id": "exact",
            "redirect_uris": ["https://a.example/cb?x=%2F&y=1"],
            "client_name": "Zoë's client (名前)",
            "contacts": ["ops@a.example"],
            "client_uri": "https://A.example",
        })),
    )
    .await;
    let got = send(&mut socket, &call("client.get", json!({"client_id": "exact"}))).await;
    for answer in [&registered, &got] {
        assert_eq!(answer["result"]["redirect_uris"], json!(["https://a.example/cb?x=%2F&y=1"]), "{answer}");
        assert_eq!(answer["result"]["client_name"], "Zoë's client (名前)", "{answer}");
        assert_eq!(answer["result"]["client_uri"], "https://A.example", "{answer}");
    }
    let session = send(&mut socket, &put(json!({"id": "exact", "state": "a b~c", "user_id": "Zoë"}))).await;
    assert_eq!(session["result"]["state"], "a b~c", "{session}");
    assert_eq!(session["result"]["user_id"], "Zoë", "{session}");
}

// Every method (but unsubscribe, which takes a bare subscription id) refuses a parameter it
// does not know, naming it: the list comes from rpc.discover, so a new method is covered too.
#[tokio::test]
async fn every_method_refuses_a_parameter_it_does_not_know() {
    let app = TestApp::spawn().await;
    let mut socket = raw(&app).await;
    let document = send(&mut socket, &call("rpc.discover", json!({}))).await;
    let methods: Vec<String> = document["result"]["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .filter(|name| !name.ends_with("unsubscribe"))
        .collect();
    assert!(methods.len() >= 25, "{methods:?}");
    for method in &methods {
        let answer = send(&mut socket, &call(method, json!({"zz_unknown": 1}))).await;
        assert_eq!(answer["error"]["code"], -32602, "{method}: {answer}");
        assert_eq!(answer["error"]["data"]["field"], "zz_unknown", "{method}: {answer}");
    }
    assert_alive(&mut socket).await;
}
