//! The deployment files fit the binary they deploy.

use std::net::SocketAddr;
use std::time::Duration;

use authstore::config::{Cli, DEFAULT_SHUTDOWN_TIMEOUT_SECS};
use clap::CommandFactory;
use toml::Value;

fn fly() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fly.toml")).expect("fly.toml");
    text.parse::<toml::Table>().map(Value::Table).expect("fly.toml parses")
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(v, |v, k| v.get(*k))
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("fly.toml has no string at {path:?}"))
}

/// Every environment variable `authstore serve` reads.
fn serve_env_vars() -> Vec<String> {
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").expect("serve subcommand");
    serve.get_arguments().filter_map(|a| a.get_env()).map(|e| e.to_string_lossy().to_string()).collect()
}

fn seconds(text: &str) -> u64 {
    let digits = text.trim_end_matches('s');
    digits.parse().unwrap_or_else(|_| panic!("{text:?} is not a duration in seconds"))
}

#[test]
fn fly_toml_matches_the_binary() {
    let fly = fly();
    let env = fly.get("env").and_then(Value::as_table).expect("[env]");
    let known = serve_env_vars();
    for key in env.keys() {
        assert!(known.contains(key), "fly.toml sets {key}, which authstore does not read (it reads {known:?})");
    }
    assert!(!env.contains_key("AUTHSTORE_API_KEY"), "keys belong in `fly secrets`, not fly.toml");
    assert!(!env.contains_key("AUTHSTORE_ALLOW_UNAUTHENTICATED"), "a deployed instance requires API keys");

    // The service port is the one the binary listens on, on every interface.
    let listen: SocketAddr =
        str_at(&fly, &["env", "AUTHSTORE_LISTEN"]).parse().expect("AUTHSTORE_LISTEN is an address");
    assert!(listen.ip().is_unspecified(), "Fly reaches the Machine from outside: listen on [::] or 0.0.0.0");
    let service = fly.get("http_service").expect("[http_service]");
    assert_eq!(service.get("internal_port").and_then(Value::as_integer), Some(i64::from(listen.port())));

    // The database lives on the mounted volume.
    let mount = fly.get("mounts").and_then(Value::as_array).and_then(|m| m.first()).expect("[[mounts]]");
    let destination = mount.get("destination").and_then(Value::as_str).expect("mount destination");
    let db = str_at(&fly, &["env", "AUTHSTORE_DB"]);
    let path = db.strip_prefix("surrealkv://").expect("an embedded SurrealKV database");
    assert!(path.starts_with(&format!("{destination}/")), "{db} is not on the volume at {destination}");

    // Health checks hit the unauthenticated liveness route.
    let checks = service.get("checks").and_then(Value::as_array).expect("[[http_service.checks]]");
    assert!(checks.iter().any(|c| c.get("path").and_then(Value::as_str) == Some("/health")));

    // Clients hold sockets: no auto-stop, at least one Machine.
    assert_eq!(service.get("auto_stop_machines").and_then(Value::as_str), Some("off"));
    assert!(service.get("min_machines_running").and_then(Value::as_integer).unwrap_or(0) >= 1);

    // Fly's kill signal is one the binary shuts down gracefully on, and it waits long enough.
    assert!(matches!(str_at(&fly, &["kill_signal"]), "SIGTERM" | "SIGINT"));
    let kill_timeout = Duration::from_secs(seconds(str_at(&fly, &["kill_timeout"])));
    assert!(
        kill_timeout > Duration::from_secs(DEFAULT_SHUTDOWN_TIMEOUT_SECS),
        "kill_timeout must exceed the shutdown timeout"
    );
}

#[test]
fn the_dockerfile_builds_the_binary_and_runs_it_unprivileged() {
    let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).expect("Dockerfile");
    let entrypoint =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/entrypoint.sh")).expect("entrypoint");
    assert!(dockerfile.matches("FROM ").count() >= 2, "multi-stage");
    assert!(dockerfile.contains("--locked") && dockerfile.contains("--bin authstore"));
    assert!(dockerfile.contains("EXPOSE 8750"));
    assert!(dockerfile.contains("useradd"), "a service user exists");
    assert!(entrypoint.contains("setpriv --reuid=authstore"), "privileges are dropped before authstore starts");
    assert!(entrypoint.contains("exec "), "authstore replaces the shell and receives signals");
}
