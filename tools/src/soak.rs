//! `authstore-tools soak`: mixed load against the real binary while it is killed with SIGKILL and
//! restarted at random moments, then a check of everything that was acknowledged.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use authstore::rpc::api::{ClientApiClient, CodeApiClient, SessionApiClient, TokenApiClient};
use authstore::types::{ClientMetadata, ClientRegister, SessionRef, TokenIssue, TokenList, TokenRotate};
use clap::Args;
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use serde_json::json;

use crate::bench::{REDIRECT, code_issue, consume, session};

#[derive(Debug, Args)]
pub struct SoakArgs {
    /// Kill-and-restart cycles.
    #[arg(long, default_value_t = 100)]
    pub cycles: usize,
    /// Data directory (a fresh temporary one by default).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Port for the server under test.
    #[arg(long, default_value_t = 8761)]
    pub port: u16,
    /// Longest run of load before a kill, in milliseconds.
    #[arg(long, default_value_t = 800)]
    pub max_run_ms: u64,
    /// Start the kill timer when the process starts rather than when it answers, so kills
    /// also land during start-up (recovery of the previous crash).
    #[arg(long)]
    pub kill_during_startup: bool,
    #[command(flatten)]
    pub history: crate::history::soak::HistoryArgs,
}

/// Everything the load was told succeeded.
#[derive(Default)]
struct Ledger {
    sessions: Vec<(String, u64)>,
    consumed: Vec<String>,
    families: HashSet<String>,
    races: u64,
    double_consumes: u64,
}

type Shared = Arc<Mutex<Ledger>>;

fn ledger(shared: &Shared) -> std::sync::MutexGuard<'_, Ledger> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

fn random_below(n: u64) -> u64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes) % n.max(1)
}

/// Starts the server on `dir`; its warnings and errors go to `dir.log`, so the soak can count
/// what recovery did.
pub(crate) fn start(exe: &std::path::Path, dir: &std::path::Path, port: u16) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log_path(dir)).context("opening the log")?;
    Command::new(exe)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--db")
        .arg(format!("surrealkv://{}", dir.display()))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting authstore")
}

fn log_path(dir: &std::path::Path) -> PathBuf {
    dir.with_extension("log")
}

async fn connect(port: u16) -> anyhow::Result<WsClient> {
    let started = Instant::now();
    loop {
        match WsClientBuilder::default()
            .request_timeout(Duration::from_secs(30))
            .build(format!("ws://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => return Ok(client),
            Err(_) if started.elapsed() < Duration::from_secs(60) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => anyhow::bail!("authstore did not come back within a minute: {e}"),
        }
    }
}

/// One load task; stops at the first failure (the kill).
async fn load(kind: usize, cycle: usize, port: u16, shared: Shared) {
    let (Ok(a), Ok(b)) = (connect(port).await, connect(port).await) else { return };
    for i in 0u64.. {
        let ok = match kind {
            0 => {
                let id = format!("s-{cycle}-{i}");
                let mut put = session("soak", id.clone());
                put.data = Some(json!({ "n": i }));
                put.ttl_secs = Some(86_400);
                let acked = a.put(put.into()).await.is_ok();
                if acked {
                    ledger(&shared).sessions.push((id, i));
                }
                acked
            }
            1 => {
                // Two connections race for each code: at most one may win.
                let Ok(code) = CodeApiClient::issue(&a, code_issue("soak").into()).await else { return };
                let (first, second) = tokio::join!(
                    a.consume(consume("soak", code.code.clone()).into()),
                    b.consume(consume("soak", code.code.clone()).into())
                );
                let wins = u64::from(first.is_ok()) + u64::from(second.is_ok());
                let mut l = ledger(&shared);
                l.races += 1;
                if wins > 1 {
                    l.double_consumes += 1;
                }
                if wins >= 1 {
                    l.consumed.push(code.code);
                }
                first.is_ok() || second.is_ok() || first.is_err() && second.is_err() && a.is_connected()
            }
            _ => {
                let issue = TokenIssue { client_id: "soak".into(), user_id: format!("u{i}"), ..Default::default() };
                let Ok(token) = TokenApiClient::issue(&a, issue.into()).await else { return };
                ledger(&shared).families.insert(token.grant_id.clone());
                let mut current = token.token;
                for _ in 0..3 {
                    let rotate = TokenRotate { token: current.clone(), client_id: "soak".into(), ..Default::default() };
                    match a.rotate(rotate.into()).await {
                        Ok(next) => current = next.token,
                        Err(_) => return,
                    }
                }
                true
            }
        };
        if !ok {
            return;
        }
    }
}

pub async fn run(args: SoakArgs) -> anyhow::Result<()> {
    if args.history.history {
        return crate::history::soak::run(&args.history, args.port, args.dir).await;
    }
    let exe = crate::server_binary()?;
    let dir =
        args.dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("authstore-soak-{}", crate::run_id())));
    std::fs::create_dir_all(&dir)?;
    eprintln!("authstore-tools soak: {} cycles, data in {}", args.cycles, dir.display());
    let shared: Shared = Arc::default();
    let mut child = start(&exe, &dir, args.port)?;
    let admin = connect(args.port).await?;
    let meta = ClientMetadata {
        redirect_uris: vec![REDIRECT.into()],
        token_endpoint_auth_method: Some("none".into()),
        grant_types: Some(vec!["authorization_code".into(), "refresh_token".into()]),
        ..Default::default()
    };
    let _ = admin
        .register(ClientRegister { client_id: Some("soak".into()), metadata: meta, ..Default::default() }.into())
        .await;
    drop(admin);
    let started = Instant::now();
    for cycle in 0..args.cycles {
        if cycle > 0 {
            child = start(&exe, &dir, args.port)?;
        }
        // Load starts once the server answers; the kill lands at a random moment after that
        // (or after the process started, with --kill-during-startup).
        if !args.kill_during_startup {
            drop(connect(args.port).await?);
        }
        let tasks: Vec<_> = (0..4).map(|kind| tokio::spawn(load(kind % 3, cycle, args.port, shared.clone()))).collect();
        tokio::time::sleep(Duration::from_millis(100 + random_below(args.max_run_ms.max(101) - 100))).await;
        child.kill().context("SIGKILL")?;
        child.wait().context("reaping")?;
        // Calls cut off by the kill fail on their own; give them a moment, then stop the rest.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        if (cycle + 1) % 10 == 0 {
            let l = ledger(&shared);
            eprintln!(
                "  cycle {}/{}: {} sessions, {} code races, {} families acknowledged ({:.0?})",
                cycle + 1,
                args.cycles,
                l.sessions.len(),
                l.races,
                l.families.len(),
                started.elapsed()
            );
        }
    }

    // Verify against a fresh start on the same data.
    let mut child = start(&exe, &dir, args.port)?;
    let client = connect(args.port).await?;
    let l = std::mem::take(&mut *ledger(&shared));
    let mut lost_sessions = 0;
    for (id, n) in &l.sessions {
        match SessionApiClient::get(&client, SessionRef { id: id.clone() }.into()).await {
            Ok(s) if s.data == Some(json!({ "n": n })) => {}
            other => {
                lost_sessions += 1;
                if lost_sessions <= 10 {
                    eprintln!("  lost session {id}: {other:?}");
                }
            }
        }
    }
    let mut replays_accepted = 0;
    for code in &l.consumed {
        if client.consume(consume("soak", code.clone()).into()).await.is_ok() {
            replays_accepted += 1;
        }
    }
    let mut two_active = 0;
    for grant in &l.families {
        let list = TokenList { grant_id: Some(grant.clone()), ..Default::default() };
        match TokenApiClient::list(&client, list.into()).await {
            Ok(page) if page.items.len() <= 1 => {}
            _ => two_active += 1,
        }
    }
    let _ = ClientApiClient::get(&client, authstore::types::ClientRef { client_id: "soak".into() }.into()).await;
    child.kill()?;
    child.wait()?;
    println!("soak: {} SIGKILL cycles in {:.0?}", args.cycles, started.elapsed());
    println!("  acknowledged sessions checked: {} (lost: {lost_sessions})", l.sessions.len());
    println!(
        "  codes raced by two connections: {} (won twice: {}); consumed codes replayed after all restarts: {} (accepted: {replays_accepted})",
        l.races,
        l.double_consumes,
        l.consumed.len()
    );
    println!("  token families checked: {} (with two active tokens: {two_active})", l.families.len());
    let log = std::fs::read_to_string(log_path(&dir)).unwrap_or_default();
    println!(
        "  restarts that cut a torn record off the write-ahead log: {}; that found it damaged inside: {}",
        log.matches("cut an unfinished record").count(),
        log.matches("damaged before its end").count()
    );
    if lost_sessions + l.double_consumes + replays_accepted + two_active > 0 {
        anyhow::bail!("soak found violations");
    }
    Ok(())
}
