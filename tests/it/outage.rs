//! Losing the database: a TCP proxy the test controls sits between authstore and the real
//! SurrealDB server process. It can cut every connection at the worst moment (right after the
//! server answered a commit, without passing the answer on), and it can play a stopped server
//! (every connection dropped, new ones closed at once) and bring it back.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use authstore::rpc::api::{ClientApiClient, CodeApiClient, SessionApiClient, TokenApiClient};
use authstore::types::*;
use jsonrpsee::core::client::Error as ClientError;
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use surrealdb::opt::auth::Root;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::remote::{free_port, server};
use crate::support::{Backend, Options, REDIRECT, TestApp, public_client};

/// A TCP proxy to the shared SurrealDB server.
struct Proxy {
    port: u16,
    state: Arc<ProxyState>,
}

struct ProxyState {
    upstream: String,
    /// Playing a stopped server: new connections are closed at once.
    down: AtomicBool,
    /// Bumped to close every open connection.
    generation: watch::Sender<u64>,
    /// One shot: the first server→client chunk containing these bytes is not passed on, and
    /// every connection is closed at once.
    cut_on: Mutex<Option<Vec<u8>>>,
    /// How many cuts happened.
    cuts: AtomicUsize,
}

impl ProxyState {
    fn close_all(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

impl Proxy {
    async fn start() -> Self {
        let upstream = server().url.trim_start_matches("ws://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(ProxyState {
            upstream,
            down: AtomicBool::new(false),
            generation: watch::channel(0).0,
            cut_on: Mutex::new(None),
            cuts: AtomicUsize::new(0),
        });
        let accepting = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if accepting.down.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                tokio::spawn(relay(client, accepting.clone()));
            }
        });
        Proxy { port, state }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// Drops the connection, without passing it on, at the first answer containing `marker`.
    fn cut_on(&self, marker: &[u8]) {
        *self.state.cut_on.lock().unwrap() = Some(marker.to_vec());
    }

    fn cuts(&self) -> usize {
        self.state.cuts.load(Ordering::SeqCst)
    }

    /// The database goes away: every connection is dropped and new ones are closed at once.
    fn stop(&self) {
        self.state.down.store(true, Ordering::SeqCst);
        self.state.close_all();
    }

    fn resume(&self) {
        self.state.down.store(false, Ordering::SeqCst);
    }
}

/// Copies bytes both ways until either side closes, the proxy closes everything, or a cut.
async fn relay(client: TcpStream, state: Arc<ProxyState>) {
    let Ok(upstream) = TcpStream::connect(&state.upstream).await else { return };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let mut closed = state.generation.subscribe();
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = upstream.into_split();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if server_tx.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 256 * 1024];
        // The end of the previous chunk, so a marker split across reads is still found.
        let mut tail: Vec<u8> = Vec::new();
        loop {
            match server_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let chunk = &buf[..n];
                    let cut = {
                        let mut marker = state.cut_on.lock().unwrap();
                        let seen = marker.as_ref().is_some_and(|m| {
                            let mut window = tail.clone();
                            window.extend_from_slice(chunk);
                            window.windows(m.len()).any(|w| w == m.as_slice())
                        });
                        if seen {
                            *marker = None;
                        }
                        seen
                    };
                    if cut {
                        state.cuts.fetch_add(1, Ordering::SeqCst);
                        state.close_all();
                        return;
                    }
                    tail = chunk[n.saturating_sub(64)..].to_vec();
                    if client_tx.write_all(chunk).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
        _ = closed.changed() => {}
    }
}

/// A fresh database on the shared server, reached through `proxy`.
fn through(proxy: &Proxy) -> (Backend, String) {
    let server = server();
    let database = format!("o{}", authstore::secret::generate_id().replace(['-', '_'], "x"));
    let backend = Backend::Remote {
        url: proxy.url(),
        user: server.user.clone(),
        pass: server.pass.clone(),
        database: database.clone(),
    };
    (backend, database)
}

/// A direct connection to the test's database, bypassing the proxy and authstore.
async fn direct(database: &str) -> surrealdb::Surreal<surrealdb::engine::any::Any> {
    let server = server();
    let db = surrealdb::engine::any::connect(server.url.as_str()).await.unwrap();
    db.signin(Root { username: server.user.clone(), password: server.pass.clone() }).await.unwrap();
    db.use_ns("authstore_test").use_db(database).await.unwrap();
    db
}

/// The JSON-RPC code, `data.reason` and `data.outcome` of a failed call.
fn failure<T: std::fmt::Debug>(result: &Result<T, ClientError>) -> Option<(i32, String, Option<String>)> {
    match result {
        Err(ClientError::Call(e)) => {
            let data = e.data().and_then(|d| serde_json::from_str::<serde_json::Value>(d.get()).ok());
            let field = |name: &str| data.as_ref().and_then(|d| d.get(name)?.as_str().map(str::to_string));
            Some((e.code(), field("reason").unwrap_or_default(), field("outcome")))
        }
        Ok(_) => None,
        Err(other) => panic!("expected a JSON-RPC answer, got {other:?}"),
    }
}

/// Whether a failed call told the caller that nothing was changed, which entitles it to
/// simply try again. Only `data.outcome = "unknown"` says otherwise.
fn says_unchanged<T: std::fmt::Debug>(result: &Result<T, ClientError>) -> bool {
    matches!(failure(result), Some((1005, _, outcome)) if outcome.as_deref() != Some("unknown"))
}

/// The grant was not revoked: a token can still be minted into it.
async fn assert_grant_survived(app: &TestApp, round: usize, grant_id: &str) {
    let minted = TokenApiClient::issue(
        &app.client,
        TokenIssue {
            client_id: "app".into(),
            user_id: format!("user-{round}"),
            grant_id: Some(grant_id.to_string()),
            ..Default::default()
        }
        .into(),
    )
    .await;
    assert!(minted.is_ok(), "round {round}: the grant survived the lost answer: {minted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_code_burn_whose_commit_answer_is_lost_is_not_replayed_as_a_code_replay() {
    let proxy = Proxy::start().await;
    let (backend, _) = through(&proxy);
    let app = TestApp::spawn_with(Options { backend, ..Options::default() }).await;
    app.register_client("app").await;
    for round in 0..3 {
        let code = app.issue_code("app", &format!("user-{round}")).await;
        // The server's answer to the burn is the first one that mentions `consumed_at`.
        proxy.cut_on(b"consumed_at");
        let cuts = proxy.cuts();
        let params = TestApp::consume_params(&code.code, "app");
        let mut answer = CodeApiClient::consume(&app.client, params.clone().into()).await;
        assert_eq!(proxy.cuts(), cuts + 1, "round {round}: the proxy cut the burn's answer");
        if says_unchanged(&answer) {
            // Told that nothing was changed, a client may simply try again.
            answer = CodeApiClient::consume(&app.client, params.into()).await;
        }
        eprintln!(
            "round {round}: code.consume answered {:?}",
            answer.as_ref().map(|_| "the code").map_err(|_| failure(&answer))
        );
        match &answer {
            Ok(consumed) => assert_eq!(consumed.grant_id, code.grant_id, "round {round}"),
            other => assert_eq!(
                failure(other),
                Some((1005, "storage".into(), Some("unknown".into()))),
                "round {round}: the legitimate caller gets its code or hears the outcome is unknown"
            ),
        }
        assert_grant_survived(&app, round, &code.grant_id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_put_whose_commit_answer_is_lost_applies_once() {
    let proxy = Proxy::start().await;
    let (backend, database) = through(&proxy);
    let app = TestApp::spawn_with(Options { backend, ..Options::default() }).await;
    app.register_client("app").await;
    let db = direct(&database).await;
    for round in 0..3 {
        let id = format!("s-{round}");
        let put = |state: &str| SessionPut {
            id: Some(id.clone()),
            client_id: "app".into(),
            redirect_uri: REDIRECT.into(),
            state: Some(state.into()),
            ..Default::default()
        };
        // On a loaded machine even this put can fail; what counts is that the cut one applies once.
        let _ = until_ok(Duration::from_secs(120), || app.client.put(put("first").into())).await;
        let rev = |db: surrealdb::Surreal<surrealdb::engine::any::Any>, id: String| async move {
            let mut rows =
                db.query("SELECT VALUE rev FROM ONLY type::record('session', $id)").bind(("id", id)).await.unwrap();
            rows.take::<Option<i64>>(0).unwrap()
        };
        let before = rev(db.clone(), id.clone()).await.expect("the session exists");
        let marker = format!("second-{}", authstore::secret::generate_id());
        proxy.cut_on(marker.as_bytes());
        let cuts = proxy.cuts();
        let mut answer = app.client.put(put(&marker).into()).await;
        assert_eq!(proxy.cuts(), cuts + 1, "round {round}: the proxy cut the put's answer");
        if says_unchanged(&answer) {
            answer = app.client.put(put(&marker).into()).await;
        }
        eprintln!(
            "round {round}: session.put answered {:?}",
            answer.as_ref().map(|_| "the session").map_err(|_| failure(&answer))
        );
        match &answer {
            Ok(session) => assert_eq!(session.state.as_deref(), Some(marker.as_str())),
            other => assert_eq!(failure(other), Some((1005, "storage".into(), Some("unknown".into())))),
        }
        assert_eq!(
            rev(db.clone(), id.clone()).await,
            Some(before + 1),
            "round {round}: one more put, one more revision"
        );
    }
}

/// An `authstore serve` process on the proxy, its log collected.
struct Instance {
    child: Child,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

/// The default bound, stated so the test does not depend on it.
const DB_TIMEOUT_MS: u64 = 5000;
const SHUTDOWN_SECS: u64 = 3;
/// What the store logs, once, when the database stops answering, and when it is back.
const OUTAGE: &str = "database unreachable; calls answer 1005";
const RECOVERY: &str = "database reachable again";

impl Instance {
    fn start(proxy: &Proxy, database: &str) -> Self {
        let server = server();
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_authstore"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--db", &proxy.url()])
            .args(["--db-namespace", "outage", "--db-database", database])
            .env("AUTHSTORE_DB_USER", &server.user)
            .env("AUTHSTORE_DB_PASS", &server.pass)
            .env("AUTHSTORE_DB_TIMEOUT_MS", DB_TIMEOUT_MS.to_string())
            .env("AUTHSTORE_SHUTDOWN_TIMEOUT_SECS", SHUTDOWN_SECS.to_string())
            .env("RUST_LOG", "warn,authstore=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start authstore");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stderr, lines) = (child.stderr.take().unwrap(), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{port}] {line}");
                lines.lock().unwrap().push(line);
            }
        });
        Instance { child, port, log }
    }

    async fn connect(&self) -> WsClient {
        let started = Instant::now();
        loop {
            let built = WsClientBuilder::default()
                .request_timeout(Duration::from_secs(60))
                .build(format!("ws://127.0.0.1:{}", self.port))
                .await;
            match built {
                Ok(client) => return client,
                Err(_) if started.elapsed() < Duration::from_secs(60) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("instance on {} did not come up: {e}", self.port),
            }
        }
    }

    /// `GET /ready`: its status and how long it took, or `None` after 10 s without an answer.
    async fn ready(&self) -> (Option<u16>, Duration) {
        let started = Instant::now();
        let asked = async {
            let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
            let request = format!("GET /ready HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n", self.port);
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await.ok()?;
            String::from_utf8_lossy(&response).split(' ').nth(1)?.parse().ok()
        };
        let status = tokio::time::timeout(Duration::from_secs(10), asked).await.ok().flatten();
        (status, started.elapsed())
    }

    fn lines_with(&self, text: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|line| line.contains(text)).count()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `call` succeeds, at most `limit`.
async fn until_ok<T, F, Fut>(limit: Duration, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let started = Instant::now();
    loop {
        match call().await {
            Ok(value) => return value,
            Err(e) if started.elapsed() < limit => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("still failing after {limit:?}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_fails_calls_fast_is_logged_once_and_does_not_hold_shutdown() {
    let proxy = Proxy::start().await;
    let database = format!("o{}", authstore::secret::generate_id().replace(['-', '_'], "x"));
    let mut instances = [Instance::start(&proxy, &database), Instance::start(&proxy, &database)];
    let clients = [instances[0].connect().await, instances[1].connect().await];
    // On a loaded machine a first query can outlast the timeout; start from a settled state.
    for instance in &instances {
        let started = Instant::now();
        while instance.ready().await.0 != Some(200) {
            assert!(started.elapsed() < Duration::from_secs(120), "instance never became ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    clients[0].register(public_client("app").into()).await.unwrap();
    for (instance, client) in instances.iter().zip(&clients) {
        until_ok(Duration::from_secs(120), || {
            ClientApiClient::get(client, ClientRef { client_id: "app".into() }.into())
        })
        .await;
        let started = Instant::now();
        while instance.ready().await.0 != Some(200) {
            assert!(started.elapsed() < Duration::from_secs(120), "/ready never answered 200");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    let logged_before: Vec<usize> = instances.iter().map(|i| i.log.lock().unwrap().len()).collect();
    let before: Vec<(usize, usize)> =
        instances.iter().map(|i| (i.lines_with(OUTAGE), i.lines_with(RECOVERY))).collect();
    proxy.stop();
    let bound = Duration::from_millis(DB_TIMEOUT_MS) + Duration::from_secs(5);
    for round in 0..3 {
        for (instance, client) in instances.iter().zip(&clients) {
            let started = Instant::now();
            let read = tokio::time::timeout(
                Duration::from_secs(15),
                ClientApiClient::get(client, ClientRef { client_id: "app".into() }.into()),
            )
            .await
            .unwrap_or_else(|_| panic!("round {round}: client.get got no answer in 15 s"));
            assert!(started.elapsed() < bound, "round {round}: client.get took {:?}", started.elapsed());
            assert_eq!(
                failure(&read),
                Some((1005, "storage".into(), Some("unchanged".into()))),
                "round {round}: a read changes nothing"
            );
            let started = Instant::now();
            let put = SessionPut {
                id: Some(format!("during-{round}")),
                client_id: "app".into(),
                redirect_uri: REDIRECT.into(),
                ..Default::default()
            };
            let write = tokio::time::timeout(Duration::from_secs(15), client.put(put.into()))
                .await
                .unwrap_or_else(|_| panic!("round {round}: session.put got no answer in 15 s"));
            assert!(started.elapsed() < bound, "round {round}: session.put took {:?}", started.elapsed());
            assert!(
                matches!(failure(&write), Some((1005, reason, Some(_))) if reason == "storage"),
                "round {round}: {write:?}"
            );
            let (status, took) = instance.ready().await;
            assert_eq!(status, Some(503), "round {round}: /ready during the outage");
            assert!(took < Duration::from_secs(2), "round {round}: /ready took {took:?}");
        }
    }

    for (instance, (down, up)) in instances.iter().zip(&before) {
        assert_eq!(instance.lines_with(OUTAGE), down + 1, "the outage is logged once");
        assert_eq!(instance.lines_with(RECOVERY), *up, "and is not over");
    }

    proxy.resume();
    for (instance, client) in instances.iter().zip(&clients) {
        until_ok(Duration::from_secs(120), || {
            ClientApiClient::get(client, ClientRef { client_id: "app".into() }.into())
        })
        .await;
        let put = SessionPut {
            id: Some(format!("after-{}", instance.port)),
            client_id: "app".into(),
            redirect_uri: REDIRECT.into(),
            ..Default::default()
        };
        client.put(put.into()).await.expect("writes work again");
        let started = Instant::now();
        while instance.ready().await.0 != Some(200) {
            assert!(started.elapsed() < Duration::from_secs(120), "/ready never answered 200");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for instance in &instances {
        // A server slow to take the reconnection back can add a short outage of its own, but
        // each outage is logged once and so is its end.
        let started = Instant::now();
        while instance.lines_with(RECOVERY) != instance.lines_with(OUTAGE) {
            assert!(started.elapsed() < Duration::from_secs(120), "an outage without its recovery logged");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            instance.lines_with(RECOVERY),
            instance.lines_with(OUTAGE),
            "the recovery is logged once per outage"
        );
    }
    for (instance, from) in instances.iter().zip(logged_before) {
        let log = instance.log.lock().unwrap();
        let warnings: Vec<&String> = log[from..]
            .iter()
            .filter(|l| l.contains("WARN") && l.contains("authstore") && !l.contains(OUTAGE))
            .collect();
        assert!(warnings.is_empty(), "nothing else warns per call or per pass: {warnings:#?}");
    }

    // Gone again, then SIGTERM: each process ends within its shutdown timeout.
    proxy.stop();
    let _ = tokio::time::timeout(
        Duration::from_secs(15),
        ClientApiClient::get(&clients[0], ClientRef { client_id: "app".into() }.into()),
    )
    .await;
    for instance in &instances {
        let status = Command::new("kill").args(["-TERM", &instance.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }
    let started = Instant::now();
    for instance in &mut instances {
        let limit = Duration::from_secs(SHUTDOWN_SECS + 3);
        loop {
            if instance.child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(started.elapsed() < limit, "authstore still running {limit:?} after SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The case idempotency keys exist for, on the database side: the answer to a keyed consume's
/// commit is lost between SurrealDB and authstore, the caller hears `1005` and retries with the
/// same key. The retry must get the grant (not `consumed`), and the grant must survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keyed_consume_whose_commit_answer_is_lost_is_completed_by_its_retry() {
    let proxy = Proxy::start().await;
    let (backend, _) = through(&proxy);
    let app = TestApp::spawn_with(Options { backend, ..Options::default() }).await;
    app.register_client("app").await;
    for round in 0..3 {
        let code = app.issue_code("app", &format!("user-{round}")).await;
        proxy.cut_on(b"consumed_at");
        let cuts = proxy.cuts();
        let params = CodeConsume {
            idempotency_key: Some(authstore::secret::generate_id()),
            ..TestApp::consume_params(&code.code, "app")
        };
        let first = CodeApiClient::consume(&app.client, params.clone().into()).await;
        assert_eq!(proxy.cuts(), cuts + 1, "round {round}: the proxy cut the burn's answer");
        eprintln!("round {round}: first answer {:?}", first.as_ref().map(|_| "the code").map_err(|_| failure(&first)));
        let retried =
            until_ok(Duration::from_secs(60), || CodeApiClient::consume(&app.client, params.clone().into())).await;
        assert_eq!(retried.grant_id, code.grant_id, "round {round}");
        assert_grant_survived(&app, round, &code.grant_id).await;
    }
}
