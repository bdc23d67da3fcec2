//! History checking (Jepsen/Elle, Porcupine style): many connections run random operations on
//! a tiny key space, with 2-way and wider races on one code or token, while subscribers record
//! both event streams; the checker in `authstore_tools::history` then asserts that the history
//! is explainable by the contract's sequential rules. Five deployments:
//! in-process on `mem://`, on a real SurrealDB server, two `authstore serve` processes sharing
//! one SurrealDB server, one `authstore serve` on embedded SurrealKV, and the same killed with
//! SIGKILL between phases.
//!
//! `HISTORY_SECS` (default 4) sets the load time per mode.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use authstore_tools::history::{Report, Workload, WorkloadConfig, run_once};

use crate::remote::{free_port, server};
use crate::support::{Backend, TestApp};

fn seconds() -> Duration {
    let secs = std::env::var("HISTORY_SECS").ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(4.0);
    Duration::from_secs_f64(secs)
}

fn config() -> WorkloadConfig {
    WorkloadConfig { connections: 10, workers: 8, ..WorkloadConfig::default() }
}

fn assert_clean(mode: &str, report: &Report) {
    eprintln!("{mode}: {}", report.summary());
    // A run without races proves nothing.
    for race in ["code_races", "rotate_races"] {
        assert!(report.stats.get(race).copied().unwrap_or(0) > 0, "{mode}: no {race}: {}", report.summary());
    }
    assert!(
        report.is_clean(),
        "{mode}: the history is not explainable by the contract:\n{}\n{}",
        report.summary(),
        report.examples(3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_in_process_mem_is_explainable() {
    let app = TestApp::spawn().await;
    let report = run_once(vec![app.ws_url()], config(), seconds()).await.expect("workload");
    assert_clean("mem", &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_on_a_surrealdb_server_is_explainable() {
    let app = TestApp::spawn_on(Backend::remote()).await;
    let report = run_once(vec![app.ws_url()], config(), seconds()).await.expect("workload");
    assert_clean("remote", &report);
}

/// An `authstore serve` process; killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve_remote(database: &str, port: u16) -> Process {
    let server = server();
    let child = Command::new(env!("CARGO_BIN_EXE_authstore"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--db", &server.url])
        .args(["--db-namespace", "history", "--db-database", database])
        .env("AUTHSTORE_DB_USER", &server.user)
        .env("AUTHSTORE_DB_PASS", &server.pass)
        // The shared debug-built SurrealDB server can stall for seconds on a loaded machine;
        // the history must record answers, not the 5 s default's 1005s.
        .env("AUTHSTORE_DB_TIMEOUT_MS", "60000")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start authstore");
    Process(child)
}

fn serve_surrealkv(dir: &Path, port: u16) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_authstore"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--db")
        .arg(format!("surrealkv://{}", dir.display()))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start authstore");
    Process(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_across_two_instances_on_one_server_is_explainable() {
    let database = format!("h{}", authstore::secret::generate_id().replace(['-', '_'], "x"));
    let (port_a, port_b) = (free_port(), free_port());
    let _a = serve_remote(&database, port_a);
    let _b = serve_remote(&database, port_b);
    let endpoints = vec![format!("ws://127.0.0.1:{port_a}"), format!("ws://127.0.0.1:{port_b}")];
    for url in &endpoints {
        authstore_tools::history::connect_retry(url, None, Duration::from_secs(180)).await.expect("instance up");
    }
    let report = run_once(endpoints, config(), seconds()).await.expect("workload");
    assert_clean("two instances", &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_on_embedded_surrealkv_is_explainable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let _process = serve_surrealkv(&dir.path().join("db"), port);
    let endpoints = vec![format!("ws://127.0.0.1:{port}")];
    authstore_tools::history::connect_retry(&endpoints[0], None, Duration::from_secs(120)).await.expect("up");
    let report = run_once(endpoints, config(), seconds()).await.expect("workload");
    assert_clean("surrealkv", &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_across_sigkill_restarts_is_explainable() {
    const PHASES: u32 = 3;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("db");
    let port = free_port();
    let endpoints = vec![format!("ws://127.0.0.1:{port}")];
    let mut process = serve_surrealkv(&data, port);
    let workload = Workload::new(config());
    workload.setup(&endpoints).await.expect("setup");
    let mut feeds = workload.start_feeds(&endpoints);
    feeds.ready().await;
    let phase = (seconds() / PHASES).max(Duration::from_millis(1500));
    for _ in 0..PHASES {
        // Each phase starts once the (re)started server answers.
        authstore_tools::history::connect_retry(&endpoints[0], None, Duration::from_secs(120)).await.expect("up");
        // The kill lands while the load is running: calls in flight end unknown.
        let load = workload.phase(&endpoints, phase);
        let kill = async {
            tokio::time::sleep(phase.mul_f64(0.8)).await;
            let _ = process.0.kill();
            let _ = process.0.wait();
        };
        tokio::join!(load, kill);
        workload.disconnect();
        process = serve_surrealkv(&data, port);
    }
    workload.sweep(&endpoints).await;
    let feeds = feeds.finish().await;
    let report = authstore_tools::history::check(&workload.history(feeds));
    drop(process);
    assert_clean("sigkill restarts", &report);
}
