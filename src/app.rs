//! Assembles the service: store, RPC module and listener.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use jsonrpsee::core::BoxError;
use jsonrpsee::server::middleware::rpc::RpcServiceBuilder;
use jsonrpsee::server::{
    HttpBody, Methods, PingConfig, Server, ServerConfig, ServerHandle, StopHandle, serve_with_graceful_shutdown,
    stop_channel,
};
use tower::Service as _;

use crate::background::Background;
use crate::clock::Clock;
use crate::config::Config;
use crate::http::{ApiKeyLayer, ProbeLayer, Probes};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::rpc::{self, middleware::CallGuard, middleware::ObjectParams};
use crate::secret;
use crate::stall::{BacklogTicket, StallGuard};
use crate::store::Store;

/// A bound, running server. Tests build it on port 0 and read [`Application::local_addr`].
pub struct Application {
    addr: SocketAddr,
    handle: ServerHandle,
    /// The probe listener (`--probe-listen`): its address and handle.
    probe: Option<(SocketAddr, ServerHandle)>,
    store: Store,
    background: Background,
    closing: tokio::sync::watch::Sender<bool>,
    shutdown_timeout: Duration,
}

impl Application {
    /// Opens the store (applying the schema), binds the listener and starts serving.
    pub async fn build(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let store = Store::open_bounded(&config.store, config.db_timeout)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("opening the database at {:?}", config.store.location))?;
        let (closing, closing_rx) = tokio::sync::watch::channel(false);
        let hub = Hub::new(config.subscriber_lag_limit, closing_rx);
        let metrics = Arc::new(Metrics::new());
        let background =
            Background::start(store.clone(), clock.clone(), hub.clone(), metrics.clone(), config.timings).await;
        let idempotency_secret = match &config.idempotency_secret {
            Some(configured) => configured.0.clone(),
            None => {
                tracing::warn!(
                    "no --idempotency-secret (AUTHSTORE_IDEMPOTENCY_SECRET) is set: secrets minted under an \
                     idempotency key derive from a secret kept in the database, so a copy of the database \
                     plus a guessable key yields them (docs/decisions.md)"
                );
                stored_idempotency_secret(&store).await.context("reading the idempotency secret")?
            }
        };
        let cx = Arc::new(rpc::Context {
            store: store.clone(),
            policy: config.policy.clone(),
            clock: clock.clone(),
            started_at: clock.now(),
            hub,
            subscriber_send_timeout: config.subscriber_send_timeout,
            metrics: metrics.clone(),
            idempotency_secret_id: secret::server_secret_id(idempotency_secret.as_bytes()),
            idempotency_secret: idempotency_secret.into_bytes(),
        });
        let module = rpc::module(cx).context("registering methods")?;
        metrics.set_methods(module.method_names());
        let mut server_config = ServerConfig::builder()
            .max_request_body_size(config.max_message_bytes)
            .max_response_body_size(config.max_message_bytes)
            .max_connections(config.max_connections)
            .max_subscriptions_per_connection(config.max_subscriptions_per_connection)
            .set_message_buffer_capacity(config.connection_buffer.max(1));
        if let Some((interval, inactive)) = config.ws_ping {
            server_config =
                server_config.enable_ws_ping(PingConfig::new().ping_interval(interval).inactive_limit(inactive));
        }
        let server_config = server_config.build();
        let probes = Arc::new(Probes { store: store.clone(), metrics: metrics.clone(), clock: clock.clone() });
        let probe = match config.probe_listen {
            Some(at) => Some(serve_probes(at, probes.clone())?),
            None => None,
        };
        let max_in_flight = config.max_in_flight_per_connection;
        let rpc_metrics = metrics.clone();
        let listener =
            bind(config.listen, config.socket_send_buffer).with_context(|| format!("binding {}", config.listen))?;
        let listener =
            tokio::net::TcpListener::from_std(listener).with_context(|| format!("serving on {}", config.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        // One builder for the whole listener: its clones share the connection guard (the
        // `max_connections` limit) and the connection ids.
        let services = Server::builder()
            .set_config(server_config)
            .set_http_middleware(
                tower::ServiceBuilder::new().layer(ApiKeyLayer { keys: config.api_keys.clone(), probes }),
            )
            .set_rpc_middleware(
                RpcServiceBuilder::new()
                    .layer_fn(move |inner| CallGuard::new(inner, max_in_flight, rpc_metrics.clone()))
                    .layer_fn(ObjectParams::new),
            )
            .to_service_builder();
        let methods: Methods = module.into();
        // Frames in hand per connection before it is read no further: each call in flight holds
        // two tickets (its task's and its request's), and room for as many again waiting.
        let backlog = max_in_flight.saturating_mul(4);
        // Answers waiting for a slow reader: one largest message's worth (the count is never
        // above what really waits, so a larger answer alone never holds reading for long).
        let guard = Guard {
            stall_limit: config.write_stall,
            read_ahead: config.max_message_bytes as usize,
            backlog,
            unsent_budget: config.max_message_bytes as usize,
        };
        let handle = serve_guarded(listener, guard, move |io, ticket, stop| {
            // One service (one connection id) per TCP connection, as jsonrpsee's own accept
            // loop builds it. hyper hands over `Request<Incoming>`; the HTTP middleware takes
            // jsonrpsee's boxed body, which its own loop converts to and this one must too.
            let mut service = services.clone().build(methods.clone(), stop.clone());
            // The ticket counts a WebSocket's frames in hand. Plain HTTP requests carry none: one
            // at a time on HTTP/1, and up to hyper's stream limit on HTTP/2, where holding reads
            // back would also hold back the bodies of requests already counted.
            let service = tower::service_fn(move |mut request: http::Request<_>| {
                if jsonrpsee::server::ws::is_upgrade_request(&request) {
                    request.extensions_mut().insert(ticket.clone());
                }
                service.call(request.map(HttpBody::new))
            });
            serve_with_graceful_shutdown(io, service, stop.shutdown())
        });
        tracing::info!(%addr, storage = store.kind(), "authstore listening");
        Ok(Self { addr, handle, probe, store, background, closing, shutdown_timeout: config.shutdown_timeout })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The probe listener's address, if one was configured.
    pub fn probe_addr(&self) -> Option<SocketAddr> {
        self.probe.as_ref().map(|(addr, _)| *addr)
    }

    /// Serves until `shutdown` resolves. Then subscriptions are closed with reason `shutdown`
    /// (and the cursor to resume from), the listener stops accepting, in-flight calls finish,
    /// the background loops and then the store's group-commit workers stop, and the database
    /// is closed (an embedded one writes its buffer out) and released. All of it within the
    /// shutdown timeout, whatever the database does: what is still running at the deadline is
    /// dropped.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::select! {
            () = shutdown => tracing::info!("shutting down"),
            () = self.handle.clone().stopped() => {}
        }
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        let _ = self.closing.send(true);
        // Give subscriptions a moment to write their closing notification before the
        // connections go away.
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Ignore "already stopped": either way the server is done accepting.
        let _ = self.handle.stop();
        if let Some((_, probe)) = &self.probe {
            let _ = probe.stop();
        }
        if tokio::time::timeout_at(deadline, self.handle.stopped()).await.is_err() {
            tracing::warn!(timeout = ?self.shutdown_timeout, "connections still open at the shutdown deadline; closing anyway");
        }
        self.background.stop_by(deadline).await;
        self.store.stop_workers_by(deadline).await;
        self.store.close_by(deadline).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Starts the probe listener on `at`: the probe routes without a key, nothing else.
fn serve_probes(at: SocketAddr, probes: Arc<Probes>) -> anyhow::Result<(SocketAddr, ServerHandle)> {
    let listener = bind(at, None).with_context(|| format!("binding the probe listener {at}"))?;
    let server = Server::builder()
        .set_http_middleware(tower::ServiceBuilder::new().layer(ProbeLayer(probes)))
        .build_from_tcp(listener)
        .with_context(|| format!("serving probes on {at}"))?;
    let addr = server.local_addr().context("reading the probe listener's address")?;
    tracing::info!(%addr, "probes (health, readiness, metrics) answered without a key");
    Ok((addr, server.start(jsonrpsee::RpcModule::new(()))))
}

/// Binds the listener. Accepted connections inherit its send buffer size when one is set.
fn bind(addr: SocketAddr, send_buffer: Option<u32>) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    if let Some(bytes) = send_buffer {
        socket.set_send_buffer_size(bytes)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)?.into_std()
}

/// What each connection's [`StallGuard`] is given.
#[derive(Debug, Clone, Copy)]
struct Guard {
    stall_limit: Duration,
    read_ahead: usize,
    backlog: usize,
    /// Bytes of computed answers waiting for the socket above which a connection is not read.
    unsent_budget: usize,
}

/// jsonrpsee's accept loop (`Server::start`), with each socket wrapped in a [`StallGuard`] so a
/// client that stops reading its answers is closed after `stall_limit` instead of holding its
/// connection and a growing backlog of answers. `serve` serves one connection until it closes,
/// or, once its stop handle fires, until what is in flight on it is answered.
///
/// The returned handle's `stop()` (or dropping every clone of it) ends the loop; as in
/// jsonrpsee, the listener stays open, not accepting, until every connection has finished, and
/// `stopped()` resolves once every connection, WebSockets included, is done.
fn serve_guarded<F, Fut>(listener: tokio::net::TcpListener, guard: Guard, serve: F) -> ServerHandle
where
    F: Fn(StallGuard, BacklogTicket, StopHandle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let (stop, handle) = stop_channel();
    tokio::spawn(async move {
        // Each connection task holds a sender; `recv` returns `None` once all have finished.
        let (running, mut all_finished) = tokio::sync::mpsc::channel::<()>(1);
        let stopped = stop.clone().shutdown();
        tokio::pin!(stopped);
        loop {
            let (socket, remote) = tokio::select! {
                // The stop first: a stream of new connections cannot hold it off.
                biased;
                () = &mut stopped => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::debug!(error = %e, "error while accepting a connection");
                        continue;
                    }
                },
            };
            // jsonrpsee's default; a socket that refuses it is dropped, as there.
            if let Err(e) = socket.set_nodelay(true) {
                tracing::warn!(%remote, error = %e, "could not set TCP_NODELAY; dropping the connection");
                continue;
            }
            let (io, ticket) =
                StallGuard::new(socket, guard.stall_limit, guard.read_ahead, guard.backlog, guard.unsent_budget);
            let connection = serve(io, ticket, stop.clone());
            let running = running.clone();
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(%remote, error = %e, "connection ended with an error");
                }
                drop(running);
            });
        }
        drop(running);
        while all_finished.recv().await.is_some() {}
        drop(listener);
    });
    handle
}

/// The server secret kept in the database, created on the first start. Nobody waits on a
/// start, so a database slow to answer (several instances starting on one loaded server) is
/// waited for up to the same bound the schema gets, instead of failing the start at the first
/// call timeout.
async fn stored_idempotency_secret(store: &Store) -> anyhow::Result<String> {
    let fresh = secret::generate_server_secret();
    let deadline = tokio::time::Instant::now() + crate::store::STARTUP_TIMEOUT;
    loop {
        match store.idempotency_secret(&fresh).await {
            Ok(secret) => return Ok(secret),
            Err(e) if e.is_outage() && tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "the database has not answered yet; waiting to read the idempotency secret");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => return Err(anyhow::anyhow!("{e}")),
        }
    }
}
