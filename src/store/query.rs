//! Running SurrealQL: one bounded round trip, its per-statement errors classified, and the
//! results decoded into rows.
//!
//! Point reads and single-statement writes go through group commit (`batch.rs`) when the
//! handle has its queues; everything else is one query here. Values are always bound
//! parameters ([`Vars`]), never spliced into the text.

use serde::de::DeserializeOwned;
use surrealdb::IndexedResults;
use surrealdb::types::{Object, RecordId, SurrealValue};

use super::retry::classify;
use super::{Store, StoreError};

/// Whether a query writes lifecycle events. The caller says so, because it is the one that
/// spliced event fragments (`events.rs`) into its transaction; a committed query that did
/// wakes the sequencer, so its events get cursors at once instead of at the next poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Emits {
    /// Reads, or writes that report nothing.
    Nothing,
    /// Writes rows to `outbox`.
    Events,
}

impl Store {
    /// Runs one query that writes no lifecycle events (see [`Store::run`]).
    pub(super) async fn query(&self, sql: &str, vars: Vars) -> Result<IndexedResults, StoreError> {
        self.run(sql, vars, Emits::Nothing).await
    }

    /// Runs one query that writes lifecycle events to the outbox (see [`Store::run`]): once it
    /// commits, the sequencer is woken to give them cursors.
    pub(super) async fn query_emitting(&self, sql: &str, vars: Vars) -> Result<IndexedResults, StoreError> {
        self.run(sql, vars, Emits::Events).await
    }

    /// Runs one query, bounded by the store's timeout, and classifies per-statement errors.
    /// A query that `emits` events wakes the sequencer when it commits.
    ///
    /// While the database is unreachable it fails at once with [`StoreError::Unreachable`],
    /// sending nothing. A query that loses its connection or its answer fails with
    /// [`StoreError::OutcomeUnknown`] if it writes, [`StoreError::Unreachable`] if it only reads.
    pub(super) async fn run(&self, sql: &str, vars: Vars, emits: Emits) -> Result<IndexedResults, StoreError> {
        if self.health.is_down() {
            return Err(StoreError::Unreachable);
        }
        debug_assert!(emits == Emits::Events || !sql.contains("CREATE outbox"), "an unregistered emitting query");
        let lost = || if writes(sql) { StoreError::OutcomeUnknown } else { StoreError::Unreachable };
        // Registered before it is sent, and over only once answered: dropped here unanswered (a
        // timeout, a cancelled call) it is counted as given up on (`in_flight.rs`).
        let ticket = self.in_flight.as_deref().filter(|_| emits == Emits::Events).map(|set| set.begin());
        let answer = tokio::time::timeout(self.health.timeout, self.db.query(sql, vars.0)).await;
        if let (Some(ticket), Ok(_)) = (ticket, &answer) {
            ticket.answered();
        }
        let mut results = match answer {
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
            if emits == Emits::Events {
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
    pub(super) async fn row<T: DeserializeOwned>(
        &self,
        table: &'static str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let value = match &self.queues {
            Some(queues) => queues.read(self, table, key).await?,
            None => self.read_now(table, key).await?,
        };
        value.map(|v| serde_json::from_value(v).map_err(|e| StoreError::Decode(e.to_string()))).transpose()
    }

    /// Runs one statement that names its parameters `$item.<name>` and returns what it
    /// returns. Concurrent writes share one transaction (group commit); a write that lost a
    /// race reports [`StoreError::Retry`] like any other query.
    pub(super) async fn write<T: DeserializeOwned>(
        &self,
        sql: &'static str,
        vars: Vars,
    ) -> Result<Option<T>, StoreError> {
        let value: Option<serde_json::Value> = match &self.queues {
            Some(queues) => queues.write(self, sql, vars).await?,
            None => self.write_now(sql, vars).await?,
        };
        value.map(|v| serde_json::from_value(v).map_err(|e| StoreError::Decode(e.to_string()))).transpose()
    }

    /// One record, read now as a query of its own.
    pub(super) async fn read_now(&self, table: &str, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        take_one(&mut self.query("SELECT * FROM ONLY $rid", Vars::new().set("rid", record(table, key))).await?, 0)
    }

    /// One `$item.<name>` statement, run now as a transaction of its own.
    pub(super) async fn write_now(&self, sql: &str, vars: Vars) -> Result<Option<serde_json::Value>, StoreError> {
        take_one(&mut self.query(sql, Vars::new().set("item", vars.0)).await?, 0)
    }

    /// Whether the database is a server over the network, where a commit's answer can be lost
    /// while the database lives on.
    pub(super) fn is_remote(&self) -> bool {
        self.kind == "ws"
    }
}

/// Whether a query may change data: it names a writing statement. Our SurrealQL spells
/// keywords in capitals; a read never contains these words.
fn writes(sql: &str) -> bool {
    ["CREATE ", "UPDATE ", "UPSERT ", "DELETE ", "INSERT ", "RELATE ", "DEFINE ", "REMOVE "]
        .iter()
        .any(|keyword| sql.contains(keyword))
}

/// Query parameters. Values are bound, never spliced into SurrealQL text.
#[derive(Default, Clone)]
pub(super) struct Vars(pub(super) Object);

impl Vars {
    pub(super) fn new() -> Self {
        Self::default()
    }

    pub(super) fn set(mut self, key: &str, value: impl SurrealValue) -> Self {
        self.0.insert(key, value);
        self
    }
}

pub(super) fn record(table: &str, key: &str) -> RecordId {
    RecordId::new(table, key.to_string())
}

/// Deserializes statement `index` as an optional row.
pub(super) fn take_one<T: DeserializeOwned>(
    results: &mut IndexedResults,
    index: usize,
) -> Result<Option<T>, StoreError> {
    let value: Option<serde_json::Value> = results.take(index)?;
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v).map(Some).map_err(|e| StoreError::Decode(e.to_string())),
    }
}

/// Deserializes statement `index` as a list of rows.
pub(super) fn take_all<T: DeserializeOwned>(results: &mut IndexedResults, index: usize) -> Result<Vec<T>, StoreError> {
    let values: Vec<serde_json::Value> = results.take(index)?;
    values.into_iter().map(|v| serde_json::from_value(v).map_err(|e| StoreError::Decode(e.to_string()))).collect()
}

/// The value of a transaction's `RETURN`, which by convention is the statement before COMMIT.
pub(super) fn take_returned<T: DeserializeOwned>(results: &mut IndexedResults) -> Result<Option<T>, StoreError> {
    let index = results.num_statements().checked_sub(2).ok_or_else(|| StoreError::Decode("no RETURN".into()))?;
    take_one(results, index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_told_from_reads() {
        assert!(writes("UPDATE ONLY $item.rid SET consumed_at = $item.now WHERE consumed_at = NONE RETURN AFTER"));
        assert!(writes("BEGIN; LET $s = (DELETE ONLY $rid RETURN BEFORE); COMMIT;"));
        assert!(!writes("SELECT *, record::tb(id) AS __table, record::id(id) AS __key FROM $rids"));
        assert!(!writes("BEGIN; LET $t = (SELECT * FROM ONLY $rid); $t; COMMIT;"));
        assert!(!writes("RETURN true"));
    }
}
