//! `authstore-tools soak --history`: the history workload for as long as asked, in rounds (each a
//! fresh key space, checked on its own), against given servers or against an `authstore serve`
//! on SurrealKV that it kills with SIGKILL and restarts between phases.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use clap::Args;

use super::{Report, Workload, WorkloadConfig, check, connect_retry};

#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// Run the history workload and checker instead of the kill-and-verify soak.
    #[arg(long)]
    pub history: bool,
    /// With --history: total seconds of load.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// With --history: seconds of load per round; each round is one history, checked alone.
    #[arg(long, default_value_t = 10)]
    pub round_secs: u64,
    /// With --history: phases per round; the spawned server is killed with SIGKILL and
    /// restarted after each but the last (1 = no kills).
    #[arg(long, default_value_t = 2)]
    pub phases: u32,
    /// With --history: servers to drive instead of spawning one (repeat or comma-separate;
    /// connections are spread over all of them).
    #[arg(long = "url", value_delimiter = ',')]
    pub urls: Vec<String>,
    /// With --history: WebSocket connections.
    #[arg(long, default_value_t = 10)]
    pub connections: usize,
    /// With --history: tasks issuing calls at once.
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// With --history: the servers' rotation grace window (0 = strict).
    #[arg(long, default_value_t = 0)]
    pub grace_secs: u64,
    /// With --history: API key for --url servers.
    #[arg(long, env = "AUTHSTORE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

fn config(args: &HistoryArgs) -> WorkloadConfig {
    WorkloadConfig {
        connections: args.connections.max(1),
        workers: args.workers.max(1),
        api_key: args.api_key.clone(),
        grace_secs: args.grace_secs,
        ..WorkloadConfig::default()
    }
}

/// One round against servers that stay up.
async fn round_on(endpoints: &[String], args: &HistoryArgs, secs: Duration) -> anyhow::Result<Report> {
    super::run_once(endpoints.to_vec(), config(args), secs).await
}

/// One round against the spawned server, killed and restarted between phases.
async fn round_with_kills(
    exe: &Path,
    dir: &Path,
    port: u16,
    child: &mut Child,
    args: &HistoryArgs,
    secs: Duration,
) -> anyhow::Result<Report> {
    let endpoints = vec![format!("ws://127.0.0.1:{port}")];
    let workload = Workload::new(config(args));
    workload.setup(&endpoints).await?;
    let mut feeds = workload.start_feeds(&endpoints);
    feeds.ready().await;
    let phases = args.phases.max(1);
    let phase = secs / phases;
    for i in 0..phases {
        connect_retry(&endpoints[0], args.api_key.as_deref(), Duration::from_secs(120)).await?;
        if i + 1 == phases {
            workload.phase(&endpoints, phase).await;
            break;
        }
        let kill = async {
            tokio::time::sleep(phase.mul_f64(0.8)).await;
            let _ = child.kill();
            let _ = child.wait();
        };
        tokio::join!(workload.phase(&endpoints, phase), kill);
        workload.disconnect();
        *child = crate::soak::start(exe, dir, port)?;
    }
    workload.sweep(&endpoints).await;
    let feeds = feeds.finish().await;
    Ok(check(&workload.history(feeds)))
}

pub async fn run(args: &HistoryArgs, port: u16, dir: Option<PathBuf>) -> anyhow::Result<()> {
    let total = Duration::from_secs(args.seconds.max(1));
    let round = Duration::from_secs(args.round_secs.clamp(1, args.seconds.max(1)));
    let started = Instant::now();
    let mut all = Report::default();
    let mut rounds = 0u64;
    let mut spawned: Option<(PathBuf, PathBuf, Child)> = None;
    if args.urls.is_empty() {
        let exe = crate::server_binary()?;
        let dir = dir.unwrap_or_else(|| std::env::temp_dir().join(format!("authstore-history-{}", crate::run_id())));
        std::fs::create_dir_all(&dir)?;
        eprintln!("authstore-tools soak --history: {} s against a spawned server on {}", args.seconds, dir.display());
        let child = crate::soak::start(&exe, &dir, port)?;
        connect_retry(&format!("ws://127.0.0.1:{port}"), None, Duration::from_secs(60)).await?;
        spawned = Some((exe, dir, child));
    } else {
        eprintln!("authstore-tools soak --history: {} s against {}", args.seconds, args.urls.join(", "));
    }
    while started.elapsed() < total {
        let secs = round.min(total.saturating_sub(started.elapsed())).max(Duration::from_secs(1));
        let report = match &mut spawned {
            Some((exe, dir, child)) => round_with_kills(exe, dir, port, child, args, secs).await?,
            None => round_on(&args.urls, args, secs).await?,
        };
        rounds += 1;
        eprintln!("  round {rounds}: {}", report.summary());
        if !report.is_clean() {
            eprint!("{}", report.examples(3));
        }
        all.merge(report);
    }
    if let Some((_, _, mut child)) = spawned {
        let _ = child.kill();
        let _ = child.wait();
    }
    println!("soak --history: {rounds} rounds in {:.0?}", started.elapsed());
    println!("  {}", all.summary());
    for (kind, n) in all.counts() {
        println!("  {kind}: {n}");
    }
    if !all.is_clean() {
        print!("{}", all.examples(5));
        anyhow::bail!("the histories show {} anomalies", all.anomalies.len());
    }
    Ok(())
}
