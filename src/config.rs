//! Command line and environment: every flag has an `AUTHSTORE_*` twin.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::background::Timings;
use crate::domain::{Lifetime, Policy};
use crate::http::ApiKeys;
use crate::store::{Location, Memory, StoreConfig, WalRepair};

/// How long a graceful shutdown may take by default; deployment kill timeouts must exceed it.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 20;

// The defaults of the flags below, which `Config::ephemeral` shares, so each is written once.
// The policy's are `Policy::DEFAULT`; the event retention is `Timings::default()`'s.
const DEFAULT_DB_NAMESPACE: &str = "authstore";
const DEFAULT_DB_DATABASE: &str = "authstore";
const DEFAULT_MAX_MESSAGE_BYTES: u32 = 1024 * 1024;
const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
const DEFAULT_SUBSCRIBER_LAG_LIMIT: usize = 4096;
const DEFAULT_SUBSCRIBER_SEND_TIMEOUT_MS: u64 = 5000;
const DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION: u32 = 64;
const DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION: usize = 256;
const DEFAULT_WS_PING_INTERVAL_SECS: u64 = 30;
const DEFAULT_WS_INACTIVITY_SECS: u64 = 90;
const DEFAULT_CONNECTION_BUFFER: u32 = 1024;
const DEFAULT_WRITE_STALL_MS: u64 = DEFAULT_WS_INACTIVITY_SECS * 1000;
const DEFAULT_DB_TIMEOUT_MS: u64 = crate::store::DEFAULT_TIMEOUT.as_millis() as u64;

const DAY_SECS: u64 = 86_400;

/// Checks a duration flag against its range. The upper bounds are far beyond any sensible
/// setting and far below what would overflow a timestamp or a timer deadline: an unbounded
/// value used to be accepted and then panic inside a call (`--rotation-grace-secs`) or a
/// background loop (`--event-retention-secs`).
fn bounded(flag: &str, value: u64, min: u64, max: u64, unit: &str) -> Result<u64, String> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(format!("--{flag} must be between {min} and {max} {unit}, got {value}"))
    }
}

#[derive(Debug, Parser)]
#[command(name = "authstore", version, about = "Durable OAuth 2.1 / MCP authorization state over JSON-RPC")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The load, soak and scale tools are another binary, `authstore-tools` (`tools/`).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve JSON-RPC over WebSocket and HTTP.
    Serve(ServeArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "AUTHSTORE_LISTEN", default_value = "127.0.0.1:8750")]
    pub listen: SocketAddr,

    /// API key clients must present as `Authorization: Bearer <key>`. Repeat the flag, or
    /// separate keys with commas in the environment, to accept several (rotation).
    #[arg(long = "api-key", env = "AUTHSTORE_API_KEY", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<String>,

    /// File with one API key per line (blank lines and `#` comments ignored).
    #[arg(long, env = "AUTHSTORE_API_KEY_FILE")]
    pub api_key_file: Option<std::path::PathBuf>,

    /// The secret that secrets minted under an idempotency key are derived from (at least 32
    /// characters; every instance on one database must share it). Unset, a random one is kept
    /// in the database, where a copy of the database plus a guessable key yields the secret.
    #[arg(long, env = "AUTHSTORE_IDEMPOTENCY_SECRET", hide_env_values = true)]
    pub idempotency_secret: Option<String>,

    /// File holding the idempotency secret (its first line).
    #[arg(long, env = "AUTHSTORE_IDEMPOTENCY_SECRET_FILE", conflicts_with = "idempotency_secret")]
    pub idempotency_secret_file: Option<std::path::PathBuf>,

    /// A second address that answers only `GET /health`, `/ready` and `/metrics`, without an
    /// API key and without JSON-RPC: for health checks and metrics scrapers that cannot carry
    /// a key (keep it off the public network).
    #[arg(long, env = "AUTHSTORE_PROBE_LISTEN")]
    pub probe_listen: Option<SocketAddr>,

    /// Serve without API keys on a non-loopback address (refused by default).
    #[arg(long, env = "AUTHSTORE_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// Database: surrealkv://PATH (embedded, fsync per commit), mem:// or ws://HOST:PORT.
    #[arg(long, env = "AUTHSTORE_DB", default_value = "surrealkv://./data/authstore")]
    pub db: String,

    /// Accept losing what follows the damage in an embedded store's write-ahead log that the
    /// refusal to start named (SEGMENT@OFFSET, as printed): cut the log there, keeping a copy
    /// of the bytes cut under the data directory's `wal-cut/`. Other damage is still refused.
    #[arg(long, env = "AUTHSTORE_WAL_REPAIR", value_name = "SEGMENT@OFFSET")]
    pub wal_repair: Option<String>,

    /// Memory an embedded store (surrealkv://) may keep for its block cache, in bytes (at least
    /// 1 MiB). Default: an eighth of the machine's or the cgroup's memory, between 16 MiB and
    /// 16 GiB (64 MiB on a 512 MB machine).
    #[arg(long, env = "AUTHSTORE_CACHE_BYTES")]
    pub cache_bytes: Option<u64>,

    /// An embedded store's write buffer (SurrealKV's memtable), in bytes: between 16 MiB (a
    /// transaction must fit in it, and 64 grouped writes with the largest `data` take 5 MiB)
    /// and 4 GiB. Default: 64 MiB below 1 GiB of memory, 128 MiB below 4 GiB, 256 MiB above.
    #[arg(long, env = "AUTHSTORE_WRITE_BUFFER_BYTES")]
    pub write_buffer_bytes: Option<u64>,

    /// SurrealDB namespace.
    #[arg(long, env = "AUTHSTORE_DB_NAMESPACE", default_value = DEFAULT_DB_NAMESPACE)]
    pub db_namespace: String,

    /// SurrealDB database.
    #[arg(long, env = "AUTHSTORE_DB_DATABASE", default_value = DEFAULT_DB_DATABASE)]
    pub db_database: String,

    /// Root user for a remote SurrealDB server.
    #[arg(long, env = "AUTHSTORE_DB_USER")]
    pub db_user: Option<String>,

    /// Password for --db-user.
    #[arg(long, env = "AUTHSTORE_DB_PASS", hide_env_values = true)]
    pub db_pass: Option<String>,

    /// Default lifetime of a pending session, in seconds.
    #[arg(long, env = "AUTHSTORE_SESSION_TTL_SECS", default_value_t = Policy::DEFAULT.session.default_secs)]
    pub session_ttl_secs: u64,

    /// Default lifetime of an authorization code, in seconds (at most 600).
    #[arg(long, env = "AUTHSTORE_CODE_TTL_SECS", default_value_t = Policy::DEFAULT.code.default_secs)]
    pub code_ttl_secs: u64,

    /// Default lifetime of a refresh token, in seconds.
    #[arg(long, env = "AUTHSTORE_TOKEN_TTL_SECS", default_value_t = Policy::DEFAULT.token.default_secs)]
    pub token_ttl_secs: u64,

    /// Seconds during which a rotated refresh token may be presented again without revoking
    /// its family. 0 is strict.
    #[arg(long, env = "AUTHSTORE_ROTATION_GRACE_SECS", default_value_t = Policy::DEFAULT.rotation_grace_secs)]
    pub rotation_grace_secs: u64,

    /// Accept PKCE `plain` challenges (S256 only by default).
    #[arg(long, env = "AUTHSTORE_ALLOW_PLAIN_PKCE")]
    pub allow_plain_pkce: bool,

    /// Largest request or response, in bytes.
    #[arg(long, env = "AUTHSTORE_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: u32,

    /// Most simultaneous connections.
    #[arg(long, env = "AUTHSTORE_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: u32,

    /// How long lifecycle events are retained for `since` replays, in seconds.
    #[arg(long, env = "AUTHSTORE_EVENT_RETENTION_SECS", default_value_t = Timings::default().retention.as_secs())]
    pub event_retention_secs: u64,

    /// How many live events the feed keeps for subscribers; one that falls further behind
    /// catches up from the database instead.
    #[arg(long, env = "AUTHSTORE_SUBSCRIBER_LAG_LIMIT", default_value_t = DEFAULT_SUBSCRIBER_LAG_LIMIT)]
    pub subscriber_lag_limit: usize,

    /// Milliseconds a subscriber may leave a notification unread before it is closed.
    #[arg(long, env = "AUTHSTORE_SUBSCRIBER_SEND_TIMEOUT_MS", default_value_t = DEFAULT_SUBSCRIBER_SEND_TIMEOUT_MS)]
    pub subscriber_send_timeout_ms: u64,

    /// Most subscriptions one connection may hold.
    #[arg(long, env = "AUTHSTORE_MAX_SUBSCRIPTIONS_PER_CONNECTION", default_value_t = DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION)]
    pub max_subscriptions_per_connection: u32,

    /// Most calls one connection may have in flight; more are answered -32009 (busy).
    #[arg(long, env = "AUTHSTORE_MAX_IN_FLIGHT_PER_CONNECTION", default_value_t = DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION)]
    pub max_in_flight_per_connection: usize,

    /// Seconds between WebSocket pings (0 disables them).
    #[arg(long, env = "AUTHSTORE_WS_PING_INTERVAL_SECS", default_value_t = DEFAULT_WS_PING_INTERVAL_SECS)]
    pub ws_ping_interval_secs: u64,

    /// Seconds without a pong or a message after which a WebSocket connection is closed.
    #[arg(long, env = "AUTHSTORE_WS_INACTIVITY_SECS", default_value_t = DEFAULT_WS_INACTIVITY_SECS)]
    pub ws_inactivity_secs: u64,

    /// Messages (responses and notifications) queued per connection before a subscriber
    /// counts as not reading.
    #[arg(long, env = "AUTHSTORE_CONNECTION_BUFFER", default_value_t = DEFAULT_CONNECTION_BUFFER)]
    pub connection_buffer: u32,

    /// Kernel send buffer per connection, in bytes (default: the OS's autotuning). Bounds the
    /// memory a client that stops reading can pin.
    #[arg(long, env = "AUTHSTORE_SOCKET_SEND_BUFFER")]
    pub socket_send_buffer: Option<u32>,

    /// Milliseconds a connection's answers may wait on a client that reads none of them before
    /// the connection is reset (default: the WebSocket inactivity limit's 90 s).
    #[arg(long, env = "AUTHSTORE_WRITE_STALL_MS", default_value_t = DEFAULT_WRITE_STALL_MS)]
    pub write_stall_ms: u64,

    /// Milliseconds one round trip to the database may take. A call that needs longer, or
    /// that finds the database unreachable, answers 1005 instead of waiting.
    #[arg(long, env = "AUTHSTORE_DB_TIMEOUT_MS", default_value_t = DEFAULT_DB_TIMEOUT_MS)]
    pub db_timeout_ms: u64,

    /// Seconds to wait, on SIGTERM or SIGINT, for calls in flight and connections to finish.
    #[arg(long, env = "AUTHSTORE_SHUTDOWN_TIMEOUT_SECS", default_value_t = DEFAULT_SHUTDOWN_TIMEOUT_SECS)]
    pub shutdown_timeout_secs: u64,

    /// Log format.
    #[arg(long, env = "AUTHSTORE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// The server secret keyed mints derive from, as configured. Never printed.
#[derive(Clone)]
pub struct IdempotencySecret(pub String);

impl std::fmt::Debug for IdempotencySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdempotencySecret(<redacted>)")
    }
}

/// Everything `Application::build` needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Where probes are answered without an API key (`--probe-listen`), if anywhere.
    pub probe_listen: Option<SocketAddr>,
    pub store: StoreConfig,
    pub policy: Policy,
    pub max_message_bytes: u32,
    pub max_connections: u32,
    pub timings: Timings,
    pub subscriber_lag_limit: usize,
    pub subscriber_send_timeout: Duration,
    pub connection_buffer: u32,
    pub socket_send_buffer: Option<u32>,
    /// How long a write may wait on a client that reads nothing before its connection closes.
    pub write_stall: Duration,
    pub api_keys: ApiKeys,
    /// The configured idempotency secret (`--idempotency-secret[-file]`), if any.
    pub idempotency_secret: Option<IdempotencySecret>,
    pub max_subscriptions_per_connection: u32,
    pub max_in_flight_per_connection: usize,
    /// WebSocket ping interval and inactivity limit; `None` disables pings.
    pub ws_ping: Option<(Duration, Duration)>,
    pub shutdown_timeout: Duration,
    /// The write-ahead log damage the operator accepts losing (`--wal-repair`).
    pub wal_repair: Option<WalRepair>,
    /// The bound on one round trip to the database.
    pub db_timeout: Duration,
}

impl Config {
    /// Defaults for tests and embedding: port 0 on loopback, in-memory storage.
    pub fn ephemeral() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            probe_listen: None,
            store: StoreConfig {
                location: Location::Memory,
                namespace: DEFAULT_DB_NAMESPACE.into(),
                database: DEFAULT_DB_DATABASE.into(),
                username: None,
                password: None,
                memory: Memory::default_for(None),
            },
            policy: Policy::DEFAULT,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            timings: Timings::default(),
            subscriber_lag_limit: DEFAULT_SUBSCRIBER_LAG_LIMIT,
            subscriber_send_timeout: Duration::from_millis(DEFAULT_SUBSCRIBER_SEND_TIMEOUT_MS),
            connection_buffer: DEFAULT_CONNECTION_BUFFER,
            socket_send_buffer: None,
            write_stall: Duration::from_millis(DEFAULT_WRITE_STALL_MS),
            api_keys: ApiKeys::default(),
            idempotency_secret: None,
            max_subscriptions_per_connection: DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION,
            max_in_flight_per_connection: DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION,
            ws_ping: Some((
                Duration::from_secs(DEFAULT_WS_PING_INTERVAL_SECS),
                Duration::from_secs(DEFAULT_WS_INACTIVITY_SECS),
            )),
            shutdown_timeout: Duration::from_secs(DEFAULT_SHUTDOWN_TIMEOUT_SECS),
            wal_repair: None,
            db_timeout: crate::store::DEFAULT_TIMEOUT,
        }
    }
}

impl TryFrom<&ServeArgs> for Config {
    type Error = String;

    fn try_from(args: &ServeArgs) -> Result<Self, String> {
        let location = Location::parse(&args.db)?;
        let wal_repair = args.wal_repair.as_deref().map(str::parse::<WalRepair>).transpose()?;
        if wal_repair.is_some() && !matches!(location, Location::SurrealKv(_)) {
            return Err("--wal-repair applies to an embedded store (surrealkv://) only".into());
        }
        let mut keys: Vec<String> =
            args.api_keys.iter().map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect();
        if let Some(path) = &args.api_key_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --api-key-file {}: {e}", path.display()))?;
            keys.extend(
                text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string),
            );
        }
        let idempotency_secret = match (&args.idempotency_secret, &args.idempotency_secret_file) {
            (Some(value), _) => Some(value.trim().to_string()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read --idempotency-secret-file {}: {e}", path.display()))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        if idempotency_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return Err("the idempotency secret must be at least 32 characters".into());
        }
        if let Some(short) = keys.iter().find(|k| k.len() < 16) {
            return Err(format!("API keys must be at least 16 characters (one has {})", short.len()));
        }
        if keys.is_empty() && !args.listen.ip().is_loopback() && !args.allow_unauthenticated {
            return Err(format!(
                "refusing to serve {} without an API key: set --api-key / --api-key-file, or --allow-unauthenticated",
                args.listen
            ));
        }
        let rotation_grace_secs = bounded("rotation-grace-secs", args.rotation_grace_secs, 0, DAY_SECS, "seconds")?;
        let retention = bounded("event-retention-secs", args.event_retention_secs, 1, 366 * DAY_SECS, "seconds")?;
        let send_timeout_ms =
            bounded("subscriber-send-timeout-ms", args.subscriber_send_timeout_ms, 1, DAY_SECS * 1000, "milliseconds")?;
        let ping_interval = bounded("ws-ping-interval-secs", args.ws_ping_interval_secs, 0, DAY_SECS, "seconds")?;
        let inactivity = bounded("ws-inactivity-secs", args.ws_inactivity_secs, 1, DAY_SECS, "seconds")?;
        let write_stall_ms = bounded("write-stall-ms", args.write_stall_ms, 100, DAY_SECS * 1000, "milliseconds")?;
        let shutdown_timeout = bounded("shutdown-timeout-secs", args.shutdown_timeout_secs, 0, DAY_SECS, "seconds")?;
        let mut memory = Memory::default_for_this_machine();
        if let Some(bytes) = args.cache_bytes {
            memory = memory.with_cache(bounded("cache-bytes", bytes, 1 << 20, 1 << 40, "bytes")?);
        }
        if let Some(bytes) = args.write_buffer_bytes {
            memory.memtable_bytes = bounded("write-buffer-bytes", bytes, 16 << 20, 4 << 30, "bytes")?;
        }
        let db_timeout_ms = bounded("db-timeout-ms", args.db_timeout_ms, 1, DAY_SECS * 1000, "milliseconds")?;
        let defaults = Policy::DEFAULT;
        let lifetime = |flag: &str, default_secs: u64, max: Lifetime| {
            if default_secs == 0 || default_secs > max.max_secs {
                Err(format!("--{flag} must be between 1 and {}", max.max_secs))
            } else {
                Ok(Lifetime { default_secs, max_secs: max.max_secs })
            }
        };
        Ok(Config {
            listen: args.listen,
            probe_listen: args.probe_listen,
            store: StoreConfig {
                location,
                namespace: args.db_namespace.clone(),
                database: args.db_database.clone(),
                username: args.db_user.clone(),
                password: args.db_pass.clone(),
                memory,
            },
            policy: Policy {
                session: lifetime("session-ttl-secs", args.session_ttl_secs, defaults.session)?,
                code: lifetime("code-ttl-secs", args.code_ttl_secs, defaults.code)?,
                token: lifetime("token-ttl-secs", args.token_ttl_secs, defaults.token)?,
                rotation_grace_secs,
                allow_plain_pkce: args.allow_plain_pkce,
                document_max_age_secs: defaults.document_max_age_secs,
                code_replay_window_secs: defaults.code_replay_window_secs,
            },
            max_message_bytes: args.max_message_bytes,
            max_connections: args.max_connections,
            timings: Timings { retention: Duration::from_secs(retention), ..Timings::default() },
            subscriber_lag_limit: args.subscriber_lag_limit.max(1),
            subscriber_send_timeout: Duration::from_millis(send_timeout_ms),
            connection_buffer: args.connection_buffer.max(1),
            socket_send_buffer: args.socket_send_buffer,
            write_stall: Duration::from_millis(write_stall_ms),
            api_keys: ApiKeys::new(keys.iter().map(String::as_str)),
            idempotency_secret: idempotency_secret.map(IdempotencySecret),
            max_subscriptions_per_connection: args.max_subscriptions_per_connection.max(1),
            max_in_flight_per_connection: args.max_in_flight_per_connection.max(1),
            ws_ping: (ping_interval > 0).then(|| (Duration::from_secs(ping_interval), Duration::from_secs(inactivity))),
            shutdown_timeout: Duration::from_secs(shutdown_timeout),
            wal_repair,
            db_timeout: Duration::from_millis(db_timeout_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(flags: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(["authstore", "serve", "--db", "mem://"].iter().chain(flags))
            .map_err(|e| e.to_string())?;
        let Command::Serve(args) = cli.command;
        Config::try_from(&args)
    }

    #[test]
    fn defaults_are_accepted() {
        let config = config(&[]).unwrap();
        assert_eq!(config.policy.rotation_grace_secs, 0);
        assert_eq!(config.timings.retention, Duration::from_secs(86_400));
    }

    // A grace window of 2^63 seconds used to be accepted, and the first reuse of a rotated token
    // then panicked adding it to a timestamp.
    #[test]
    fn duration_flags_out_of_range_are_refused_at_start_naming_the_flag() {
        let huge = u64::MAX.to_string();
        for flag in [
            "--rotation-grace-secs",
            "--event-retention-secs",
            "--subscriber-send-timeout-ms",
            "--ws-ping-interval-secs",
            "--ws-inactivity-secs",
            "--shutdown-timeout-secs",
            "--session-ttl-secs",
            "--code-ttl-secs",
            "--token-ttl-secs",
            "--write-stall-ms",
        ] {
            for value in [huge.as_str(), "9223372036854775807", "100000000000"] {
                let error = config(&[flag, value]).expect_err(flag);
                assert!(error.contains(flag), "{flag} {value}: {error}");
            }
        }
        for (flag, zero_ok) in [
            ("--rotation-grace-secs", true),
            ("--ws-ping-interval-secs", true),
            ("--shutdown-timeout-secs", true),
            ("--event-retention-secs", false),
            ("--subscriber-send-timeout-ms", false),
            ("--ws-inactivity-secs", false),
            ("--write-stall-ms", false),
        ] {
            assert_eq!(config(&[flag, "0"]).is_ok(), zero_ok, "{flag} 0");
        }
        assert_eq!(config(&["--write-stall-ms", "1500"]).unwrap().write_stall, Duration::from_millis(1500));
        assert_eq!(config(&["--rotation-grace-secs", "86400"]).unwrap().policy.rotation_grace_secs, 86_400);
    }

    #[test]
    fn the_cache_and_write_buffer_are_bounded_and_a_tilde_path_is_refused() {
        assert_eq!(config(&["--cache-bytes", "67108864"]).unwrap().store.memory.cache_bytes, 64 << 20);
        for value in ["0", "1048575", &u64::MAX.to_string()] {
            let error = config(&["--cache-bytes", value]).expect_err(value);
            assert!(error.contains("--cache-bytes"), "{value}: {error}");
        }
        assert_eq!(config(&["--write-buffer-bytes", "16777216"]).unwrap().store.memory.memtable_bytes, 16 << 20);
        for value in ["0", "16777215", &(4u64 << 30 | 1).to_string()] {
            let error = config(&["--write-buffer-bytes", value]).expect_err(value);
            assert!(error.contains("--write-buffer-bytes"), "{value}: {error}");
        }
        let error = Location::parse("surrealkv://~/data").expect_err("a ~ path");
        assert!(error.contains("absolute path"), "{error}");
    }
}
