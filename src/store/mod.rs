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
//!
//! # Layout
//!
//! `connection.rs` reaches the database (`--db`, opening, health); `query.rs` runs SurrealQL
//! and decodes results; `retry.rs` classifies failures and runs lost races again;
//! `batch.rs` is group commit; one file per record kind (`sessions.rs`, `codes.rs`,
//! `tokens.rs`, `clients.rs`); `events.rs` holds the fragments that write events and
//! `event_log.rs` reads and prunes the log they end up in; `expiry.rs` is one pass of the
//! scheduler; `idempotency.rs` records keyed answers;
//! `bulk.rs` runs changes of any number of rows in bounded pages.

mod batch;
mod bulk;
mod clients;
mod codes;
mod connection;
mod engine;
mod error;
mod event_log;
mod events;
mod expiry;
mod idempotency;
mod in_flight;
mod lock;
mod query;
mod retry;
mod schema;
mod sessions;
mod stats;
mod tokens;
mod wal_tail;

use std::fmt;
use std::sync::Arc;

use tokio::sync::Notify;

pub use codes::{CODE_BURN, decode_code};
pub use connection::{DEFAULT_TIMEOUT, Location, STARTUP_TIMEOUT, StoreConfig, repair_wal};
pub use engine::Memory;
pub use error::StoreError;
pub use event_log::{EventRecord, LogBounds, Sequenced};
pub use events::EventKind;
pub use expiry::{Deadlines, ExpiryPass};
pub use sessions::{SESSION_PUT, SessionFilter};
pub use tokens::TokenFilter;
pub use wal_tail::WalRepair;

use connection::Health;
use query::{Emits, Vars, record, take_all, take_one, take_returned};
use retry::{MAX_ATTEMPTS, backoff, thrown};

/// The handle to authstore's data. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: engine::Handle,
    kind: &'static str,
    /// Woken after every committed transaction that wrote to the outbox, so the sequencer
    /// runs at once instead of at its next tick.
    outbox_written: Arc<Notify>,
    /// The emitting transactions in flight, where this process is the only writer
    /// (`in_flight.rs`); `None` against a shared server.
    in_flight: Option<Arc<in_flight::InFlight>>,
    /// Every event cursor below this is gone for good (`event_log.rs`).
    pruned_below: Arc<std::sync::atomic::AtomicI64>,
    /// The most rows of one kind a bulk change writes per transaction (`bulk.rs`).
    page_rows: usize,
    /// Deadlines written through this store, for the expiry scheduler.
    deadlines: Arc<Deadlines>,
    /// Group commit for point reads and single-statement writes (`batch.rs`); `None` in the
    /// handles its own workers use.
    queues: Option<batch::Queues>,
    /// An embedded store's data directory, held for as long as any handle is (`lock.rs`).
    _data_dir: Option<Arc<lock::DataDirLock>>,
    /// Whether the database answers, and how long it may take.
    health: Arc<Health>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("kind", &self.kind).finish_non_exhaustive()
    }
}

impl Store {
    /// Stops the group-commit workers (`batch.rs`) once they have run what is queued, waiting
    /// for them until `deadline`. For shutdown, after the last call: later calls through any
    /// handle of this store fail.
    pub async fn stop_workers_by(&self, deadline: tokio::time::Instant) {
        if let Some(queues) = &self.queues {
            queues.stop_by(deadline).await;
        }
    }

    /// Closes the database for good, waiting for it until `deadline`: an embedded engine
    /// writes its write buffer out and closes its log, so the next start replays nothing. Cut
    /// off by the deadline (and then by the process's exit), it leaves what a crash leaves.
    /// For shutdown, after [`Store::stop_workers_by`]: later writes through any handle fail.
    pub async fn close_by(self, deadline: tokio::time::Instant) {
        // The data directory stays locked until the engine has closed.
        let Store { db, _data_dir, .. } = self;
        db.close(deadline).await;
        drop(_data_dir);
    }

    /// Resolves after the next transaction that wrote events commits.
    pub fn outbox_written(&self) -> Arc<Notify> {
        self.outbox_written.clone()
    }

    /// The deadlines written through this store since the scheduler last looked.
    pub fn deadlines(&self) -> Arc<Deadlines> {
        self.deadlines.clone()
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
}
