//! Storage on SurrealDB: the only module that writes SurrealQL.
//!
//! Every state change is one SurrealDB transaction that also writes the events it causes.
//! Single use and rotation rest on conditional writes whose results are checked: a write that
//! matched nothing, or a commit that hit a write conflict, becomes [`StoreError::Retry`] and the
//! operation runs again from a fresh read, so losers of a race see the winner's result.
//!
//! Every round trip to the database is bounded by the store's timeout (`--db-timeout-ms`). A
//! round trip that times out marks the database unreachable: that is
//! logged once, later calls fail at once (1005) instead of queueing behind a dead connection,
//! and a prober marks it reachable again (logged once) when it answers. A write that was sent
//! and not answered has an unknown outcome and says so ([`StoreError::OutcomeUnknown`]); it is
//! never reported as "nothing was changed". Group-committed writes resolve that themselves
//! (`batch.rs`): each batch records its operation id, so running it again either finds its
//! own commit or applies it once.

mod batch;
mod clients;
mod codes;
mod error;
mod events;
mod expiry;
mod feed;
mod idempotency;
mod lock;
mod schema;
mod sessions;
mod stats;
mod tokens;
mod wal_tail;

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use surrealdb::engine::any::{self, Any};
use surrealdb::opt::auth::Root;
use surrealdb::types::{Object, QueryError, RecordId, SurrealValue};
use surrealdb::{IndexedResults, Surreal};
use tokio::sync::Notify;

pub use error::StoreError;
pub use expiry::ExpiryPass;
pub use feed::{EventRecord, LogBounds};
pub use sessions::SessionFilter;
pub use tokens::TokenFilter;
pub use wal_tail::WalRepair;

use crate::error::{Error, InvalidClient, InvalidGrant, NotFound};

/// How many times an operation that keeps losing races is tried before giving up.
const MAX_ATTEMPTS: u32 = 200;

/// How long one round trip to the database may take unless configured (`--db-timeout-ms`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The bound on each round trip while the schema is applied at start (instances starting
/// together on one server conflict and retry).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(300);

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

    fn endpoint(&self) -> String {
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
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("location", &self.location)
            .field("namespace", &self.namespace)
            .field("database", &self.database)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The handle to authstore's data. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Surreal<Any>,
    kind: &'static str,
    /// Woken after every committed transaction that wrote to the outbox, so the sequencer
    /// runs at once instead of at its next tick.
    outbox_written: Arc<Notify>,
    /// Group commit for point reads and single-statement writes (`batch.rs`); `None` in the
    /// handles its own workers use.
    queues: Option<batch::Queues>,
    /// An embedded store's data directory, held for as long as any handle is (`lock.rs`).
    _data_dir: Option<Arc<lock::DataDirLock>>,
    /// Whether the database answers, and how long it may take.
    health: Arc<Health>,
}

/// Whether the database answers, shared by every handle of one store.
struct Health {
    /// The bound on one round trip.
    timeout: Duration,
    /// Set when a round trip timed out or lost its connection; cleared by the prober.
    down: AtomicBool,
}

impl Health {
    fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("kind", &self.kind).finish_non_exhaustive()
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
        let db = any::connect(config.location.endpoint()).await?;
        if let (Some(username), Some(password)) = (&config.username, &config.password) {
            db.signin(Root { username: username.clone(), password: password.clone() }).await?;
        }
        db.use_ns(config.namespace.clone()).use_db(config.database.clone()).await?;
        // Applying the schema is not a call anyone waits on: it gets a generous bound.
        let health = Arc::new(Health { timeout: timeout.max(STARTUP_TIMEOUT), down: AtomicBool::new(false) });
        let mut store = Store {
            db,
            kind: config.location.kind(),
            outbox_written: Arc::new(Notify::new()),
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

    /// Resolves after the next transaction that wrote events commits.
    pub fn outbox_written(&self) -> Arc<Notify> {
        self.outbox_written.clone()
    }

    /// `surrealkv`, `mem` or `ws`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The database's definitions (tables, fields, indexes) as SurrealDB reports them; equal
    /// before and after a restart when applying the schema changed nothing.
    pub async fn schema_definition(&self) -> Result<serde_json::Value, StoreError> {
        const SQL: &str = "RETURN { db: (INFO FOR DB), client: (INFO FOR TABLE client), \
            session: (INFO FOR TABLE session), code: (INFO FOR TABLE code), family: (INFO FOR TABLE family), \
            token: (INFO FOR TABLE token), outbox: (INFO FOR TABLE outbox), event: (INFO FOR TABLE event), \
            sequencer: (INFO FOR TABLE sequencer), idem: (INFO FOR TABLE idem) }";
        let mut results = self.query(SQL, Vars::new()).await?;
        let value: Option<serde_json::Value> = results.take(0)?;
        value.ok_or_else(|| StoreError::Decode("INFO FOR DB returned nothing".into()))
    }

    /// Whether the database answers: at once while it is known to be unreachable, otherwise
    /// after a probe bounded by a second (or the store's timeout, if shorter).
    pub async fn ready(&self) -> bool {
        // A probe slower than its short bound says "not ready" but leaves calls alone.
        !self.health.is_down() && self.answers().await
    }

    /// Whether a trivial query answers within a second (or the store's timeout, if shorter).
    async fn answers(&self) -> bool {
        matches!(
            tokio::time::timeout(self.health.timeout.min(READY_PROBE), self.db.query("RETURN true")).await,
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
    fn unreachable(&self, cause: &str) {
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
                if let Ok(Ok(_)) = tokio::time::timeout(health.timeout, db.query("RETURN true")).await {
                    health.down.store(false, Ordering::Release);
                    tracing::info!(after_ms = since.elapsed().as_millis() as u64, "database reachable again");
                    return;
                }
                tokio::time::sleep(PROBE_PAUSE).await;
            }
        });
    }

    /// Runs one query, bounded by the store's timeout, and classifies per-statement errors.
    ///
    /// While the database is unreachable it fails at once with [`StoreError::Unreachable`],
    /// sending nothing. A query that loses its connection or its answer fails with
    /// [`StoreError::OutcomeUnknown`] if it writes, [`StoreError::Unreachable`] if it only reads.
    async fn query(&self, sql: &str, vars: Vars) -> Result<IndexedResults, StoreError> {
        if self.health.is_down() {
            return Err(StoreError::Unreachable);
        }
        let lost = || if writes(sql) { StoreError::OutcomeUnknown } else { StoreError::Unreachable };
        let mut results = match tokio::time::timeout(self.health.timeout, self.db.query(sql).bind(vars.0)).await {
            Ok(Ok(results)) => results,
            // The connection dropped under this query. The client reconnects by itself and
            // queues what comes next: a blip costs only the queries in flight, an outage
            // shows as the next query's timeout.
            Ok(Err(e)) if e.is_connection() => {
                tracing::debug!(error = %e, "database connection lost under a query");
                return Err(lost());
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                // One slow query (a large purge, a scan) is not an outage: the database is
                // marked unreachable only if a trivial probe gets no answer either.
                if !self.answers().await {
                    self.unreachable("no answer within the timeout");
                }
                return Err(lost());
            }
        };
        let errors = results.take_errors();
        if errors.is_empty() {
            // Every fragment that emits an event writes `CREATE outbox`.
            if sql.contains("CREATE outbox") {
                self.outbox_written.notify_one();
            }
            return Ok(results);
        }
        // A failed transaction reports the cause in one slot and "not executed" in the
        // others; classify by the most specific cause.
        let mut worst = None;
        for (_, e) in errors {
            let class = classify(&e);
            if worst.as_ref().is_none_or(|(rank, _)| class.0 > *rank) {
                worst = Some(class);
            }
        }
        Err(worst.map(|(_, e)| e).unwrap_or(StoreError::Retry))
    }

    /// One record by table and key, live or not. Concurrent reads share one query.
    async fn row<T: DeserializeOwned>(&self, table: &'static str, key: &str) -> Result<Option<T>, StoreError> {
        let value = match &self.queues {
            Some(queues) => queues.read(table, key).await?,
            None => take_one(
                &mut self.query("SELECT * FROM ONLY $rid", Vars::new().set("rid", record(table, key))).await?,
                0,
            )?,
        };
        value.map(|v| serde_json::from_value(v).map_err(|e| StoreError::Decode(e.to_string()))).transpose()
    }

    /// Runs one statement that names its parameters `$item.<name>` and returns what it
    /// returns. Concurrent writes share one transaction (group commit); a write that lost a
    /// race reports [`StoreError::Retry`] like any other query.
    async fn write<T: DeserializeOwned>(&self, sql: &'static str, vars: Vars) -> Result<Option<T>, StoreError> {
        let value: Option<serde_json::Value> = match &self.queues {
            Some(queues) => queues.write(sql, vars).await?,
            None => take_one(&mut self.query(sql, Vars::new().set("item", vars.0)).await?, 0)?,
        };
        value.map(|v| serde_json::from_value(v).map_err(|e| StoreError::Decode(e.to_string()))).transpose()
    }

    /// Runs `attempt` until it stops asking for a retry.
    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        for n in 0..MAX_ATTEMPTS {
            match attempt().await {
                Err(StoreError::Retry) => backoff(n).await,
                other => return other,
            }
        }
        Err(StoreError::Retry)
    }
}

/// Whether a query may change data: it names a writing statement. Our SurrealQL spells
/// keywords in capitals; a read never contains these words.
fn writes(sql: &str) -> bool {
    ["CREATE ", "UPDATE ", "UPSERT ", "DELETE ", "INSERT ", "RELATE ", "DEFINE ", "REMOVE "]
        .iter()
        .any(|keyword| sql.contains(keyword))
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

/// Ranks an error by how much it tells us, and maps it.
fn classify(e: &surrealdb::Error) -> (u8, StoreError) {
    if e.is_thrown()
        && let Some(rejection) = thrown(e.message())
    {
        return (4, rejection);
    }
    if e.is_already_exists() {
        return (3, StoreError::AlreadyExists);
    }
    if matches!(e.query_details(), Some(QueryError::TransactionConflict)) {
        return (2, StoreError::Retry);
    }
    if matches!(e.query_details(), Some(QueryError::NotExecuted)) {
        return (0, StoreError::Retry);
    }
    (1, StoreError::Database(e.to_string()))
}

/// Marker that SurrealQL `THROW`s carry: `authstore:retry`, `authstore:not_found:expired`...
const THROWN: &str = "authstore:";

/// Maps a `THROW` raised by our own SurrealQL back to its meaning.
fn thrown(message: &str) -> Option<StoreError> {
    let tail = &message[message.find(THROWN)? + THROWN.len()..];
    let mut parts = tail.trim_end_matches(['"', '\'']).splitn(2, ':');
    let kind = parts.next()?;
    let reason = parts.next().unwrap_or_default();
    let error = match kind {
        "retry" => return Some(StoreError::Retry),
        "recorded" => return Some(StoreError::Recorded),
        "conflict" => Error::Conflict,
        "not_found" => Error::NotFound(NotFound::parse(reason).unwrap_or(NotFound::Missing)),
        "invalid_grant" => Error::InvalidGrant(InvalidGrant::parse(reason)?),
        "invalid_client" => Error::InvalidClient(InvalidClient::parse(reason)?),
        _ => return None,
    };
    Some(StoreError::Rejected(error))
}

async fn backoff(attempt: u32) {
    let mut bytes = [0u8; 2];
    let jitter = match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from(u16::from_le_bytes(bytes)),
        Err(_) => 0,
    };
    // Up to ~1 ms at first, growing to ~8 ms: enough to let one contender commit.
    let ceiling = 1000 * u64::from(1 + attempt.min(7));
    tokio::time::sleep(Duration::from_micros(jitter % ceiling)).await;
}

/// Query parameters. Values are bound, never spliced into SurrealQL text.
#[derive(Default, Clone)]
struct Vars(Object);

impl Vars {
    fn new() -> Self {
        Self::default()
    }

    fn set(mut self, key: &str, value: impl SurrealValue) -> Self {
        self.0.insert(key, value);
        self
    }
}

fn record(table: &str, key: &str) -> RecordId {
    RecordId::new(table, key.to_string())
}

/// Deserializes statement `index` as an optional row.
fn take_one<T: DeserializeOwned>(results: &mut IndexedResults, index: usize) -> Result<Option<T>, StoreError> {
    let value: Option<serde_json::Value> = results.take(index)?;
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v).map(Some).map_err(|e| StoreError::Decode(e.to_string())),
    }
}

/// Deserializes statement `index` as a list of rows.
fn take_all<T: DeserializeOwned>(results: &mut IndexedResults, index: usize) -> Result<Vec<T>, StoreError> {
    let values: Vec<serde_json::Value> = results.take(index)?;
    values.into_iter().map(|v| serde_json::from_value(v).map_err(|e| StoreError::Decode(e.to_string()))).collect()
}

/// The value of a transaction's `RETURN`, which by convention is the statement before COMMIT.
fn take_returned<T: DeserializeOwned>(results: &mut IndexedResults) -> Result<Option<T>, StoreError> {
    let index = results.num_statements().checked_sub(2).ok_or_else(|| StoreError::Decode("no RETURN".into()))?;
    take_one(results, index)
}

/// Parses the JSON text we stored for a caller's `data`.
fn parse_data(text: Option<String>) -> Option<serde_json::Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thrown_markers_map_to_contract_errors() {
        assert!(matches!(thrown("An error occurred: authstore:retry"), Some(StoreError::Retry)));
        assert!(matches!(
            thrown("An error occurred: authstore:not_found:expired"),
            Some(StoreError::Rejected(Error::NotFound(NotFound::Expired)))
        ));
        assert!(matches!(
            thrown("authstore:invalid_client:unknown_client"),
            Some(StoreError::Rejected(Error::InvalidClient(InvalidClient::UnknownClient)))
        ));
        assert!(thrown("something else").is_none());
    }

    #[test]
    fn writes_are_told_from_reads() {
        assert!(writes("UPDATE ONLY $item.rid SET consumed_at = $item.now WHERE consumed_at = NONE RETURN AFTER"));
        assert!(writes("BEGIN; LET $s = (DELETE ONLY $rid RETURN BEFORE); COMMIT;"));
        assert!(!writes("SELECT *, record::tb(id) AS __table, record::id(id) AS __key FROM $rids"));
        assert!(!writes("BEGIN; LET $t = (SELECT * FROM ONLY $rid); $t; COMMIT;"));
        assert!(!writes("RETURN true"));
    }

    #[test]
    fn locations_parse_and_never_print_remote_credentials() {
        assert_eq!(Location::parse("mem://"), Ok(Location::Memory));
        assert_eq!(Location::parse("surrealkv://./data/x"), Ok(Location::SurrealKv("./data/x".into())));
        assert!(Location::parse("file://x").is_err());
        let remote = Location::parse("ws://user:pw@host:8000").unwrap();
        assert!(!format!("{remote:?}").contains("pw"));
    }
}
