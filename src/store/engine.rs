//! The database handle, and the embedded engine built by hand so that its memory is bounded.
//!
//! The SDK's `surrealkv://` connect builds SurrealKV with its defaults: a block cache of half the
//! machine's memory less 1 GiB and a write buffer (memtable) of up to 1 GiB, and URL parameters
//! cannot reach those settings. So an embedded store is opened here the way the SDK's local
//! engine opens one (`surrealdb_engine_local::connect`, 3.3.5), with authstore's settings in the
//! builder's config map, and handed to the SDK with `Surreal::<Db>::unstable_from_datastore`.
//! Both crates are pinned exactly; a SurrealDB upgrade must re-read `connect` against this.
//! `mem://` and `ws://` keep the SDK's own connect.

use std::sync::Arc;

use tokio::time::Instant;

use surrealdb::engine::any::{self, Any};
use surrealdb::engine::local::Db;
use surrealdb::opt::auth::Root;
use surrealdb::opt::capabilities::Capabilities;
use surrealdb::types::Object;
use surrealdb::{IndexedResults, Surreal};
use surrealdb_cnf::ConfigMap;
use surrealdb_engine_local::{Datastore, EngineOptions};

use super::StoreError;
use super::connection::{Location, StoreConfig};

const MIB: u64 = 1 << 20;

/// How often [`Handle::close`] looks whether it holds the last handle, and then whether
/// SurrealDB's own shutdown has finished.
const CLOSE_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// The smallest and largest block cache the default picks (see [`Memory::default_for`]). A
/// cache smaller than the records read costs speed, not correctness (docs/benchmarks.md,
/// "Scale": 17.7 k/s with 512 MiB, 19.7 k/s with 8 GiB, at a million records).
const DEFAULT_CACHE_RANGE: (u64, u64) = (16 * MIB, 16 * 1024 * MIB);

/// The largest write buffer (memtable). SurrealKV's own default grows with the machine, to
/// 1 GiB at 16 GiB and 4 GiB at 64 GiB; authstore keeps its smaller steps below that.
const MEMTABLE_MAX: u64 = 256 * MIB;

/// How much memory the embedded engine may keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// SurrealKV's block cache (`--cache-bytes`): decoded blocks of its sorted files, shared by
    /// every read.
    pub cache_bytes: u64,
    /// SurrealKV's write buffer (memtable). One transaction must fit in it, and SurrealKV
    /// refuses to replay a logged one that does not, so it is not tied to the cache.
    pub memtable_bytes: u64,
}

impl Memory {
    /// An eighth of the memory this process may use (its cgroups' limit, or the machine's),
    /// between 16 MiB and 16 GiB: 64 MiB on a 512 MB machine, 2.9 GiB on a 23 GiB one.
    pub fn default_for_this_machine() -> Self {
        Self::default_for(available_memory())
    }

    /// The default for a machine (or cgroup) with `total` bytes. The write buffer is
    /// SurrealKV's own default (64 MiB below 1 GiB, 128 MiB below 4 GiB), at most 256 MiB.
    pub fn default_for(total: Option<u64>) -> Self {
        let (low, high) = DEFAULT_CACHE_RANGE;
        let memtable_bytes = match total {
            Some(total) if total < 1024 * MIB => 64 * MIB,
            Some(total) if total < 4096 * MIB => 128 * MIB,
            _ => MEMTABLE_MAX,
        };
        Memory { cache_bytes: total.map_or(low, |total| (total / 8).clamp(low, high)), memtable_bytes }
    }

    /// The same write buffer, with the cache set to `cache_bytes`.
    pub fn with_cache(self, cache_bytes: u64) -> Self {
        Memory { cache_bytes, ..self }
    }

    fn config_map(&self) -> ConfigMap {
        ConfigMap::empty()
            .with_key_value("surrealkv_block_cache_capacity", self.cache_bytes.to_string())
            .with_key_value("surrealkv_max_memtable_size", self.memtable_bytes.to_string())
            // SurrealKV holds a flush for up to 5 ms once 12 commits wait, collecting more. The
            // commits that wait behind one fsync already share the next, so that pause only adds
            // latency: it is turned off.
            .with_key_value("surrealkv_grouped_commit_wait_threshold", "4096")
    }
}

/// The smaller of the machine's memory and this process's cgroup limits, if any is known.
fn available_memory() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let machine = read("/proc/meminfo").and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        kib.checked_mul(1024)
    });
    let cgroup = read("/proc/self/cgroup").and_then(|text| cgroup_limit(&text, |path| read(path)));
    [machine, cgroup].into_iter().flatten().min()
}

/// The smallest memory limit on the way from this process's cgroup up to the root, given
/// `/proc/self/cgroup` and a way to read files: cgroup v2 `memory.max` and `memory.high`, or
/// v1 `memory.limit_in_bytes`. "max" and v1's huge "unlimited" value are no limit.
fn cgroup_limit(proc_self_cgroup: &str, read: impl Fn(&str) -> Option<String>) -> Option<u64> {
    let mut limits = Vec::new();
    for line in proc_self_cgroup.lines() {
        // "0::/path" (v2), or "N:memory:/path" (v1, possibly "memory,other").
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let (root, files): (&str, &[&str]) = if controllers.is_empty() {
            ("/sys/fs/cgroup", &["memory.max", "memory.high"])
        } else if controllers.split(',').any(|c| c == "memory") {
            ("/sys/fs/cgroup/memory", &["memory.limit_in_bytes"])
        } else {
            continue;
        };
        let mut dir = path.trim_end_matches('/').to_string();
        loop {
            for file in files {
                if let Some(limit) = read(&format!("{root}{dir}/{file}")).and_then(|t| t.trim().parse::<u64>().ok())
                    && limit < (1 << 60)
                {
                    limits.push(limit);
                }
            }
            match dir.rfind('/') {
                Some(cut) => dir.truncate(cut),
                None => break,
            }
        }
    }
    limits.into_iter().min()
}

/// A connection to the database: the embedded engine authstore built, or the SDK's own.
#[derive(Clone)]
pub(super) enum Handle {
    /// The SDK's handle, the engine under it, and a token every clone of this handle holds, so
    /// that [`Handle::close`] can tell whether it holds the last.
    Embedded(Surreal<Db>, Arc<Datastore>, Arc<()>),
    Other(Surreal<Any>),
}

impl Handle {
    /// Opens the database `config` names, signs in and selects namespace and database.
    pub(super) async fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        let handle = match &config.location {
            Location::SurrealKv(path) => {
                let (db, datastore) = open_surrealkv(path, config.memory).await?;
                Handle::Embedded(db, datastore, Arc::new(()))
            }
            other => Handle::Other(any::connect(other.endpoint()).await?),
        };
        if let (Some(username), Some(password), Handle::Other(db)) = (&config.username, &config.password, &handle) {
            db.signin(Root { username: username.clone(), password: password.clone() }).await?;
        }
        // Selecting a namespace and database defines them on first use: instances starting
        // together on a fresh shared server can conflict on those catalog writes.
        for attempt in 0.. {
            let (ns, database) = (config.namespace.clone(), config.database.clone());
            let selected = match &handle {
                Handle::Embedded(db, ..) => db.use_ns(ns).use_db(database).await,
                Handle::Other(db) => db.use_ns(ns).use_db(database).await,
            };
            match selected {
                Ok(_) => break,
                Err(e) if attempt < 50 && e.to_string().contains("can be retried") => {
                    super::backoff(attempt).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(handle)
    }

    /// Runs `sql` with `vars` bound.
    pub(super) async fn query(&self, sql: &str, vars: Object) -> surrealdb::Result<IndexedResults> {
        match self {
            Handle::Embedded(db, ..) => db.query(sql).bind(vars).await,
            Handle::Other(db) => db.query(sql).bind(vars).await,
        }
    }

    /// Shuts an embedded engine down, waiting for it until `deadline`: its write buffer is
    /// written out to its files and its write-ahead log closed, so that the next start has
    /// nothing to replay.
    ///
    /// SurrealDB shuts the engine down itself once the last SDK handle is dropped, on a task
    /// that holds the datastore until the shutdown has finished. So once this is the last
    /// clone of the handle, its SDK handle is dropped and the close is awaited by waiting to
    /// hold the last reference to the datastore: the shutdown runs once, SurrealDB's own. A
    /// second pass would find the engine closed and log an error for the node record it could
    /// no longer archive.
    ///
    /// A clone that outlives the stop (a call whose caller hung up) holds that off. After half
    /// the time left, the engine is shut down under it, on a task of its own, so that the
    /// deadline neither cuts the shutdown off half-way nor waits on its blocking steps; later
    /// writes through that clone fail, and SurrealDB's own pass, when it drops, waits for this
    /// one instead of flushing the same write buffer beside it.
    pub(super) async fn close(self, deadline: Instant) {
        let Handle::Embedded(db, datastore, handles) = self else { return };
        let give_up = Instant::now() + deadline.saturating_duration_since(Instant::now()) / 2;
        let closed = if polled_until(give_up, || Arc::strong_count(&handles) == 1).await {
            drop(db);
            polled_until(deadline, || Arc::strong_count(&datastore) == 1).await
        } else {
            tracing::info!("a database handle outlived the stop; closing the database under it");
            let closing = tokio::spawn(async move { datastore.shutdown().await });
            match tokio::time::timeout_at(deadline, closing).await {
                Ok(Ok(Ok(()))) => true,
                Ok(Ok(Err(e))) => {
                    tracing::error!(error = format!("{e:#}"), "closing the embedded database");
                    true
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "closing the embedded database");
                    true
                }
                Err(_) => false,
            }
        };
        if !closed {
            tracing::warn!("the database did not close by the shutdown deadline");
        }
    }
}

/// Whether `done` holds by `deadline`, looking every [`CLOSE_POLL`].
async fn polled_until(deadline: Instant, done: impl Fn() -> bool) -> bool {
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(CLOSE_POLL).await;
    }
    true
}

/// Opens SurrealKV at `path` with authstore's settings, every commit fsynced, in the order
/// `surrealdb_engine_local::connect` uses: the version check and bootstrap before any
/// maintenance task writes (a write before the version key makes the store unreadable).
/// Live-query notifications are off: authstore runs no LIVE query, and with them on every
/// write transaction allocates a message channel.
async fn open_surrealkv(path: &str, memory: Memory) -> Result<(Surreal<Db>, Arc<Datastore>), StoreError> {
    let failed = |step: &str| {
        let step = step.to_string();
        move |e: anyhow::Error| StoreError::Database(format!("opening surrealkv://{path} ({step}): {e:#}"))
    };
    let capabilities = Capabilities::default().with_live_query_notifications(false);
    let datastore: Arc<Datastore> = Datastore::builder()
        .with_config(memory.config_map())
        .with_engine_options(EngineOptions::default())
        .with_query_timeout(None)
        .with_transaction_timeout(None)
        .with_auth(false)
        .with_capabilities(capabilities.into())
        .without_maintenance_tasks()
        .build_with_path(&Location::SurrealKv(path.to_string()).endpoint())
        .await
        .map_err(failed("build"))?;
    datastore.check_version().await.map_err(failed("version"))?;
    datastore.bootstrap().await.map_err(failed("bootstrap"))?;
    datastore.start_maintenance_tasks();
    tracing::info!(cache_bytes = memory.cache_bytes, memtable_bytes = memory.memtable_bytes, "embedded SurrealKV open");
    Ok((Surreal::<Db>::unstable_from_datastore(datastore.clone(), None).await?, datastore))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cache_is_an_eighth_of_memory_within_bounds() {
        let cases = [
            (None, 16 * MIB, 256 * MIB),
            (Some(64 * MIB), 16 * MIB, 64 * MIB),
            (Some(512 * MIB), 64 * MIB, 64 * MIB),
            (Some(2048 * MIB), 256 * MIB, 128 * MIB),
            (Some(24 * 1024 * MIB), 3 * 1024 * MIB, 256 * MIB),
            (Some(256 * 1024 * MIB), 16 * 1024 * MIB, 256 * MIB),
        ];
        for (total, cache, memtable) in cases {
            let memory = Memory::default_for(total);
            assert_eq!((memory.cache_bytes, memory.memtable_bytes), (cache, memtable), "total {total:?}");
        }
    }

    #[test]
    fn the_write_buffer_does_not_follow_the_cache() {
        let memory = Memory::default_for(Some(512 * MIB)).with_cache(MIB);
        assert_eq!((memory.cache_bytes, memory.memtable_bytes), (MIB, 64 * MIB));
    }

    #[test]
    fn the_limit_is_the_smallest_on_the_way_to_the_root() {
        let files = |path: &str| match path {
            "/sys/fs/cgroup/system.slice/authstore.service/memory.max" => Some("max\n".to_string()),
            "/sys/fs/cgroup/system.slice/authstore.service/memory.high" => Some("536870912\n".to_string()),
            "/sys/fs/cgroup/system.slice/memory.max" => Some("1073741824\n".to_string()),
            "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes" => Some("9223372036854771712".to_string()),
            "/sys/fs/cgroup/memory/docker/memory.limit_in_bytes" => Some("268435456".to_string()),
            _ => None,
        };
        assert_eq!(cgroup_limit("0::/system.slice/authstore.service\n", files), Some(512 * MIB));
        assert_eq!(cgroup_limit("0::/\n", files), None, "the root has no limit file");
        assert_eq!(cgroup_limit("4:cpu:/x\n3:memory,blkio:/docker/abc\n", files), Some(256 * MIB));
        assert_eq!(cgroup_limit("garbage", files), None);
    }
}
