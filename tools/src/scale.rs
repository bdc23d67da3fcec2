//! `authstore-tools scale`: what happens at a million live records. Seeds a small and a large
//! dataset (sessions and refresh tokens, each token in its own family) straight into SurrealKV,
//! then starts the real server on each and measures: time from process start to `/ready`
//! (first start, and again after SIGKILL), resident memory, `session.get` and `token.get`
//! latency at the same concurrency, and on the large dataset how late expiry events reach a
//! subscriber while 10 k sessions a minute expire, and the memory of idle WebSockets.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use authstore::clock::{Clock, SystemClock};
use authstore::rpc::api::{ClientApiClient, ServerApiClient, SessionApiClient, TokenApiClient};
use authstore::types::{ClientRef, ClientRegister, SessionEvent, SessionRef, Subscribe, TokenRef};
use chrono::{DateTime, Utc};
use clap::Args;
use jsonrpsee::core::client::Subscription;
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::bench::{Outcome, Until, drive, err, public_client, session};
use crate::surreal::{SEED_CHUNK, seeded_session, seeded_token};

const CLIENT_ID: &str = "scale-client";
/// The name of the seeded dataset (`scale-session-K`, `scale-token-K`).
const DATASET: &str = "scale";

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Directory for the datasets (created; reused if already seeded).
    #[arg(long)]
    pub dir: PathBuf,
    /// Records of each kind (sessions, tokens) in the large dataset.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: usize,
    /// Records of each kind in the small dataset the large one is compared with.
    #[arg(long, default_value_t = 10_000)]
    pub small: usize,
    /// Port for the server under test.
    #[arg(long, default_value_t = 8795)]
    pub port: u16,
    /// Seconds per read workload.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// WebSocket connections for the read workloads.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Calls in flight per connection.
    #[arg(long, default_value_t = 4)]
    pub in_flight: usize,
    /// Sessions made to expire per minute during the expiry measurement.
    #[arg(long, default_value_t = 10_000)]
    pub expire_per_minute: u64,
    /// Seconds the expiry measurement runs.
    #[arg(long, default_value_t = 60)]
    pub expiry_seconds: u64,
    /// Idle WebSocket connections opened for the memory measurement.
    #[arg(long, default_value_t = 10_000)]
    pub idle_connections: usize,
    /// The server's log filter (`RUST_LOG`), its log going to this tool's stderr.
    #[arg(long, default_value = "warn")]
    pub server_log: String,
    /// Writes each expiry event's deadline, removal (`at`) and arrival at the subscriber to this
    /// CSV file (RFC 3339 times), to line its lateness up with the server's log.
    #[arg(long)]
    pub expiry_csv: Option<PathBuf>,
}

/// What one dataset measured.
struct Figures {
    records: usize,
    ready_first: Duration,
    ready_after_kill: Duration,
    rss_ready_kib: u64,
    reads: Vec<Outcome>,
    rss_after_reads_kib: u64,
    /// Median time of one `server.stats` (the counts `/metrics` also reports), in ms, or why
    /// it failed.
    stats_ms: Result<f64, String>,
}

pub async fn run(args: ScaleArgs) -> anyhow::Result<()> {
    let exe = crate::server_binary()?;
    std::fs::create_dir_all(&args.dir)?;
    let small = measure(&args, &exe, args.small, false).await?;
    let large = measure(&args, &exe, args.records, true).await?;
    println!();
    println!(
        "connections={} in_flight={} seconds={} (reads); records = live sessions and live tokens each",
        args.connections, args.in_flight, args.seconds
    );
    println!();
    println!(
        "| records | start → ready | after SIGKILL → ready | RSS ready MiB | RSS after reads MiB | server.stats p50 ms |"
    );
    println!("|---|---|---|---|---|---|");
    for f in [&small, &large] {
        println!(
            "| {} | {:.2} s | {:.2} s | {:.0} | {:.0} | {} |",
            f.records,
            f.ready_first.as_secs_f64(),
            f.ready_after_kill.as_secs_f64(),
            f.rss_ready_kib as f64 / 1024.0,
            f.rss_after_reads_kib as f64 / 1024.0,
            match &f.stats_ms {
                Ok(ms) => format!("{ms:.2}"),
                Err(e) => format!("failed: {e}"),
            }
        );
    }
    println!();
    println!("| workload | records | ops/s | p50 ms | p99 ms | p99 × small |");
    println!("|---|---|---|---|---|---|");
    for (s, l) in small.reads.iter().zip(&large.reads) {
        for (f, o) in [(&small, s), (&large, l)] {
            println!(
                "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} |",
                o.name,
                f.records,
                o.rate(),
                o.percentile(0.5),
                o.percentile(0.99),
                o.percentile(0.99) / s.percentile(0.99).max(1e-9)
            );
        }
    }
    Ok(())
}

/// Seeds (unless already seeded), then starts the server and measures.
async fn measure(args: &ScaleArgs, exe: &Path, records: usize, large: bool) -> anyhow::Result<Figures> {
    let dir = args.dir.join(format!("r{records}"));
    let marker = dir.join("seeded");
    if !marker.exists() {
        seed(&dir.join("db"), records).await?;
        std::fs::write(&marker, records.to_string())?;
    } else {
        eprintln!("scale: reusing the {records}-record dataset in {}", dir.display());
    }
    let waited_for_lock = Instant::now();
    // The embedded datastore closes in the background once its last handle is gone, flushing
    // what it holds; until then the server cannot take the directory's lock.
    let (mut server, ready_first) = loop {
        match start(exe, &dir, args).await {
            Err(e) if waited_for_lock.elapsed() < Duration::from_secs(300) => {
                eprintln!("scale: {e:#}; trying again");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            other => break other?,
        }
    };
    let _ = server.kill();
    let _ = server.wait();
    let (mut server, ready_after_kill) = start(exe, &dir, args).await?;
    let pid = server.id();
    register(args.port).await?;
    eprintln!("scale: {records} records ready in {ready_first:.2?} (after SIGKILL: {ready_after_kill:.2?})");
    let rss_ready_kib = rss_kib(pid);
    let result = async {
        let reads = reads(args, records).await?;
        let rss_after_reads_kib = rss_kib(pid);
        if large {
            expiry(args).await?;
            idle_connections(args, pid).await?;
        }
        // Last: a count that scans may keep the database busy after its call gave up.
        let stats_ms = stats_time(args.port, records).await.map_err(|e| format!("{e:#}"));
        Ok::<_, anyhow::Error>(Figures {
            records,
            ready_first,
            ready_after_kill,
            rss_ready_kib,
            reads,
            rss_after_reads_kib,
            stats_ms,
        })
    }
    .await;
    let _ = server.kill();
    let _ = server.wait();
    result
}

/// Writes `records` sessions and tokens straight into the database at `path`, as the server's
/// schema has them (the client they belong to is registered through the server, `register`).
async fn seed(path: &Path, records: usize) -> anyhow::Result<()> {
    let url = format!("surrealkv://{}", path.display());
    let db = crate::surreal::open(&url, "authstore").await.context("opening the dataset")?;
    let clock = SystemClock;
    let started = Instant::now();
    let mut done = 0;
    let mut reported = 0;
    while done < records {
        let count = SEED_CHUNK.min(records - done);
        let now = clock.now();
        crate::surreal::seed(&db, DATASET, done, count, CLIENT_ID, now, now + chrono::Duration::hours(12)).await?;
        done += count;
        if done - reported >= 100_000 || done == records {
            reported = done;
            let rate = done as f64 / started.elapsed().as_secs_f64();
            eprintln!("scale: seeded {done}/{records} sessions and tokens ({rate:.0} of each per second)");
        }
    }
    drop(db);
    Ok(())
}

/// Registers the client the seeded records belong to, unless an earlier run on this dataset did.
async fn register(port: u16) -> anyhow::Result<()> {
    let client = connect(port).await?;
    let register =
        ClientRegister { client_id: Some(CLIENT_ID.into()), metadata: public_client(), ..Default::default() };
    match client.register(register.into()).await {
        Ok(_) => Ok(()),
        // Registered by an earlier run on this dataset: fine if it is there.
        Err(e) => {
            let existing = ClientApiClient::get(&*client, ClientRef { client_id: CLIENT_ID.into() }.into()).await;
            existing.map(drop).map_err(|_| anyhow::anyhow!("registering {CLIENT_ID}: {e}"))
        }
    }
}

/// Starts the server on `dir/db` and returns it with the time from spawn to `/ready` = 200.
async fn start(exe: &Path, dir: &Path, args: &ScaleArgs) -> anyhow::Result<(Child, Duration)> {
    let port = args.port;
    let started = Instant::now();
    let mut child = Command::new(exe)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--max-connections", "20000"])
        .arg("--db")
        .arg(format!("surrealkv://{}", dir.join("db").display()))
        .env("RUST_LOG", &args.server_log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting authstore")?;
    loop {
        if ready(port).await {
            return Ok((child, started.elapsed()));
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("authstore exited while starting: {status}");
        }
        if started.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            anyhow::bail!("authstore was not ready within 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether `GET /ready` answers 200.
async fn ready(port: u16) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return false };
    let request = "GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.is_ok() && head.ends_with(b"200")
}

/// The median of 5 `server.stats` calls, in ms, after checking that it counts every seeded
/// session and token.
async fn stats_time(port: u16, records: usize) -> anyhow::Result<f64> {
    let client = connect(port).await?;
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let stats = ServerApiClient::stats(&*client).await.context("server.stats")?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        if (stats.sessions as usize) < records || (stats.tokens as usize) < records {
            anyhow::bail!(
                "server.stats counts {} sessions and {} tokens of {records} seeded",
                stats.sessions,
                stats.tokens
            );
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Resident memory of `pid`, in KiB (0 where /proc is not available).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

async fn connect(port: u16) -> anyhow::Result<Arc<WsClient>> {
    let client = WsClientBuilder::default()
        .request_timeout(Duration::from_secs(60))
        .build(format!("ws://127.0.0.1:{port}"))
        .await
        .context("connecting to authstore")?;
    Ok(Arc::new(client))
}

/// `session.get` and `token.get` on random seeded records.
async fn reads(args: &ScaleArgs, records: usize) -> anyhow::Result<Vec<Outcome>> {
    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        clients.push(connect(args.port).await?);
    }
    let clients = Arc::new(clients);
    let workers = args.connections * args.in_flight.max(1);
    let duration = Until::Elapsed(Duration::from_secs(args.seconds));
    let pick = move |w: usize, i: u64| (w.wrapping_mul(7919) + i as usize * 104_729) % records.max(1);
    let c = clients.clone();
    let gets = drive("session.get", workers, duration, None, false, move |w, i| {
        let (client, id) = (c[w % c.len()].clone(), seeded_session(DATASET, pick(w, i)));
        async move { SessionApiClient::get(&*client, SessionRef { id }.into()).await.map(|_| true).map_err(err) }
    })
    .await;
    let c = clients.clone();
    let tokens = drive("token.get", workers, duration, None, false, move |w, i| {
        let (client, token) = (c[w % c.len()].clone(), seeded_token(DATASET, pick(w, i)));
        async move { TokenApiClient::get(&*client, TokenRef { token }.into()).await.map(|_| true).map_err(err) }
    })
    .await;
    for o in [&gets, &tokens] {
        if o.errors > 0 {
            anyhow::bail!("{}: {} calls failed on seeded records", o.name, o.errors);
        }
    }
    Ok(vec![gets, tokens])
}

/// Puts sessions with a 5 s lifetime at `expire_per_minute` for `expiry_seconds`, and
/// measures when each one's `expired` event reaches a subscriber, against its deadline.
async fn expiry(args: &ScaleArgs) -> anyhow::Result<()> {
    const TTL_SECS: u64 = 5;
    let subscriber = connect(args.port).await?;
    let subscribe = Subscribe { kinds: Some(vec!["expired".into()]), ..Default::default() };
    let mut events: Subscription<SessionEvent> =
        SessionApiClient::subscribe_events(&*subscriber, subscribe.into()).await.context("subscribing")?;
    let writer = connect(args.port).await?;
    let rate = args.expire_per_minute as f64 / 60.0;
    let puts = (rate * args.expiry_seconds as f64) as u64;
    eprintln!(
        "scale: expiry: {puts} sessions with a {TTL_SECS} s lifetime over {} s ({rate:.0}/s)",
        args.expiry_seconds
    );
    let prefix = format!("exp-{}", crate::run_id());
    let p = prefix.clone();
    let put = tokio::spawn(drive("expiring puts", 8, Until::Count(puts), Some(rate), true, move |w, i| {
        let client = writer.clone();
        let mut s = session(CLIENT_ID, format!("{p}-{w}-{i}"));
        s.ttl_secs = Some(TTL_SECS);
        async move { client.put(s.into()).await.map(|_| true).map_err(err) }
    }));
    let clock = SystemClock;
    // Whole lateness, and its two parts: the pass that removed the session (the event's `at`)
    // after the deadline, and the event reaching the subscriber after that pass (sequencing,
    // the hub, the socket).
    let (mut lateness_ms, mut removal_ms, mut delivery_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut csv = match &args.expiry_csv {
        Some(path) => {
            let mut file = std::io::BufWriter::new(std::fs::File::create(path).context("creating the expiry CSV")?);
            writeln!(file, "deadline,removed_at,received_at")?;
            Some(file)
        }
        None => None,
    };
    let deadline = Instant::now() + Duration::from_secs(args.expiry_seconds + TTL_SECS + 10);
    while (lateness_ms.len() as u64) < puts && Instant::now() < deadline {
        let next = tokio::time::timeout_at(deadline.into(), events.next()).await;
        let Ok(Some(Ok(event))) = next else { break };
        if !event.session_id.starts_with(&prefix) {
            continue;
        }
        if let Some(expires_at) = event.expires_at {
            let received = clock.now();
            lateness_ms.push(late_ms(received, expires_at));
            removal_ms.push(late_ms(event.at, expires_at));
            delivery_ms.push(late_ms(received, event.at));
            if let Some(file) = &mut csv {
                let time = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                writeln!(file, "{},{},{}", time(expires_at), time(event.at), time(received))?;
            }
        }
    }
    if let Some(mut file) = csv {
        file.flush()?;
    }
    let put = put.await.context("the put task")?;
    println!();
    println!(
        "expiry while {} sessions/min expire: {} put ({} failed), {} expired events received; \
         lateness (event at subscriber − deadline) {}; of which removal (pass − deadline) {}, \
         delivery (subscriber − pass) {}",
        args.expire_per_minute,
        put.ops,
        put.errors,
        lateness_ms.len(),
        percentiles(&mut lateness_ms),
        percentiles(&mut removal_ms),
        percentiles(&mut delivery_ms),
    );
    Ok(())
}

/// "p50 …, p99 …, max … ms" of `ms`.
fn percentiles(ms: &mut [f64]) -> String {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms.get(((ms.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0);
    format!("p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", at(0.5), at(0.99), at(1.0))
}

fn late_ms(now: DateTime<Utc>, deadline: DateTime<Utc>) -> f64 {
    (now - deadline).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

/// Opens `idle_connections` WebSockets and leaves them idle; reports the server's RSS growth.
async fn idle_connections(args: &ScaleArgs, pid: u32) -> anyhow::Result<()> {
    let before = rss_kib(pid);
    let mut idle = Vec::with_capacity(args.idle_connections);
    for n in 0..args.idle_connections {
        idle.push(connect(args.port).await.with_context(|| format!("opening idle connection {n}"))?);
        if (n + 1) % 2_000 == 0 {
            eprintln!("scale: {} idle connections open", n + 1);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid);
    println!();
    println!(
        "idle WebSockets: {} open; server RSS {:.0} MiB → {:.0} MiB, {:.1} KiB per connection",
        idle.len(),
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        after.saturating_sub(before) as f64 / idle.len().max(1) as f64
    );
    drop(idle);
    Ok(())
}
