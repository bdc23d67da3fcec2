//! One real SurrealDB server process (`authstore-surreal start ... memory`) shared by the
//! remote-mode tests; each test uses a database of its own on it.
//!
//! The process is started from a thread that lives as long as the test binary and is asked to
//! die with it (PR_SET_PDEATHSIG), so no server outlives the suite.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct RemoteServer {
    pub url: String,
    pub user: String,
    pub pass: String,
}

static SERVER: OnceLock<RemoteServer> = OnceLock::new();

/// The shared server, started on first use.
pub fn server() -> &'static RemoteServer {
    SERVER.get_or_init(start)
}

/// A free loopback port (the listener is dropped before the server binds it).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr").port()
}

fn start() -> RemoteServer {
    let port = free_port();
    let (user, pass) = ("root".to_string(), "root-test-password".to_string());
    let bind = format!("127.0.0.1:{port}");
    let args: Vec<String> = ["start", "--bind", &bind, "--user", &user, "--pass", &pass, "--log", "warn", "memory"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("surreal-server-owner".into())
        .spawn(move || {
            let mut command = Command::new(surreal_binary());
            command.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit());
            die_with_parent(&mut command);
            let child = command.spawn();
            let ok = child.is_ok();
            let _ = tx.send(child.map(|_| ()).map_err(|e| e.to_string()));
            if ok {
                // Keep this thread (the child's parent thread) alive for the whole run.
                loop {
                    std::thread::park();
                }
            }
        })
        .expect("spawn owner thread");
    rx.recv().expect("owner thread").expect("start authstore-surreal");
    wait_for_port(port, Duration::from_secs(60));
    RemoteServer { url: format!("ws://127.0.0.1:{port}"), user, pass }
}

/// The `authstore-surreal` example, which `cargo test` builds next to the binaries
/// (`target/debug/examples/`); `AUTHSTORE_SURREAL_BIN` overrides it.
fn surreal_binary() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("AUTHSTORE_SURREAL_BIN") {
        return path.into();
    }
    let authstore = std::path::Path::new(env!("CARGO_BIN_EXE_authstore"));
    let path = authstore.with_file_name("examples").join("authstore-surreal");
    assert!(
        path.exists(),
        "{} is missing: run the suite with `cargo test` (which builds examples) or \
         `cargo build --example authstore-surreal` first",
        path.display()
    );
    path
}

fn wait_for_port(port: u16, limit: Duration) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < limit, "SurrealDB server did not listen on {port} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child being set up.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}
