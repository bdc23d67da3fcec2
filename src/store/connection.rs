//! Reaching the database: where it lives (`--db`), opening it, and whether it answers.
//!
//! An embedded store is opened only after this process holds its data directory and
//! SurrealKV's write-ahead log has been checked (`lock.rs`, `wal_tail.rs`): a torn tail is cut,
//! damage before the end refuses the start. Once open, every round trip is bounded; a round trip
//! that times out marks the database unreachable, so later calls fail at once instead of queueing
//! behind a dead connection, and one prober (not every caller) finds out when it is back.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use surrealdb::types::Object;
use tokio::sync::Notify;

use super::engine::{Handle, Memory};
use super::in_flight::InFlight;
use super::{Store, StoreError, WalRepair, batch, bulk, lock, schema, wal_tail};
use crate::clock::SystemClock;

/// How long one round trip to the database may take unless configured (`--db-timeout-ms`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The bound on each round trip while the schema is applied at start (instances starting
/// together on one server conflict and retry), and on the start's other reads.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(300);

/// How long after an emitting change was given up on (its answer timed out, or its call was
/// cancelled) the outbox floor stays before it. A margin only: embedded, a dropped query's
/// change has either committed already or never will (`in_flight.rs`).
const GIVEN_UP_FOR: chrono::Duration = chrono::Duration::seconds(60);

/// The longest `/ready` waits for the database to answer.
const READY_PROBE: Duration = Duration::from_secs(1);

/// Pause between probes while the database is unreachable.
const PROBE_PAUSE: Duration = Duration::from_millis(200);

/// Where the data lives, parsed from `--db`.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// Embedded SurrealKV in a local directory; every commit is fsynced.
    SurrealKv(String),
    /// Embedded, in memory; gone when the process ends.
    Memory,
    /// A SurrealDB server over WebSocket.
    Remote(String),
}

impl Location {
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("surrealkv://") {
            if path.is_empty() {
                return Err("surrealkv:// needs a directory, e.g. surrealkv://./data/authstore".into());
            }
            if path.starts_with('~') {
                return Err(format!("surrealkv://{path}: `~` is not expanded; give the directory as an absolute path"));
            }
            Ok(Location::SurrealKv(path.to_string()))
        } else if url == "mem://" || url == "memory" {
            Ok(Location::Memory)
        } else if url.starts_with("ws://") || url.starts_with("wss://") {
            Ok(Location::Remote(url.to_string()))
        } else {
            Err(format!("unsupported database URL {url:?}: use surrealkv://PATH, mem:// or ws://HOST:PORT"))
        }
    }

    /// The storage kind reported by `server.info`.
    pub fn kind(&self) -> &'static str {
        match self {
            Location::SurrealKv(_) => "surrealkv",
            Location::Memory => "mem",
            Location::Remote(_) => "ws",
        }
    }

    pub(super) fn endpoint(&self) -> String {
        match self {
            // sync=every is the 3.x default; saying it keeps the guarantee visible.
            Location::SurrealKv(path) => format!("surrealkv://{path}?sync=every"),
            Location::Memory => "mem://".to_string(),
            Location::Remote(url) => url.clone(),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::SurrealKv(path) => write!(f, "surrealkv://{path}"),
            Location::Memory => f.write_str("mem://"),
            // A URL may carry credentials; show only its scheme.
            Location::Remote(url) => write!(f, "{}://…", url.split("://").next().unwrap_or("ws")),
        }
    }
}

/// How to reach the database.
#[derive(Clone)]
pub struct StoreConfig {
    pub location: Location,
    pub namespace: String,
    pub database: String,
    /// Root credentials for a remote server.
    pub username: Option<String>,
    pub password: Option<String>,
    /// What an embedded SurrealKV store may keep in memory (`--cache-bytes`).
    pub memory: Memory,
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("location", &self.location)
            .field("namespace", &self.namespace)
            .field("database", &self.database)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("memory", &self.memory)
            .finish()
    }
}

/// Whether the database answers, shared by every handle of one store.
pub(super) struct Health {
    /// The bound on one round trip.
    pub(super) timeout: Duration,
    /// Set when a round trip timed out or lost its connection; cleared by the prober.
    pub(super) down: AtomicBool,
}

impl Health {
    pub(super) fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }
}

impl Store {
    /// Connects, selects namespace and database, and applies the schema, with the default
    /// bound on each round trip.
    pub async fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        Self::open_bounded(config, DEFAULT_TIMEOUT).await
    }

    /// [`Store::open`] with `timeout` as the bound on each round trip to the database.
    ///
    /// An embedded store's directory is taken for this process first, or the open is refused;
    /// then SurrealKV's write-ahead log is checked, and a log damaged before its end refuses the
    /// open too (see [`repair_wal`]).
    pub async fn open_bounded(config: &StoreConfig, timeout: Duration) -> Result<Self, StoreError> {
        let data_dir = match &config.location {
            Location::SurrealKv(path) => Some(Arc::new(take_data_dir(path, None).await?)),
            Location::Memory | Location::Remote(_) => None,
        };
        let db = Handle::open(config).await?;
        // Where this process is the database's only writer, the sequencer reads the outbox from
        // a floor the changes in flight set (`in_flight.rs`).
        let in_flight = match &config.location {
            Location::SurrealKv(_) | Location::Memory => Some(InFlight::new(GIVEN_UP_FOR, Arc::new(SystemClock))),
            Location::Remote(_) => None,
        };
        // Applying the schema is not a call anyone waits on: it gets a generous bound.
        let health = Arc::new(Health { timeout: timeout.max(STARTUP_TIMEOUT), down: AtomicBool::new(false) });
        let mut store = Store {
            db,
            kind: config.location.kind(),
            outbox_written: Arc::new(Notify::new()),
            in_flight: in_flight.map(Arc::new),
            pruned_below: Arc::default(),
            page_rows: match &config.location {
                Location::SurrealKv(_) => bulk::page_rows(config.memory.memtable_bytes),
                Location::Memory | Location::Remote(_) => bulk::PAGE,
            },
            deadlines: Arc::default(),
            queues: None,
            health,
            _data_dir: data_dir,
        };
        schema::apply(&store).await?;
        store.health =
            Arc::new(Health { timeout: timeout.max(Duration::from_millis(1)), down: AtomicBool::new(false) });
        store.queues = Some(batch::Queues::start(&store));
        Ok(store)
    }

    /// Whether the database answers: at once while it is known to be unreachable, otherwise
    /// after a probe bounded by a second (or the store's timeout, if shorter).
    pub async fn ready(&self) -> bool {
        // A probe slower than its short bound says "not ready" but leaves calls alone.
        !self.health.is_down() && self.answers().await
    }

    /// Whether a trivial query answers within a second (or the store's timeout, if shorter).
    pub(super) async fn answers(&self) -> bool {
        matches!(
            tokio::time::timeout(self.health.timeout.min(READY_PROBE), self.db.query("RETURN true", Object::default()))
                .await,
            Ok(Ok(_))
        )
    }

    /// The bound on one round trip to the database.
    pub fn timeout(&self) -> Duration {
        self.health.timeout
    }

    /// Whether the database is currently known to be unreachable.
    pub fn is_unreachable(&self) -> bool {
        self.health.is_down()
    }

    /// Marks the database unreachable. The first time, logs it and starts a prober that marks
    /// it reachable again once it answers.
    pub(super) fn unreachable(&self, cause: &str) {
        if self.health.down.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(
            cause,
            timeout_ms = self.health.timeout.as_millis() as u64,
            "database unreachable; calls answer 1005 until it is back"
        );
        let (db, health) = (self.db.clone(), self.health.clone());
        tokio::spawn(async move {
            let since = tokio::time::Instant::now();
            loop {
                if let Ok(Ok(_)) =
                    tokio::time::timeout(health.timeout, db.query("RETURN true", Object::default())).await
                {
                    health.down.store(false, Ordering::Release);
                    tracing::info!(after_ms = since.elapsed().as_millis() as u64, "database reachable again");
                    return;
                }
                tokio::time::sleep(PROBE_PAUSE).await;
            }
        });
    }
}

/// Accepts the loss `accept` names in an embedded store's write-ahead log: if the newest
/// segment is damaged exactly there, cuts it at the end of the last intact record before the
/// damage, keeping the removed bytes in `<dir>/wal-cut/`. Anything else is left as it is (and
/// other damage still refuses). Runs before [`Store::open`], under the same locks.
pub async fn repair_wal(location: &Location, accept: &WalRepair) -> Result<(), StoreError> {
    match location {
        Location::SurrealKv(path) => take_data_dir(path, Some(accept.clone())).await.map(drop),
        Location::Memory | Location::Remote(_) => Ok(()),
    }
}

/// Takes the data directory for this process and settles SurrealKV's write-ahead log there
/// before SurrealKV opens it (`lock.rs`, `wal_tail.rs`). The returned lock must be held for as
/// long as the datastore is open.
async fn take_data_dir(path: &str, accept: Option<WalRepair>) -> Result<lock::DataDirLock, StoreError> {
    let dir = PathBuf::from(path);
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)
            .map_err(|e| StoreError::Database(format!("cannot create data directory {}: {e}", dir.display())))?;
        let own = lock::DataDirLock::acquire(&dir)?;
        // Held while the log is read and cut, released just before SurrealKV takes it; `own`
        // keeps every other authstore out of the gap.
        let engine = lock::EngineLock::acquire(&dir)?;
        settle_wal(&dir, accept.as_ref())?;
        drop(engine);
        Ok(own)
    })
    .await
    .map_err(|e| StoreError::Database(format!("checking the data directory: {e}")))?
}

/// Cuts an unfinished record off the end of SurrealKV's log, so that this run's commits are
/// not appended after it and later truncated away; refuses a log damaged before its end unless
/// `accept` names that damage, and then cuts it there.
fn settle_wal(dir: &Path, accept: Option<&WalRepair>) -> Result<(), StoreError> {
    let wal = dir.join("wal");
    let checking =
        |e: std::io::Error| StoreError::Database(format!("checking the write-ahead log in {}: {e}", wal.display()));
    match wal_tail::trim(&wal).map_err(checking)? {
        wal_tail::Outcome::Clean => {
            if let Some(accept) = accept {
                tracing::warn!(
                    wal_repair = %accept,
                    "the write-ahead log is intact: --wal-repair (AUTHSTORE_WAL_REPAIR) has nothing to do; remove it"
                );
            }
        }
        wal_tail::Outcome::Trimmed { segment, removed } => tracing::warn!(
            segment = %segment.display(),
            removed_bytes = removed,
            "cut an unfinished record (left by a crash) off the end of the write-ahead log"
        ),
        wal_tail::Outcome::DamagedInside(damage) => {
            let keep = dir.join("wal-cut").join(format!("{}.at-{}", file_name(&damage.segment), damage.at));
            match accept {
                Some(accept) if accept.accepts(&damage) => {
                    let removed = wal_tail::cut(&damage, &keep).map_err(checking)?;
                    tracing::warn!(
                        segment = %damage.segment.display(),
                        damaged_at = damage.at,
                        cut_from = damage.intact_end,
                        removed_bytes = removed,
                        kept_in = %keep.display(),
                        "cut the damaged write-ahead log as --wal-repair accepted: the commits in the \
                         removed bytes are lost (a copy of the bytes is kept)"
                    );
                }
                other => return Err(StoreError::Database(damaged(dir, &damage, &keep, other))),
            }
        }
    }
    Ok(())
}

/// The refusal for a log damaged before its end: what, where, and how to recover.
fn damaged(dir: &Path, damage: &wal_tail::Damage, keep: &Path, given: Option<&WalRepair>) -> String {
    let accept = WalRepair::of(damage);
    let mismatch = given.map(|given| format!(" (--wal-repair {given} names other damage)")).unwrap_or_default();
    format!(
        "the write-ahead log segment {segment} is damaged at byte {at}, {tail} bytes before its end, and \
         intact records follow the damage: this is not an interrupted append, and what follows byte {at} \
         holds committed writes. Refusing to start{mismatch}: SurrealKV would drop them without asking \
         and send this run's commits to a replaced file. To accept the loss, back up {dir}, then start \
         once with --wal-repair {accept} (or AUTHSTORE_WAL_REPAIR={accept}): the segment is cut at byte \
         {from} and the {cut} bytes cut are kept in {keep}. See \"A damaged write-ahead log\" in \
         docs/operations.md",
        segment = damage.segment.display(),
        at = damage.at,
        tail = damage.len.saturating_sub(damage.at),
        dir = dir.display(),
        from = damage.intact_end,
        cut = damage.len.saturating_sub(damage.intact_end),
        keep = keep.display(),
    )
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_never_print_remote_credentials() {
        assert_eq!(Location::parse("mem://"), Ok(Location::Memory));
        assert_eq!(Location::parse("surrealkv://./data/x"), Ok(Location::SurrealKv("./data/x".into())));
        assert!(Location::parse("file://x").is_err());
        let remote = Location::parse("ws://user:pw@host:8000").unwrap();
        assert!(!format!("{remote:?}").contains("pw"));
    }
}
