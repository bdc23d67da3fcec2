//! `authstore bench`: a load generator that drives a running server over real WebSockets with
//! N connections × M calls in flight, and Redis with the same tool at the same concurrency,
//! then prints throughput, latency percentiles and ratios to the baselines.

pub mod history;
mod raw;
mod resp;
pub mod scale;
pub mod soak;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};

use crate::domain::client::{self, Origin};
use crate::rpc::api::{ClientApiClient, CodeApiClient, ServerApiClient, SessionApiClient, TokenApiClient};
use crate::store::Store;
use crate::types::{
    ClientMetadata, ClientRegister, CodeConsume, CodeIssue, SessionPut, SessionRef, TokenIssue, TokenRef, TokenRotate,
};

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const REDIRECT: &str = "http://127.0.0.1:9/callback";
const ALL: &[&str] = &["ping", "session.put", "session.get", "token.get", "code.consume", "flow"];

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The server to drive.
    #[arg(long, default_value = "ws://127.0.0.1:8750")]
    pub url: String,
    /// API key, if the server requires one.
    #[arg(long, env = "AUTHSTORE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// WebSocket connections.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Calls in flight per connection.
    #[arg(long, default_value_t = 4)]
    pub in_flight: usize,
    /// Seconds per workload.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Workloads to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = ALL.iter().map(|s| s.to_string()).collect::<Vec<_>>())]
    pub workloads: Vec<String>,
    /// Records preloaded for the read workloads, and codes for `code.consume`.
    #[arg(long, default_value_t = 20_000)]
    pub preload: usize,
    /// After the full-speed runs, run every workload again at half of the rate it reached,
    /// for the latency at half of peak.
    #[arg(long)]
    pub half_peak: bool,
    /// A database URL (e.g. `surrealkv:///tmp/raw`, a fresh directory) on which to measure
    /// the raw SurrealDB ceiling: the store's statements, one query per call, in-process.
    #[arg(long)]
    pub raw: Option<String>,
    /// Redis servers to measure alongside, as LABEL=HOST:PORT (repeatable).
    #[arg(long = "redis")]
    pub redis: Vec<String>,
}

/// One workload's figures.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: String,
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latencies_us: Vec<u64>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// When a workload stops.
#[derive(Clone, Copy)]
enum Until {
    Elapsed(Duration),
    Count(u64),
}

/// Runs `op` from `workers` tasks until `until`; `op` returns `Ok(false)` when it has no more
/// work. With `pace` (calls per second, all workers together) each worker starts its calls on
/// a fixed schedule, and a call that starts late counts from its slot, so queueing shows. Prints
/// progress every second unless `quiet`.
async fn drive<F, Fut>(name: &str, workers: usize, until: Until, pace: Option<f64>, quiet: bool, op: F) -> Outcome
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<bool, String>> + Send,
{
    let op = Arc::new(op);
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let started = Instant::now();
    let progress = (!quiet).then(|| {
        let (done, finished, name) = (done.clone(), finished.clone(), name.to_string());
        tokio::spawn(async move {
            let mut last = 0;
            while !finished.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = done.load(Ordering::Relaxed);
                eprintln!("  {name}: {now} ops, {}/s", now - last);
                last = now;
            }
        })
    });
    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers {
        let (op, done, errors, first_error) = (op.clone(), done.clone(), errors.clone(), first_error.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(4096);
            // Spread the workers' schedules over one interval.
            let interval = pace.map(|rate| Duration::from_secs_f64(workers as f64 / rate.max(1e-3)));
            let offset = interval.map(|d| d.mul_f64(worker as f64 / workers as f64)).unwrap_or_default();
            for i in 0.. {
                let stop = match until {
                    Until::Elapsed(d) => started.elapsed() >= d,
                    Until::Count(n) => done.load(Ordering::Relaxed) + errors.load(Ordering::Relaxed) >= n,
                };
                if stop {
                    break;
                }
                let t0 = match interval {
                    // Early: wait for the slot and count from the actual start (the timer is
                    // coarser than the latencies measured). Late because the previous call
                    // overran: count from the slot, so queueing shows.
                    Some(interval) => {
                        let due = started + offset + interval.mul_f64(i as f64);
                        if due > Instant::now() {
                            tokio::time::sleep_until(due.into()).await;
                            Instant::now()
                        } else {
                            due
                        }
                    }
                    None => Instant::now(),
                };
                match op(worker, i).await {
                    Ok(true) => {
                        latencies.push(t0.elapsed().as_micros() as u64);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(false) => break,
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies_us = Vec::new();
    for task in tasks {
        latencies_us.extend(task.await.unwrap_or_default());
    }
    let elapsed = started.elapsed();
    finished.store(true, Ordering::Relaxed);
    if let Some(progress) = progress {
        progress.abort();
    }
    latencies_us.sort_unstable();
    if let Some(e) = first_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        eprintln!("  {name}: {} errors, first: {e}", errors.load(Ordering::Relaxed));
    }
    Outcome {
        name: name.to_string(),
        ops: done.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        latencies_us,
    }
}

/// Runs `make` `n` times from `workers` tasks and keeps what each call returns (the
/// preloaded codes and tokens).
async fn collect<F, Fut>(workers: usize, n: usize, make: F) -> Arc<Vec<String>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, String>> + Send,
{
    let items = Arc::new(std::sync::Mutex::new(Vec::with_capacity(n)));
    let (sink, make) = (items.clone(), Arc::new(make));
    drive("preload", workers, Until::Count(n as u64), None, true, move |w, _| {
        let (sink, make) = (sink.clone(), make.clone());
        async move {
            let item = make(w).await?;
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(item);
            Ok(true)
        }
    })
    .await;
    let items = std::mem::take(&mut *items.lock().unwrap_or_else(|p| p.into_inner()));
    Arc::new(items)
}

async fn connect(args: &BenchArgs) -> anyhow::Result<Vec<Arc<WsClient>>> {
    let mut headers = http::HeaderMap::new();
    if let Some(key) = &args.api_key {
        headers.insert(http::header::AUTHORIZATION, format!("Bearer {key}").parse()?);
    }
    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let client = WsClientBuilder::default()
            .set_headers(headers.clone())
            .max_concurrent_requests(args.in_flight.max(1) * 2)
            .request_timeout(Duration::from_secs(60))
            .build(&args.url)
            .await
            .with_context(|| format!("connecting to {}", args.url))?;
        clients.push(Arc::new(client));
    }
    Ok(clients)
}

/// The JSON-RPC error text of a failed call.
fn err(e: jsonrpsee::core::client::Error) -> String {
    e.to_string()
}

/// Runs every requested workload and prints the table.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let clients = connect(&args).await?;
    let workers = args.connections * args.in_flight.max(1);
    let run_id = crate::secret::generate_id().replace(['-', '_'], "x");
    let client_id = format!("bench-{run_id}");
    let admin = clients[0].clone();
    admin
        .register(
            ClientRegister { client_id: Some(client_id.clone()), metadata: public_client(), ..Default::default() }
                .into(),
        )
        .await
        .context("registering the benchmark client")?;
    eprintln!(
        "authstore bench: {} connections × {} in flight = {workers} outstanding calls, {} s per workload",
        args.connections, args.in_flight, args.seconds
    );
    let setup = Setup {
        clients: clients.clone(),
        client_id,
        run_id: run_id.clone(),
        workers,
        preload: args.preload,
        seconds: args.seconds,
    };
    let mut outcomes = Vec::new();
    for workload in &args.workloads {
        eprintln!("{workload}:");
        outcomes.push(workload_run(&setup, workload, None).await?);
    }
    if args.half_peak {
        let peaks: Vec<(String, f64)> = outcomes.iter().map(|o| (o.name.clone(), o.rate())).collect();
        for (workload, (name, peak)) in args.workloads.iter().zip(peaks) {
            let pace = peak / 2.0;
            eprintln!("{workload} at half of its peak ({pace:.0}/s):");
            let mut outcome = workload_run(&setup, workload, Some(pace)).await?;
            outcome.name = format!("{name} @ ½ peak");
            outcomes.push(outcome);
        }
    }
    if let Some(url) = &args.raw {
        outcomes.extend(raw::run(url, &args.workloads, workers, args.seconds, args.preload).await?);
    }
    for spec in &args.redis {
        let (label, addr) = spec.split_once('=').unwrap_or(("redis", spec.as_str()));
        outcomes.extend(redis(label, addr, workers, &args, &run_id).await?);
    }
    print_table(&outcomes, &args, workers);
    Ok(())
}

/// What every workload run shares.
struct Setup {
    clients: Vec<Arc<WsClient>>,
    client_id: String,
    run_id: String,
    workers: usize,
    preload: usize,
    seconds: u64,
}

/// Runs one workload (preloading what it needs), at full speed or paced.
async fn workload_run(setup: &Setup, workload: &str, pace: Option<f64>) -> anyhow::Result<Outcome> {
    let Setup { clients, client_id, workers, .. } = setup;
    let workers = *workers;
    let duration = Until::Elapsed(Duration::from_secs(setup.seconds));
    let pick = |worker: usize, i: u64, n: usize| (worker.wrapping_mul(7919) + i as usize * 104_729) % n.max(1);
    // Each paced run gets fresh records, so ids never collide with the first run's.
    let run_id = format!("{}{}", setup.run_id, if pace.is_some() { "h" } else { "" });
    let c = clients.clone();
    let cid = client_id.clone();
    let conn = move |w: usize| c[w % c.len()].clone();
    let outcome = match workload {
        "ping" => {
            drive("ping (transport)", workers, duration, pace, false, move |w, _| {
                let client = conn(w);
                async move { client.ping().await.map(|_| true).map_err(err) }
            })
            .await
        }
        "session.put" => {
            let run = run_id.clone();
            drive("session.put", workers, duration, pace, false, move |w, i| {
                let (client, put) = (conn(w), session(&cid, format!("p-{run}-{w}-{i}")));
                async move { client.put(put.into()).await.map(|_| true).map_err(err) }
            })
            .await
        }
        "session.get" => {
            let ids: Arc<Vec<String>> = Arc::new((0..setup.preload).map(|k| format!("g-{run_id}-{k}")).collect());
            let (c2, cid2, ids2) = (clients.clone(), cid.clone(), ids.clone());
            eprintln!("  preloading {} sessions", ids.len());
            drive("preload", workers, Until::Count(ids.len() as u64), None, true, move |w, i| {
                let client = c2[w % c2.len()].clone();
                let k = w + i as usize * workers;
                let put = ids2.get(k).map(|id| session(&cid2, id.clone()));
                async move {
                    match put {
                        Some(put) => client.put(put.into()).await.map(|_| true).map_err(err),
                        None => Ok(false),
                    }
                }
            })
            .await;
            drive("session.get", workers, duration, pace, false, move |w, i| {
                let (client, id) = (conn(w), ids[pick(w, i, ids.len())].clone());
                async move { SessionApiClient::get(&*client, SessionRef { id }.into()).await.map(|_| true).map_err(err) }
            })
            .await
        }
        "token.get" => {
            eprintln!("  preloading {} tokens", setup.preload);
            let (c2, cid2) = (clients.clone(), cid.clone());
            let tokens = collect(workers, setup.preload, move |w| {
                let (client, cid) = (c2[w % c2.len()].clone(), cid2.clone());
                async move {
                    let issue = TokenIssue { client_id: cid, user_id: format!("u{w}"), ..Default::default() };
                    TokenApiClient::issue(&*client, issue.into()).await.map(|t| t.token).map_err(err)
                }
            })
            .await;
            drive("token.get", workers, duration, pace, false, move |w, i| {
                let (client, token) = (conn(w), tokens[pick(w, i, tokens.len())].clone());
                async move { TokenApiClient::get(&*client, TokenRef { token }.into()).await.map(|_| true).map_err(err) }
            })
            .await
        }
        "code.consume" => {
            eprintln!("  preloading {} codes", setup.preload);
            let (c2, cid2) = (clients.clone(), cid.clone());
            let codes =
                collect(workers, setup.preload, move |w| {
                    let (client, cid) = (c2[w % c2.len()].clone(), cid2.clone());
                    async move {
                        CodeApiClient::issue(&*client, code_issue(&cid).into()).await.map(|c| c.code).map_err(err)
                    }
                })
                .await;
            drive("code.consume", workers, duration, pace, false, move |w, i| {
                let client = conn(w);
                let code = codes.get(w + i as usize * workers).cloned();
                let cid = cid.clone();
                async move {
                    let Some(code) = code else { return Ok(false) };
                    client.consume(consume(&cid, code).into()).await.map(|_| true).map_err(err)
                }
            })
            .await
        }
        "flow" => {
            let run = run_id.clone();
            drive("flow (5 calls)", workers, duration, pace, false, move |w, i| {
                let (client, cid) = (conn(w), cid.clone());
                let id = format!("f-{run}-{w}-{i}");
                async move {
                    client.put(session(&cid, id.clone()).into()).await.map_err(err)?;
                    let issue = CodeIssue { session_id: Some(id), user_id: Some("alice".into()), ..Default::default() };
                    let code = CodeApiClient::issue(&*client, issue.into()).await.map_err(err)?;
                    let grant = client.consume(consume(&cid, code.code).into()).await.map_err(err)?;
                    let issue = TokenIssue {
                        client_id: cid.clone(),
                        user_id: "alice".into(),
                        grant_id: Some(grant.grant_id),
                        ..Default::default()
                    };
                    let token = TokenApiClient::issue(&*client, issue.into()).await.map_err(err)?;
                    let rotate = TokenRotate { token: token.token, client_id: cid, ..Default::default() };
                    client.rotate(rotate.into()).await.map(|_| true).map_err(err)
                }
            })
            .await
        }
        other => anyhow::bail!("unknown workload {other:?}; known: {}", ALL.join(", ")),
    };
    Ok(outcome)
}

/// The metadata of the public client every tool registers (PKCE, refresh tokens).
fn public_client() -> ClientMetadata {
    ClientMetadata {
        redirect_uris: vec![REDIRECT.into()],
        token_endpoint_auth_method: Some("none".into()),
        grant_types: Some(vec!["authorization_code".into(), "refresh_token".into()]),
        ..Default::default()
    }
}

/// Registers the tools' public client straight in `store`.
async fn register_directly(store: &Store, client_id: &str, now: chrono::DateTime<chrono::Utc>) -> anyhow::Result<()> {
    let meta = client::metadata(public_client(), Origin::Registered)?;
    store.client_register(client::registration(client_id.to_string(), meta, None), None, now).await?;
    Ok(())
}

fn session(client_id: &str, id: String) -> SessionPut {
    SessionPut {
        id: Some(id),
        client_id: client_id.into(),
        redirect_uri: REDIRECT.into(),
        code_challenge: Some(CHALLENGE.into()),
        scope: Some("mcp:tools".into()),
        ttl_secs: Some(3600),
        ..Default::default()
    }
}

fn code_issue(client_id: &str) -> CodeIssue {
    CodeIssue {
        client_id: Some(client_id.into()),
        user_id: Some("alice".into()),
        redirect_uri: Some(REDIRECT.into()),
        code_challenge: Some(CHALLENGE.into()),
        ttl_secs: Some(600),
        ..Default::default()
    }
}

fn consume(client_id: &str, code: String) -> CodeConsume {
    CodeConsume {
        code,
        client_id: client_id.into(),
        redirect_uri: REDIRECT.into(),
        code_verifier: VERIFIER.into(),
        resource: None,
        idempotency_key: None,
    }
}

/// The Redis equivalents: SET with EX (session.put), GET (session.get), GETDEL (code.consume).
async fn redis(label: &str, addr: &str, workers: usize, args: &BenchArgs, run: &str) -> anyhow::Result<Vec<Outcome>> {
    let mut connections = Vec::with_capacity(workers);
    for _ in 0..workers {
        connections.push(Arc::new(tokio::sync::Mutex::new(
            resp::Redis::connect(addr).await.with_context(|| format!("connecting to Redis at {addr}"))?,
        )));
    }
    let value = Arc::new(vec![b'x'; 300]);
    let duration = Until::Elapsed(Duration::from_secs(args.seconds));
    let preload = args.preload;
    let mut outcomes = Vec::new();
    let conns = Arc::new(connections);
    eprintln!("redis {label} ({addr}):");
    let (c, v, r) = (conns.clone(), value.clone(), run.to_string());
    outcomes.push(
        drive(&format!("redis SET EX ({label})"), workers, duration, None, false, move |w, i| {
            let (conn, value, key) = (c[w].clone(), v.clone(), format!("s:{r}:{w}:{i}"));
            async move {
                let mut conn = conn.lock().await;
                conn.command(&[b"SET", key.as_bytes(), &value, b"EX", b"3600"])
                    .await
                    .map(|_| true)
                    .map_err(|e| e.to_string())
            }
        })
        .await,
    );
    let (c, v, r) = (conns.clone(), value.clone(), run.to_string());
    drive("preload", workers, Until::Count(preload as u64), None, true, move |w, i| {
        let (conn, value, key) = (c[w].clone(), v.clone(), format!("g:{r}:{}", w + i as usize * workers));
        async move {
            let mut conn = conn.lock().await;
            conn.command(&[b"SET", key.as_bytes(), &value, b"EX", b"3600"])
                .await
                .map(|_| true)
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let (c, r) = (conns.clone(), run.to_string());
    outcomes.push(
        drive(&format!("redis GET ({label})"), workers, duration, None, false, move |w, i| {
            let (conn, key) =
                (c[w].clone(), format!("g:{r}:{}", (w.wrapping_mul(7919) + i as usize * 104_729) % preload.max(1)));
            async move {
                let mut conn = conn.lock().await;
                conn.command(&[b"GET", key.as_bytes()]).await.map(|_| true).map_err(|e| e.to_string())
            }
        })
        .await,
    );
    let (c, r) = (conns.clone(), run.to_string());
    outcomes.push(
        drive(&format!("redis GETDEL ({label})"), workers, duration, None, false, move |w, i| {
            let index = w + i as usize * workers;
            let (conn, key) = (c[w].clone(), format!("g:{r}:{index}"));
            async move {
                if index >= preload {
                    return Ok(false);
                }
                let mut conn = conn.lock().await;
                conn.command(&[b"GETDEL", key.as_bytes()]).await.map(|_| true).map_err(|e| e.to_string())
            }
        })
        .await,
    );
    Ok(outcomes)
}

fn print_table(outcomes: &[Outcome], args: &BenchArgs, workers: usize) {
    let find = |prefix: &str| outcomes.iter().find(|o| o.name.starts_with(prefix)).map(Outcome::rate);
    let transport = find("ping");
    let peers: Vec<(String, f64)> =
        outcomes.iter().filter(|o| o.name.starts_with("redis ")).map(|o| (o.name.clone(), o.rate())).collect();
    let peer_for = |name: &str| -> Option<&'static str> {
        match name {
            "session.put" => Some("redis SET EX"),
            "session.get" | "token.get" => Some("redis GET"),
            "code.consume" => Some("redis GETDEL"),
            _ => None,
        }
    };
    println!();
    println!(
        "connections={} in_flight={} outstanding={workers} seconds={} preload={}",
        args.connections, args.in_flight, args.seconds, args.preload
    );
    println!();
    println!(
        "| workload | ops | errors | ops/s | p50 ms | p95 ms | p99 ms | × transport | × raw SurrealDB | × Redis (per label) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for o in outcomes {
        let over_wire = !o.name.starts_with("redis") && !o.name.starts_with("raw ") && !o.name.contains('@');
        let vs_transport = transport
            .filter(|_| !o.name.starts_with("redis"))
            .map(|t| format!("{:.2}", o.rate() / t))
            .unwrap_or_default();
        let vs_raw = find(&format!("raw {}", o.name))
            .filter(|_| over_wire)
            .map(|raw| format!("{:.2}", o.rate() / raw))
            .unwrap_or_default();
        let vs_redis = peer_for(&o.name)
            .filter(|_| over_wire)
            .map(|peer| {
                peers
                    .iter()
                    .filter(|(name, _)| name.starts_with(&format!("{peer} (")))
                    .map(|(name, rate)| format!("{:.2} vs {}", o.rate() / rate, name[peer.len()..].trim()))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
            o.name,
            o.ops,
            o.errors,
            o.rate(),
            o.percentile(0.50),
            o.percentile(0.95),
            o.percentile(0.99),
            vs_transport,
            vs_raw,
            vs_redis
        );
    }
}
