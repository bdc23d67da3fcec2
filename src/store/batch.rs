//! Group commit: calls that reach the store while it is busy share one query.
//!
//! A point read (`SELECT` of one record) or single-statement write that finds no other call of
//! its kind in the store runs at once on the caller's task, as one bare statement: a lone call
//! pays for no queue, no worker hand-off and no transaction wrapper. (A write to a remote
//! database is always queued: only a batch can find out whether a commit whose answer was lost
//! happened, below.) While others are in the store, calls are queued. A worker takes
//! the first waiting job and everything queued behind it (up to [`MAX_BATCH`]) and runs them as
//! one query: the reads as one `SELECT` over all their record ids, the writes as one
//! transaction, so one commit (one fsync) serves every call in it. Under light load a batch
//! is one job and costs what a lone query does; nothing ever waits for a batch to fill.
//!
//! A write batch is all or nothing, so when it fails (a write conflict with another
//! transaction, or one statement refused) each of its jobs runs again on its own, and each
//! caller hears only its own outcome. A job that lost a race reports [`StoreError::Retry`] to
//! its caller, whose loop reads again, exactly as without batching.
//!
//! A batch whose commit went unanswered (the connection dropped, or no answer in time) may
//! have committed, so it is never split and replayed blindly. Every batch transaction creates
//! `op:<id>` holding what each of its statements returned; the same transaction, with the same
//! id, runs again once the database answers: it either commits (the first attempt did not),
//! conflicts with the first attempt's commit and runs again, or fails on the existing
//! `op:<id>`, whose stored results then answer the callers. If the outcome stays unknown past
//! the store's timeout, each caller hears [`StoreError::OutcomeUnknown`]. Operation records
//! expire after [`OP_RETENTION`] and are pruned with the events.
//!
//! Batching never answers from memory: every job's statement runs against the database
//! after the job was queued, so a caller sees every write acknowledged before its call began.
//! The workers own the jobs, so a caller that goes away does not cancel a write half-way.
//! They are named tasks (`batch-reads-N`, `batch-writes-N`) owned by the queues' [`Tasks`]:
//! [`Store::stop_workers_by`] stops them at shutdown, after running what is still queued, and
//! they stop by themselves when the last [`Store`] handle holding the queues is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use surrealdb::types::RecordId;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::time::Instant;

use super::{Store, StoreError, Vars, record, take_one, take_returned};
use crate::tasks::{StopSignal, Tasks};

/// Most jobs in one query. Bounds a transaction's size and a batch's latency.
const MAX_BATCH: usize = 64;
/// Read workers: more batches in flight keep both cores busy (measured: 4 beat 2 by ~10 %).
const READ_WORKERS: usize = 4;
/// Write workers: while one batch commits, the next one executes; more only split the
/// batches smaller (measured: 4 lost ~12 % against 2).
const WRITE_WORKERS: usize = 2;
/// Jobs that may wait in a queue; callers beyond that wait to enqueue.
const QUEUE: usize = 4096;
/// How long an operation record outlives its batch, as SurrealQL: far longer than a batch can
/// take to resolve an unknown outcome (one store timeout).
const OP_RETENTION: &str = "15m";
/// Pause between checks for the database while resolving an unknown outcome.
const RESOLVE_PAUSE: Duration = Duration::from_millis(50);

type Reply = oneshot::Sender<Result<Option<serde_json::Value>, StoreError>>;

/// Reads one record, by table and key.
pub(super) struct Read {
    table: &'static str,
    key: String,
    reply: Reply,
}

/// One SurrealQL statement that refers to its parameters as `$item.<name>`.
pub(super) struct Write {
    sql: &'static str,
    vars: Vars,
    reply: Reply,
}

/// The queues' sending ends, held by every `Store` handle that callers use, and the workers
/// that serve them.
#[derive(Clone)]
pub(super) struct Queues {
    reads: mpsc::Sender<Read>,
    writes: mpsc::Sender<Write>,
    /// How long a caller waits for its answer.
    timeout: Duration,
    /// The workers; taken out when they are stopped.
    workers: Arc<std::sync::Mutex<Option<Tasks>>>,
    /// Callers inside [`Queues::read`] and [`Queues::write`]: one alone runs at once.
    reading: Arc<AtomicUsize>,
    writing: Arc<AtomicUsize>,
    /// Set when the workers are told to stop; later calls fail.
    stopped: Arc<AtomicBool>,
}

/// A caller's presence in one side of the store, counted while it waits or runs.
struct Presence<'a>(&'a AtomicUsize);

impl<'a> Presence<'a> {
    /// Counts the caller in, unless the workers were stopped; `true` when nobody else was there.
    fn enter(count: &'a AtomicUsize, stopped: &AtomicBool) -> Result<(Self, bool), StoreError> {
        if stopped.load(Ordering::Acquire) {
            return Err(stopped_error());
        }
        let before = count.fetch_add(1, Ordering::AcqRel);
        Ok((Presence(count), before == 0))
    }
}

impl Drop for Presence<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Queues {
    /// Starts the workers; they run queries through `store`, which must not hold these queues
    /// (or the workers would keep themselves alive).
    pub fn start(store: &Store) -> Self {
        let (reads, read_rx) = mpsc::channel(QUEUE);
        let (writes, write_rx) = mpsc::channel(QUEUE);
        let (read_rx, write_rx) = (Arc::new(Mutex::new(read_rx)), Arc::new(Mutex::new(write_rx)));
        let mut workers = Tasks::new();
        for n in 0..READ_WORKERS {
            let (store, read_rx, mut stop) = (store.clone(), read_rx.clone(), workers.stop_signal());
            workers.spawn(format!("batch-reads-{n}"), async move {
                while let Some(jobs) = next_jobs(&read_rx, &mut stop).await {
                    store.run_reads(jobs).await;
                }
            });
        }
        for n in 0..WRITE_WORKERS {
            let (store, write_rx, mut stop) = (store.clone(), write_rx.clone(), workers.stop_signal());
            workers.spawn(format!("batch-writes-{n}"), async move {
                while let Some(jobs) = next_jobs(&write_rx, &mut stop).await {
                    store.run_writes(jobs).await;
                }
            });
        }
        Queues {
            reads,
            writes,
            timeout: store.health.timeout,
            workers: Arc::new(std::sync::Mutex::new(Some(workers))),
            reading: Arc::default(),
            writing: Arc::default(),
            stopped: Arc::default(),
        }
    }

    /// Stops the workers once they have run what is queued, waiting for them until `deadline`.
    /// Later calls through any handle fail as the store's workers having stopped.
    pub async fn stop_by(&self, deadline: Instant) {
        self.stopped.store(true, Ordering::Release);
        let workers = self.workers.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(workers) = workers {
            workers.stop_by(deadline).await;
        }
        // Writes that ran at once, on their callers' tasks, finish too.
        while self.writing.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Reads at once through `store` when no other read is in the store; otherwise queues,
    /// waiting at most the store's timeout (a read that has not started by then never will).
    pub async fn read(
        &self,
        store: &Store,
        table: &'static str,
        key: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let (_presence, alone) = Presence::enter(&self.reading, &self.stopped)?;
        if alone {
            return store.read_now(table, key).await;
        }
        let (reply, answer) = oneshot::channel();
        let asked = async {
            self.reads.send(Read { table, key: key.to_string(), reply }).await.map_err(|_| stopped_error())?;
            answer.await.map_err(|_| stopped_error())?
        };
        tokio::time::timeout(self.timeout, asked).await.unwrap_or(Err(StoreError::Unreachable))
    }

    /// Waits at most the store's timeout. A write still queued then is dropped unrun, but one
    /// may be committing: the caller hears that the outcome is unknown. The same when the
    /// workers were stopped at the shutdown deadline with the write taken (its reply dropped):
    /// only a write the queue refused is known not to have happened.
    ///
    /// Embedded, a write that finds no other write in the store runs at once through `store`,
    /// as a bare statement. It runs on the caller's task, which is the call's own operation
    /// task: a client going away does not cut it short.
    pub async fn write(
        &self,
        store: &Store,
        sql: &'static str,
        vars: Vars,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let (_presence, alone) = Presence::enter(&self.writing, &self.stopped)?;
        if alone && !store.is_remote() {
            return store.write_now(sql, vars).await;
        }
        let (reply, answer) = oneshot::channel();
        let asked = async {
            self.writes.send(Write { sql, vars, reply }).await.map_err(|_| stopped_error())?;
            answer.await.map_err(|_| StoreError::OutcomeUnknown)?
        };
        tokio::time::timeout(self.timeout, asked).await.unwrap_or(Err(StoreError::OutcomeUnknown))
    }
}

/// What became of a write batch.
enum Outcome {
    /// Committed, once: each job's answer, in order.
    Committed(Vec<Option<serde_json::Value>>),
    /// Not committed, and known not to be.
    Failed(StoreError),
    /// Perhaps committed; the database did not say in time.
    Unknown,
}

fn stopped_error() -> StoreError {
    StoreError::Database("the store's workers have stopped".into())
}

/// The next batch to run, or `None` once the worker should stop: when its queue is closed
/// (every handle is gone), or after it was told to stop and nothing is left queued.
async fn next_jobs<J>(queue: &Mutex<mpsc::Receiver<J>>, stop: &mut StopSignal) -> Option<Vec<J>> {
    tokio::select! {
        jobs = next_batch(queue) => jobs,
        () = stop.stopped() => {
            // Refuse new jobs, but run those already accepted.
            let mut queue = queue.lock().await;
            queue.close();
            let mut jobs = Vec::new();
            while jobs.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            (!jobs.is_empty()).then_some(jobs)
        }
    }
}

/// Waits for one job, then takes whatever else is already queued.
async fn next_batch<J>(queue: &Mutex<mpsc::Receiver<J>>) -> Option<Vec<J>> {
    let mut queue = queue.lock().await;
    let first = queue.recv().await?;
    let mut jobs = vec![first];
    while jobs.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
    Some(jobs)
}

/// A write's statement with its parameters renamed for slot `i` of a batch.
fn statement(sql: &str, i: usize) -> String {
    sql.replace("$item.", &format!("$item{i}."))
}

/// One transaction running every job and returning what each statement returned; with `op`,
/// it also records that list under `$op`.
fn transaction(jobs: &[Write], op: Option<&RecordId>) -> (String, Vars) {
    let mut sql = String::from("BEGIN;");
    let mut vars = Vars::new().set("op", op.cloned());
    let mut results = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        sql.push_str(&format!(" LET $r{i} = ({});", statement(job.sql, i)));
        vars = vars.set(&format!("item{i}"), job.vars.0.clone());
        results.push(format!("$r{i}"));
    }
    let results = results.join(", ");
    if op.is_some() {
        sql.push_str(&format!(
            " CREATE ONLY $op SET expires_at = time::now() + {OP_RETENTION}, results = [{results}] RETURN NONE;"
        ));
    }
    sql.push_str(&format!(" RETURN {{ results: [{results}] }}; COMMIT;"));
    (sql, vars)
}

/// What a batch returns, and records under its operation id: one result per job.
#[derive(serde::Deserialize)]
struct Recorded {
    results: Vec<serde_json::Value>,
}

/// Answers from a committed batch's results.
fn answers(recorded: Option<Recorded>, jobs: usize) -> Outcome {
    match recorded.map(|r| r.results) {
        Some(list) if list.len() == jobs => {
            Outcome::Committed(list.into_iter().map(|v| if v.is_null() { None } else { Some(v) }).collect())
        }
        // Committed, but the answer is unreadable: the caller cannot be told what happened.
        _ => {
            tracing::error!(jobs, "a committed write batch returned an unexpected answer");
            Outcome::Unknown
        }
    }
}

impl Store {
    async fn run_reads(&self, mut jobs: Vec<Read>) {
        jobs.retain(|job| !job.reply.is_closed());
        if jobs.is_empty() {
            return;
        }
        const SQL: &str = "SELECT *, record::tb(id) AS __table, record::id(id) AS __key FROM $rids";
        let rids: Vec<RecordId> = jobs.iter().map(|j| record(j.table, &j.key)).collect();
        let rows = match self.query(SQL, Vars::new().set("rids", rids)).await {
            Ok(mut results) => results.take::<Vec<serde_json::Value>>(0).map_err(StoreError::from),
            Err(e) => Err(e),
        };
        let rows: HashMap<(String, String), serde_json::Value> = match rows {
            Ok(rows) => rows.into_iter().filter_map(|row| Some((row_key(&row)?, row))).collect(),
            Err(e) => {
                tracing::debug!(error = %e, jobs = jobs.len(), "batched read failed; reading one by one");
                for job in jobs {
                    let _ = job.reply.send(self.read_now(job.table, &job.key).await);
                }
                return;
            }
        };
        for job in jobs {
            // A record read twice in one batch answers both.
            let row = rows.get(&(job.table.to_string(), job.key)).cloned();
            let _ = job.reply.send(Ok(row));
        }
    }

    async fn run_writes(&self, mut jobs: Vec<Write>) {
        // A caller that stopped waiting was told the outcome is unknown; leave its write unrun.
        jobs.retain(|job| !job.reply.is_closed());
        if jobs.len() > 1 {
            match self.commit(&jobs).await {
                Outcome::Committed(answers) => {
                    for (job, answer) in jobs.into_iter().zip(answers) {
                        let _ = job.reply.send(Ok(answer));
                    }
                    return;
                }
                Outcome::Unknown => {
                    for job in jobs {
                        let _ = job.reply.send(Err(StoreError::OutcomeUnknown));
                    }
                    return;
                }
                Outcome::Failed(e) => {
                    tracing::debug!(error = %e, jobs = jobs.len(), "write batch failed; running one by one")
                }
            }
        }
        for job in jobs {
            let answer = match self.commit(std::slice::from_ref(&job)).await {
                Outcome::Committed(mut answers) => Ok(answers.pop().flatten()),
                Outcome::Failed(e) => Err(e),
                Outcome::Unknown => Err(StoreError::OutcomeUnknown),
            };
            let _ = job.reply.send(answer);
        }
    }

    /// Commits `jobs` as one transaction, at most once, and finds out whether it did.
    async fn commit(&self, jobs: &[Write]) -> Outcome {
        // Only a remote database can lose a commit's answer and then answer again: there the
        // batch records an operation id, to find its own commit. Embedded, an answer is lost
        // only with the process, and the record would be pure cost on every write.
        let op = self.is_remote().then(|| record("op", &crate::secret::generate_id()));
        if let ([job], None) = (jobs, &op) {
            // One job, embedded: its statement is a transaction of its own.
            return match self.write_now(job.sql, job.vars.clone()).await {
                Ok(answer) => Outcome::Committed(vec![answer]),
                Err(StoreError::OutcomeUnknown) => Outcome::Unknown,
                Err(e) => Outcome::Failed(e),
            };
        }
        let (sql, vars) = transaction(jobs, op.as_ref());
        let deadline = Instant::now() + self.health.timeout;
        // Whether an earlier attempt may have committed.
        let mut maybe_committed = false;
        loop {
            match self.query(&sql, vars.clone()).await {
                Ok(mut results) => return answers(take_returned(&mut results).unwrap_or(None), jobs.len()),
                Err(StoreError::OutcomeUnknown) if op.is_none() => return Outcome::Unknown,
                Err(StoreError::OutcomeUnknown) => maybe_committed = true,
                Err(e) if !maybe_committed => return Outcome::Failed(e),
                // The database is still away; wait for it below.
                Err(StoreError::Unreachable) => {}
                // This attempt failed: on the earlier attempt's `op` record if that one
                // committed, or on a conflict with it if it is committing now.
                Err(e) => match self.op_results(op.as_ref()).await {
                    Ok(Some(recorded)) => return answers(Some(recorded), jobs.len()),
                    Ok(None) if matches!(e, StoreError::Retry) => {}
                    // Refused on its own merits: the earlier attempt had not committed when
                    // this one ran, but may still be in flight.
                    Ok(None) => return Outcome::Unknown,
                    Err(_) => {}
                },
            }
            if Instant::now() >= deadline {
                return Outcome::Unknown;
            }
            tokio::time::sleep(RESOLVE_PAUSE).await;
        }
    }

    /// What the batch recorded as `op` returned, if it committed.
    async fn op_results(&self, op: Option<&RecordId>) -> Result<Option<Recorded>, StoreError> {
        let Some(op) = op else { return Ok(None) };
        let mut results = self.query("SELECT results FROM ONLY $op", Vars::new().set("op", op.clone())).await?;
        take_one(&mut results, 0)
    }

    /// Drops up to `limit` operation records past their retention; returns how many.
    pub async fn prune_ops(&self, limit: usize) -> Result<usize, StoreError> {
        const SQL: &str = "BEGIN; \
            LET $old = (SELECT VALUE id FROM op WHERE expires_at <= time::now() ORDER BY expires_at LIMIT $limit); \
            DELETE $old; \
            RETURN array::len($old); \
            COMMIT;";
        let vars = Vars::new().set("limit", limit as i64);
        let pruned: Option<usize> =
            self.retrying(|| async { take_returned(&mut self.query(SQL, vars.clone()).await?) }).await?;
        Ok(pruned.unwrap_or(0))
    }
}

/// The `(table, key)` a batched read's row answers.
fn row_key(row: &serde_json::Value) -> Option<(String, String)> {
    let table = row.get("__table")?.as_str()?.to_string();
    let key = row.get("__key")?.as_str()?.to_string();
    Some((table, key))
}

#[cfg(test)]
mod tests {
    use super::statement;

    #[test]
    fn statements_are_renamed_per_slot() {
        assert_eq!(statement("UPDATE ONLY $item.rid SET a = $item.a", 3), "UPDATE ONLY $item3.rid SET a = $item3.a");
    }
}
