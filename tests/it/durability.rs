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
    start_with(dir, port, &[])
}

fn start_with(dir: &Path, port: u16, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_authstore"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--db")
        .arg(format!("surrealkv://{}", dir.display()))
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start authstore")
}

pub(crate) async fn connect_when_ready(port: u16) -> WsClient {
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
        // Kill only a server that is listening: writers of a cycle whose server died while
        // starting would wait for one that is started only after they give up.
        drop(connect_when_ready(port).await);
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

/// The newest SurrealKV WAL segment under `data`.
pub(crate) fn newest_wal_segment(data: &Path) -> std::path::PathBuf {
    let mut segments: Vec<_> = std::fs::read_dir(data.join("wal"))
        .expect("wal directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segments.sort();
    segments.pop().expect("a WAL segment")
}

/// Appends what a write cut short by a kill leaves behind: `bytes` of a record.
pub(crate) fn tear_wal_tail(data: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut wal = std::fs::OpenOptions::new().append(true).open(newest_wal_segment(data)).expect("open WAL");
    wal.write_all(bytes).expect("append torn record");
    wal.sync_all().expect("sync WAL");
}

/// The first fragment of a record split across blocks, complete and checksummed, whose
/// remaining fragments were never written: SurrealKV's WAL framing (CRC-32 over type and data,
/// big-endian CRC and length, type 2 = First).
pub(crate) fn first_fragment_only(data: &Path) -> Vec<u8> {
    const BLOCK: u64 = 32 * 1024;
    let size = std::fs::metadata(newest_wal_segment(data)).expect("WAL size").len();
    let room = BLOCK - size % BLOCK;
    let mut bytes = Vec::new();
    if room < 8 {
        bytes.resize(room as usize, 0);
    }
    let body = vec![0x5a_u8; 64];
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[2]);
    crc.update(&body);
    bytes.extend_from_slice(&crc.finalize().to_be_bytes());
    bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
    bytes.push(2);
    bytes.extend_from_slice(&body);
    bytes
}

/// A live session for the public client `app`.
pub(crate) fn session(id: &str) -> SessionPut {
    SessionPut {
        id: Some(id.into()),
        client_id: "app".into(),
        redirect_uri: REDIRECT.into(),
        code_challenge: Some(CHALLENGE.into()),
        ttl_secs: Some(86_400),
        ..Default::default()
    }
}

/// A kill can cut a WAL record short. Writes acknowledged by the next run must survive the
/// run after it: SurrealKV on its own appends them after the torn bytes and, at the following
/// start, "repairs" the segment by truncating at those bytes, losing them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_acknowledged_after_a_torn_wal_tail_survive_the_next_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("db");
    let port = free_port();
    let mut child = start(&data, port);
    let client = connect_when_ready(port).await;
    client.register(crate::support::public_client("app").into()).await.expect("client.register");
    let mut acked = Vec::new();
    fn partial_header(_: &Path) -> Vec<u8> {
        vec![0x13, 0x37, 0x00]
    }
    type Tear = fn(&Path) -> Vec<u8>;
    let tears: [(&str, Tear); 2] = [("partial-header", partial_header), ("first-fragment-only", first_fragment_only)];
    // Acknowledges 20 sessions named `prefix-N`, then kills the server.
    async fn put_then_kill(port: u16, prefix: &str, child: &mut Child, acked: &mut Vec<String>) {
        let client = connect_when_ready(port).await;
        for i in 0..20 {
            let id = format!("{prefix}-{i}");
            client.put(session(&id).into()).await.expect("session.put");
            acked.push(id);
        }
        drop(client);
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }
    for (round, (what, tear)) in tears.iter().enumerate() {
        put_then_kill(port, &format!("r{round}-before"), &mut child, &mut acked).await;
        tear_wal_tail(&data, &tear(&data));
        child = start(&data, port);
        put_then_kill(port, &format!("r{round}-after-{what}"), &mut child, &mut acked).await;
        child = start(&data, port);
    }
    let lost = lost_sessions(&connect_when_ready(port).await, &acked).await;
    child.kill().expect("stop");
    child.wait().expect("reap");
    assert!(lost.is_empty(), "{} of {} acknowledged sessions lost: {lost:?}", lost.len(), acked.len());
}

/// The sessions of `ids` that `client` does not find.
async fn lost_sessions(client: &WsClient, ids: &[String]) -> Vec<String> {
    let mut lost = Vec::new();
    for id in ids {
        if SessionApiClient::get(client, SessionRef { id: id.clone() }.into()).await.is_err() {
            lost.push(id.clone());
        }
    }
    lost
}

/// Every file under `dir`, read whole.
fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                files.push((path, bytes));
            }
        }
    }
    files
}

fn holds(files: &[(std::path::PathBuf, Vec<u8>)], needle: &str) -> Option<std::path::PathBuf> {
    files.iter().find(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle.as_bytes())).map(|(p, _)| p.clone())
}

// Answers recorded under idempotency keys survive SIGKILL with the change they belong to (a
// retry after the restart gets them, secrets minted again), and no secret a keyed call minted
// or was given is anywhere in the data files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_answers_survive_sigkill_and_no_secret_is_stored_in_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db");
    let port = free_port();
    let mut child = start(&data, port);
    let client = connect_when_ready(port).await;
    // A value that is stored as it is: the scan below must find it, or it could not find a
    // secret either.
    let marker = "marker-client-name-stored-as-is";
    let register = ClientRegister {
        client_id: Some("conf".into()),
        metadata: ClientMetadata {
            redirect_uris: vec![REDIRECT.into()],
            client_name: Some(marker.into()),
            ..Default::default()
        },
        idempotency_key: Some("register-1".into()),
        ..Default::default()
    };
    let registered = client.register(register.clone().into()).await.expect("client.register");
    let issue_code = CodeIssue {
        client_id: Some("conf".into()),
        user_id: Some("alice".into()),
        redirect_uri: Some(REDIRECT.into()),
        code_challenge: Some(CHALLENGE.into()),
        idempotency_key: Some("code-1".into()),
        ..Default::default()
    };
    let code = CodeApiClient::issue(&client, issue_code.clone().into()).await.expect("code.issue");
    let consume =
        CodeConsume { idempotency_key: Some("consume-1".into()), ..TestApp::consume_params(&code.code, "conf") };
    let consumed = client.consume(consume.clone().into()).await.expect("code.consume");
    let supplied = "caller-supplied-refresh-token-0123456789abcdef".to_string();
    let issue_token = TokenIssue {
        client_id: "conf".into(),
        user_id: "alice".into(),
        grant_id: Some(consumed.grant_id.clone()),
        token: Some(supplied.clone()),
        idempotency_key: Some("token-1".into()),
        ..Default::default()
    };
    let first = TokenApiClient::issue(&client, issue_token.clone().into()).await.expect("token.issue");
    let rotate = TokenRotate {
        token: first.token.clone(),
        client_id: "conf".into(),
        idempotency_key: Some("rotate-1".into()),
        ..Default::default()
    };
    let next = client.rotate(rotate.clone().into()).await.expect("token.rotate");
    drop(client);
    child.kill().unwrap();
    child.wait().unwrap();

    let mut child = start(&data, port);
    let client = connect_when_ready(port).await;
    assert_eq!(client.register(register.into()).await.expect("register again"), registered);
    assert_eq!(CodeApiClient::issue(&client, issue_code.into()).await.expect("code.issue again"), code);
    assert_eq!(client.consume(consume.into()).await.expect("code.consume again"), consumed);
    assert_eq!(TokenApiClient::issue(&client, issue_token.into()).await.expect("token.issue again"), first);
    assert_eq!(client.rotate(rotate.into()).await.expect("token.rotate again"), next);
    TokenApiClient::get(&client, TokenRef { token: next.token.clone() }.into())
        .await
        .expect("the retried calls applied nothing again: the rotated-to token is active");
    drop(client);
    child.kill().unwrap();
    child.wait().unwrap();

    let files = files_under(&data);
    assert!(holds(&files, marker).is_some(), "the scan sees stored text");
    let secrets = [registered.client_secret.clone().expect("a minted client secret"), code.code, supplied, next.token];
    for secret in &secrets {
        assert_eq!(holds(&files, secret), None, "a secret is stored in plaintext");
    }
}

/// The numbers of the write-ahead log segments in `data`.
fn wal_segments(data: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(data.join("wal")) else { return Vec::new() };
    let mut numbers: Vec<u64> =
        entries.flatten().filter_map(|e| e.path().file_stem()?.to_str()?.parse().ok()).collect();
    numbers.sort_unstable();
    numbers
}

// SurrealKV appends a commit to its write-ahead log, then applies it to its write buffer; the
// commit that does not fit rotates buffer and log, and flushing the old buffer deletes the old
// log segment. The real binary with a 16 MiB write buffer, four writers putting sessions with
// 16 KiB of data until the log has rotated twice and the rotated buffers' segments are gone,
// then SIGKILL while they go on: every session acknowledged before the kill must be there
// after the restart, among them the commits that caused each rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_acknowledged_across_write_buffer_rotations_survive_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("db");
    let port = free_port();
    let buffer = ["--write-buffer-bytes", "16777216"];
    let mut child = start_with(&data, port, &buffer);
    let admin = connect_when_ready(port).await;
    admin.register(crate::support::public_client("app").into()).await.expect("client.register");
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            let client = connect_when_ready(port).await;
            for i in 0.. {
                let id = format!("w{w}-{i:06}");
                let put = SessionPut {
                    id: Some(id.clone()),
                    client_id: "app".into(),
                    redirect_uri: REDIRECT.into(),
                    data: Some(json!({ "pad": "x".repeat(16 << 10) })),
                    ttl_secs: Some(86_400),
                    ..Default::default()
                };
                let Ok(_) = client.put(put.into()).await else { return };
                acked.lock().unwrap().push(id);
            }
        }));
    }
    let started = Instant::now();
    loop {
        let segments = wal_segments(&data);
        if segments.len() == 1 && segments[0] >= 2 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "the log did not rotate twice: {segments:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    for writer in writers {
        writer.await.expect("writer task");
    }

    let mut child = start_with(&data, port, &buffer);
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let lost = lost_sessions(&connect_when_ready(port).await, &acked).await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    eprintln!("{} sessions acknowledged across the rotations, {} lost", acked.len(), lost.len());
    assert!(lost.is_empty(), "acknowledged sessions lost: {lost:?}");
}
