//! The real binary as a process: what it logs, and how it shuts down.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use authstore::rpc::api::{ClientApiClient, CodeApiClient, TokenApiClient};
use authstore::types::*;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::remote::free_port;
use crate::support::{CHALLENGE, REDIRECT, TestApp, VERIFIER, connect_with};

const API_KEY: &str = "process-test-key-7f3a9c2e1b";

fn start(port: u16, dir: &std::path::Path, extra: &[&str]) -> Child {
    start_logging_to(port, dir, extra, Stdio::inherit())
}

/// [`start`], with the server's log (`RUST_LOG=warn`) written to `log`.
fn start_logging_to(port: u16, dir: &std::path::Path, extra: &[&str], log: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_authstore"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--api-key", API_KEY])
        .arg("--db")
        .arg(format!("surrealkv://{}", dir.display()))
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start authstore")
}

async fn ready(port: u16) {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "authstore did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn terminate(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill -TERM");
    assert!(status.success());
}

/// Waits for the process to exit, at most `limit`; returns its exit code.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("authstore did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// Every secret the flow handles, given or issued, must stay out of the logs, at every level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs_even_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_authstore"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--api-key", API_KEY, "--log-format", "json"])
        .arg("--db")
        .arg(format!("surrealkv://{}", dir.path().join("db").display()))
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain the logs as they come, or a full pipe would stall the server.
    let mut stderr = child.stderr.take().unwrap();
    let collector = std::thread::spawn(move || {
        let mut logs = String::new();
        stderr.read_to_string(&mut logs).map(|_| logs)
    });
    ready(port).await;
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = connect_with(addr, Some(API_KEY)).await;

    let mut secrets = vec![API_KEY.to_string(), VERIFIER.to_string()];
    let registered = client
        .register(
            ClientRegister {
                client_id: Some("conf".into()),
                metadata: ClientMetadata { redirect_uris: vec![REDIRECT.into()], ..Default::default() },
                client_secret: Some("caller-chosen-client-secret-0123456789".into()),
                idempotency_key: None,
            }
            .into(),
        )
        .await
        .unwrap();
    secrets.push(registered.client_secret.clone().unwrap());
    client
        .authenticate(ClientAuthenticate { client_id: "conf".into(), client_secret: secrets[2].clone() }.into())
        .await
        .unwrap();
    let code = CodeApiClient::issue(
        &client,
        CodeIssue {
            client_id: Some("conf".into()),
            user_id: Some("alice".into()),
            redirect_uri: Some(REDIRECT.into()),
            code_challenge: Some(CHALLENGE.into()),
            ..Default::default()
        }
        .into(),
    )
    .await
    .unwrap();
    secrets.push(code.code.clone());
    let grant = client.consume(TestApp::consume_params(&code.code, "conf").into()).await.unwrap().grant_id;
    let supplied = "caller-supplied-refresh-token-abcdefghijklmnop".to_string();
    let first = TokenApiClient::issue(
        &client,
        TokenIssue {
            client_id: "conf".into(),
            user_id: "alice".into(),
            grant_id: Some(grant),
            token: Some(supplied.clone()),
            ..Default::default()
        }
        .into(),
    )
    .await
    .unwrap();
    secrets.push(supplied);
    let second = client
        .rotate(TokenRotate { token: first.token.clone(), client_id: "conf".into(), ..Default::default() }.into())
        .await
        .unwrap();
    secrets.push(second.token.clone());
    TokenApiClient::get(&client, TokenRef { token: second.token.clone() }.into()).await.unwrap();
    let _ = client
        .rotate(TokenRotate { token: first.token.clone(), client_id: "conf".into(), ..Default::default() }.into())
        .await;
    let _ = client.consume(TestApp::consume_params(&code.code, "conf").into()).await; // a replay, logged as an error
    drop(client);

    terminate(&child);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(20)), Some(0));
    let logs = collector.join().unwrap().unwrap();
    assert!(logs.lines().count() > 10, "logs were written:\n{logs}");
    for line in logs.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    }
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a secret reached the logs: {secret}");
    }
    assert!(logs.contains("\"method\":\"token.rotate\""), "each call is logged with its method");
    assert!(logs.contains("\"outcome\":\"error\"") && logs.contains("\"outcome\":\"ok\""), "and its outcome");
    assert!(logs.contains("duration_us"), "and its duration");
}

// SIGTERM: stop accepting, tell subscribers why, finish, exit 0, and keep the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_subscriptions_with_a_reason_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db");
    let port = free_port();
    let log = dir.path().join("log");
    // A configured idempotency secret: nothing on this run warns, up to the stop.
    let secret = ["--idempotency-secret", "process-test-idempotency-secret-0123456789"];
    let mut child = start_logging_to(port, &data, &secret, std::fs::File::create(&log).unwrap().into());
    ready(port).await;
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = connect_with(addr, Some(API_KEY)).await;
    client.register(crate::support::public_client("app").into()).await.unwrap();

    let mut request = format!("ws://127.0.0.1:{port}").into_client_request().unwrap();
    request.headers_mut().insert("Authorization", format!("Bearer {API_KEY}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket.send(Message::text(r#"{"jsonrpc":"2.0","id":1,"method":"token.subscribe","params":{}}"#)).await.unwrap();
    let mut frames = Vec::new();
    while frames.is_empty() {
        if let Message::Text(text) = socket.next().await.unwrap().unwrap() {
            frames.push(serde_json::from_str::<Value>(&text).unwrap());
        }
    }
    assert!(frames[0]["result"].is_u64(), "subscribed: {}", frames[0]);

    let stopping = Instant::now();
    terminate(&child);
    let closing = loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await.expect("a closing notice") {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["params"]["error"].is_object() {
                    break value;
                }
            }
            Some(Ok(_)) => {}
            other => panic!("connection ended without a closing notice: {other:?}"),
        }
    };
    assert_eq!(closing["method"], "token.event");
    assert_eq!(closing["params"]["error"]["reason"], "shutdown");
    assert!(closing["params"]["error"]["cursor"].is_string());
    assert_eq!(wait_exit(&mut child, Duration::from_secs(15)), Some(0), "exit 0");
    eprintln!("shutdown took {:?}", stopping.elapsed());
    // The engine was closed: its write buffer written out, its log emptied, nothing for the
    // next start to replay.
    let logged: u64 =
        std::fs::read_dir(data.join("wal")).unwrap().map(|entry| entry.unwrap().metadata().unwrap().len()).sum();
    assert_eq!(logged, 0, "a clean stop left {logged} bytes of log to replay");
    // Closed once, quietly: a second shutdown pass finds the engine closed and logs an ERROR
    // and a WARN, which would page whoever alerts on them at every deploy.
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains("ERROR") && !log.contains("WARN"), "a clean stop logged a warning or an error:\n{log}");

    // Everything written before is there after a restart.
    let mut child = start(port, &data, &[]);
    ready(port).await;
    let client = connect_with(addr, Some(API_KEY)).await;
    ClientApiClient::get(&client, ClientRef { client_id: "app".into() }.into()).await.expect("data kept");
    terminate(&child);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(15)), Some(0));
}
