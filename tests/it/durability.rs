//! Durability: the real binary on SurrealKV, killed with SIGKILL mid-write, reopened.
//! Every write acknowledged before the kill must be there afterwards, intact and usable.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use authstore::rpc::api::{ClientApiClient, CodeApiClient, SessionApiClient, TokenApiClient};
use authstore::types::*;
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use serde_json::json;

use crate::remote::free_port;
use crate::support::{CHALLENGE, REDIRECT, TestApp};

const WRITERS: usize = 4;
const CYCLES: usize = 3;

fn start(dir: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_authstore"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--db")
        .arg(format!("surrealkv://{}", dir.display()))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start authstore")
}

async fn connect_when_ready(port: u16) -> WsClient {
    let started = Instant::now();
    loop {
        let attempt = WsClientBuilder::default()
            .request_timeout(Duration::from_secs(60))
            .build(format!("ws://127.0.0.1:{port}"))
            .await;
        match attempt {
            Ok(client) => return client,
            Err(e) if started.elapsed() < Duration::from_secs(60) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("authstore did not come up: {e}"),
        }
    }
}

/// What writers had acknowledged before the kill.
#[derive(Default)]
struct Acked {
    sessions: Vec<(String, serde_json::Value)>,
    tokens: Vec<IssuedToken>,
    codes: Vec<IssuedCode>,
}

fn pseudo_random_millis(low: u64, high: u64) -> u64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    low + u64::from(nanos) % (high - low)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill_and_stay_usable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("db");
    let port = free_port();
    let acked = Arc::new(Mutex::new(Acked::default()));

    let mut child = start(&data, port);
    let admin = connect_when_ready(port).await;
    admin.register(crate::support::public_client("app").into()).await.expect("client.register");
    drop(admin);

    for cycle in 0..CYCLES {
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let acked = acked.clone();
            writers.push(tokio::spawn(async move {
                let client = connect_when_ready(port).await;
                for i in 0.. {
                    let id = format!("c{cycle}-w{w}-{i}");
                    let data = json!({"writer": w, "i": i, "cycle": cycle});
                    let put = SessionPut {
                        id: Some(id.clone()),
                        client_id: "app".into(),
                        redirect_uri: REDIRECT.into(),
                        code_challenge: Some(CHALLENGE.into()),
                        data: Some(data.clone()),
                        ttl_secs: Some(86_400),
                        ..Default::default()
                    };
                    let Ok(_) = client.put(put.into()).await else { return };
                    acked.lock().unwrap().sessions.push((id.clone(), data));
                    let token = TokenIssue { client_id: "app".into(), user_id: id.clone(), ..Default::default() };
                    let Ok(token) = TokenApiClient::issue(&client, token.into()).await else { return };
                    acked.lock().unwrap().tokens.push(token);
                    let code = CodeIssue {
                        client_id: Some("app".into()),
                        user_id: Some(id),
                        redirect_uri: Some(REDIRECT.into()),
                        code_challenge: Some(CHALLENGE.into()),
                        ttl_secs: Some(600),
                        ..Default::default()
                    };
                    let Ok(code) = CodeApiClient::issue(&client, code.into()).await else { return };
                    acked.lock().unwrap().codes.push(code);
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(pseudo_random_millis(300, 1500))).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        for writer in writers {
            writer.await.expect("writer task");
        }
        child = start(&data, port);
    }

    let client = connect_when_ready(port).await;
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.sessions.len() >= CYCLES, "writers got acknowledgements before each kill");
    for (id, data) in &acked.sessions {
        let session = SessionApiClient::get(&client, SessionRef { id: id.clone() }.into())
            .await
            .unwrap_or_else(|e| panic!("acknowledged session {id} lost: {e}"));
        assert_eq!(session.data.as_ref(), Some(data), "session {id} intact");
    }
    for token in &acked.tokens {
        let rotated = client
            .rotate(TokenRotate { token: token.token.clone(), client_id: "app".into(), ..Default::default() }.into())
            .await
            .unwrap_or_else(|e| panic!("acknowledged token {} unusable: {e}", token.token_id));
        assert_eq!(rotated.grant_id, token.grant_id);
    }
    for code in &acked.codes {
        client
            .consume(TestApp::consume_params(&code.code, "app").into())
            .await
            .unwrap_or_else(|e| panic!("acknowledged code for grant {} unusable: {e}", code.grant_id));
    }
    let clients = ClientApiClient::list(&client, ClientList::default().into()).await.unwrap();
    assert_eq!(clients.items.len(), 1);
    eprintln!(
        "durability: {} sessions, {} tokens, {} codes acknowledged across {CYCLES} SIGKILLs, all present",
        acked.sessions.len(),
        acked.tokens.len(),
        acked.codes.len()
    );
    child.kill().expect("stop");
    child.wait().expect("reap");
}
