//! `TestApp`: a real authstore on a real WebSocket, backed by a real SurrealDB.
//!
//! Each app runs on its own multi-threaded runtime (with the large stacks SurrealDB wants) in a
//! background thread, so tests drive it exactly as a remote client would. The storage backend
//! is `mem://`, or a database of its own on a real SurrealDB server process (see `remote.rs`).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use authstore::Application;
use authstore::background::Timings;
use authstore::clock::{Clock, ManualClock, SystemClock};
use authstore::config::Config;
use authstore::domain::Policy;
use authstore::domain::client::{self, Origin};
use authstore::rpc::api::{ClientApiClient, CodeApiClient, TokenApiClient};
use authstore::store::{Location, Store, StoreConfig};
use authstore::types::*;
use jsonrpsee::core::client::Error as ClientError;
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use tokio::sync::oneshot;

pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
pub const REDIRECT: &str = "http://127.0.0.1:9000/callback";

/// Where a test's data lives.
#[derive(Clone)]
pub enum Backend {
    Memory,
    Remote { url: String, user: String, pass: String, database: String },
}

impl Backend {
    /// A fresh database on the shared SurrealDB server process.
    pub fn remote() -> Self {
        let server = crate::remote::server();
        Backend::Remote {
            url: server.url.clone(),
            user: server.user.clone(),
            pass: server.pass.clone(),
            database: format!("t{}", authstore::secret::generate_id().replace(['-', '_'], "x")),
        }
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// The probe listener, when the configuration asked for one.
    pub probe: Option<SocketAddr>,
    pub clock: Arc<ManualClock>,
    /// A connected client; open more with [`TestApp::connect`].
    pub client: WsClient,
    api_key: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub struct Options {
    pub policy: Policy,
    pub backend: Backend,
    /// Use the real clock instead of a manual one.
    pub real_clock: bool,
    /// Background timings. By default the expiry scheduler is idle (one pass an hour), so
    /// tests of TTL-at-read see expired records still stored; tests of on-time expiry use
    /// [`Options::live_expiry`].
    pub timings: Timings,
    pub subscriber_lag_limit: usize,
    pub subscriber_send_timeout: Duration,
    pub connection_buffer: u32,
    pub socket_send_buffer: Option<u32>,
    /// Adjusts the rest of the server's configuration (limits, API keys...).
    pub tweak: fn(&mut Config),
    /// The key TestApp's own clients present, if the server requires one.
    pub api_key: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            policy: Policy::default(),
            backend: Backend::Memory,
            real_clock: false,
            // The scheduler off: tests move the clock by hand past deadlines and look.
            timings: Timings { expiry: false, ..Timings::default() },
            subscriber_lag_limit: 4096,
            subscriber_send_timeout: Duration::from_secs(5),
            connection_buffer: 1024,
            socket_send_buffer: None,
            tweak: |_| {},
            api_key: None,
        }
    }
}

impl Options {
    /// The expiry scheduler at its production pace.
    pub fn live_expiry(backend: Backend) -> Self {
        Options { backend, timings: Timings::default(), ..Options::default() }
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_on(backend: Backend) -> Self {
        Self::spawn_with(Options { backend, ..Options::default() }).await
    }

    pub async fn spawn_with(options: Options) -> Self {
        if std::env::var_os("TEST_LOG").is_some() {
            authstore::telemetry::init(authstore::config::LogFormat::Text);
        }
        let clock = Arc::new(ManualClock::starting_now());
        let app_clock: Arc<dyn Clock> = if options.real_clock { Arc::new(SystemClock) } else { clock.clone() };
        let mut config = Config::ephemeral();
        config.policy = options.policy;
        config.timings = options.timings;
        config.subscriber_lag_limit = options.subscriber_lag_limit;
        config.subscriber_send_timeout = options.subscriber_send_timeout;
        config.connection_buffer = options.connection_buffer;
        config.socket_send_buffer = options.socket_send_buffer;
        // A loaded test machine can take seconds per query; tests of the bound set their own.
        config.db_timeout = Duration::from_secs(60);
        (options.tweak)(&mut config);
        let api_key = options.api_key;
        if let Backend::Remote { url, user, pass, database } = options.backend {
            config.store = StoreConfig {
                location: Location::Remote(url),
                namespace: "authstore_test".into(),
                database,
                username: Some(user),
                password: Some(pass),
                memory: config.store.memory,
            };
        }
        let (addr_tx, addr_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("authstore-under-test".into())
            .stack_size(32 << 20)
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_stack_size(20 << 20)
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    let app = match Application::build(config, app_clock).await {
                        Ok(app) => app,
                        Err(e) => {
                            let _ = addr_tx.send(Err(format!("{e:#}")));
                            return;
                        }
                    };
                    let _ = addr_tx.send(Ok((app.local_addr(), app.probe_addr())));
                    let _ = app
                        .run_until_stopped(async {
                            let _ = stop_rx.await;
                        })
                        .await;
                });
            })
            .expect("spawn server thread");
        let (addr, probe) = addr_rx.await.expect("server thread").expect("server started");
        let client = connect_with(addr, api_key.as_deref()).await;
        TestApp { addr, probe, clock, client, api_key, stop: Some(stop_tx), thread: Some(thread) }
    }

    /// Another, independent WebSocket connection.
    pub async fn connect(&self) -> WsClient {
        connect_with(self.addr, self.api_key.as_deref()).await
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    pub fn advance(&self, secs: i64) {
        self.clock.advance(chrono::Duration::seconds(secs));
    }

    /// Registers a public client that may use codes and refresh tokens.
    pub async fn register_client(&self, client_id: &str) -> Client {
        self.client.register(public_client(client_id).into()).await.expect("client.register")
    }

    /// Issues a code for `client_id` / `user` with the RFC 7636 example challenge.
    pub async fn issue_code(&self, client_id: &str, user: &str) -> IssuedCode {
        CodeApiClient::issue(
            &self.client,
            CodeIssue {
                client_id: Some(client_id.into()),
                user_id: Some(user.into()),
                redirect_uri: Some(REDIRECT.into()),
                code_challenge: Some(CHALLENGE.into()),
                scope: Some("read write".into()),
                resource: Some("https://mcp.example/".into()),
                ..Default::default()
            }
            .into(),
        )
        .await
        .expect("code.issue")
    }

    pub async fn issue_token(&self, client_id: &str, user: &str, grant_id: Option<String>) -> IssuedToken {
        TokenApiClient::issue(
            &self.client,
            TokenIssue {
                client_id: client_id.into(),
                user_id: user.into(),
                grant_id,
                scope: Some("read write".into()),
                ..Default::default()
            }
            .into(),
        )
        .await
        .expect("token.issue")
    }

    pub fn consume_params(code: &str, client_id: &str) -> CodeConsume {
        CodeConsume {
            code: code.into(),
            client_id: client_id.into(),
            redirect_uri: REDIRECT.into(),
            code_verifier: VERIFIER.into(),
            resource: None,
            idempotency_key: None,
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A public MCP client (PKCE, no secret) that may use codes and refresh tokens.
/// Registers the public client `app`, with [`REDIRECT`], straight on `store` (for tests below
/// the wire).
pub async fn register_app(store: &Store, now: chrono::DateTime<chrono::Utc>) {
    let meta = ClientMetadata {
        redirect_uris: vec![REDIRECT.into()],
        token_endpoint_auth_method: Some("none".into()),
        ..Default::default()
    };
    let meta = client::metadata(meta, Origin::Registered).unwrap();
    store.client_register(client::registration("app".into(), meta, None), None, now).await.unwrap();
}

pub fn public_client(client_id: &str) -> ClientRegister {
    ClientRegister {
        client_id: Some(client_id.into()),
        metadata: ClientMetadata {
            redirect_uris: vec![REDIRECT.into()],
            token_endpoint_auth_method: Some("none".into()),
            grant_types: Some(vec!["authorization_code".into(), "refresh_token".into()]),
            ..Default::default()
        },
        client_secret: None,
        idempotency_key: None,
    }
}

pub async fn connect_with(addr: SocketAddr, api_key: Option<&str>) -> WsClient {
    let mut headers = http::HeaderMap::new();
    if let Some(key) = api_key {
        headers.insert(http::header::AUTHORIZATION, format!("Bearer {key}").parse().expect("header"));
    }
    WsClientBuilder::default()
        .request_timeout(std::time::Duration::from_secs(120))
        .set_headers(headers)
        .build(format!("ws://{addr}"))
        .await
        .expect("websocket connect")
}

/// The JSON-RPC error code and `data.reason` of a failed call.
pub fn error_of<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (i32, String) {
    match result {
        Err(ClientError::Call(e)) => {
            let reason = e
                .data()
                .and_then(|d| serde_json::from_str::<serde_json::Value>(d.get()).ok())
                .and_then(|d| d.get("reason").and_then(|r| r.as_str()).map(str::to_string))
                .unwrap_or_default();
            (e.code(), reason)
        }
        other => panic!("expected a JSON-RPC error, got {other:?}"),
    }
}

/// The `data.field` of an invalid-params error.
pub fn field_of<T: std::fmt::Debug>(result: Result<T, ClientError>) -> String {
    match result {
        Err(ClientError::Call(e)) if e.code() == -32602 => e
            .data()
            .and_then(|d| serde_json::from_str::<serde_json::Value>(d.get()).ok())
            .and_then(|d| d.get("field").and_then(|f| f.as_str()).map(str::to_string))
            .unwrap_or_default(),
        other => panic!("expected invalid params, got {other:?}"),
    }
}
