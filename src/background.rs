//! Background work: the expiry scheduler, the event sequencer, the hub's reader and the
//! event pruner. Started with the application, stopped with it; each loop survives errors
//! (logging them) and exits when told to.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::clock::Clock;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// How many records or events one pass handles; passes repeat while batches come back full.
const BATCH: usize = 500;

/// Timings of the background loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How often the expiry scheduler looks for due records.
    pub expiry_tick: Duration,
    /// How often the sequencer and the hub look for work they were not woken for (events
    /// written by other instances).
    pub poll: Duration,
    /// How long sequenced events are kept.
    pub retention: Duration,
    /// How often old events are pruned.
    pub prune_every: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            expiry_tick: Duration::from_millis(50),
            poll: Duration::from_millis(50),
            retention: Duration::from_secs(24 * 3600),
            prune_every: Duration::from_secs(60),
        }
    }
}

/// The running loops.
pub struct Background {
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Background {
    pub async fn start(store: Store, clock: Arc<dyn Clock>, hub: Hub, metrics: Arc<Metrics>, timings: Timings) -> Self {
        let (stop, stopped) = watch::channel(false);
        // The hub starts at the current head: subscribers without `since` see what comes next.
        match store.log_bounds().await {
            Ok(bounds) => hub.publish_position(bounds.head),
            Err(e) => tracing::warn!(error = %e, "cannot read the event log head; starting from 0"),
        }
        let tasks = vec![
            ("expiry", tokio::spawn(expiry(store.clone(), clock.clone(), metrics.clone(), timings, stopped.clone()))),
            (
                "sequencer",
                tokio::spawn(sequencer(store.clone(), clock.clone(), hub.clone(), metrics, timings, stopped.clone())),
            ),
            ("hub", tokio::spawn(feed(store.clone(), hub, timings, stopped.clone()))),
            ("pruner", tokio::spawn(pruner(store, clock, timings, stopped))),
        ];
        Background { stop, tasks }
    }

    /// Stops every loop and waits for each to finish its current pass.
    pub async fn stop(self) {
        self.stop_by(tokio::time::Instant::now() + Duration::from_secs(24 * 3600)).await;
    }

    /// Stops every loop and waits, until `deadline`, for each to finish its current pass;
    /// a loop still running then is aborted.
    pub async fn stop_by(self, deadline: tokio::time::Instant) {
        let _ = self.stop.send(true);
        for (name, mut task) in self.tasks {
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(task = name, error = %e, "background task failed"),
                Err(_) => {
                    tracing::warn!(task = name, "background task still busy at the shutdown deadline; aborted");
                    task.abort();
                }
            }
        }
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Removes due records on time, emitting `expired` with each removal.
async fn expiry(
    store: Store,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    timings: Timings,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(timings.expiry_tick);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = stopped(&mut stop) => return,
            _ = tick.tick() => {}
        }
        loop {
            let now = clock.now();
            match store.expire_due(now, BATCH).await {
                Ok(pass) => {
                    for deadline in &pass.deadlines {
                        metrics.expiry_lateness((now - *deadline).to_std().unwrap_or_default());
                    }
                    if !pass.more {
                        break;
                    }
                }
                Err(e) => {
                    failed(&e, "expiry pass failed; retrying next tick");
                    break;
                }
            }
        }
    }
}

/// Gives outbox events their cursors as soon as they are written.
async fn sequencer(
    store: Store,
    clock: Arc<dyn Clock>,
    hub: Hub,
    metrics: Arc<Metrics>,
    timings: Timings,
    mut stop: watch::Receiver<bool>,
) {
    let written = store.outbox_written();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => return,
            () = written.notified() => {}
            () = tokio::time::sleep(timings.poll) => {}
        }
        loop {
            match store.sequence_pending(BATCH, clock.now()).await {
                Ok(0) => break,
                Ok(n) => {
                    metrics.events_emitted(n);
                    hub.wake().notify_one();
                    if n < BATCH {
                        break;
                    }
                }
                Err(e) => {
                    failed(&e, "sequencing failed; retrying");
                    break;
                }
            }
        }
    }
}

/// Follows the event log and broadcasts it to this instance's subscribers.
async fn feed(store: Store, hub: Hub, timings: Timings, mut stop: watch::Receiver<bool>) {
    let wake = hub.wake();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(timings.poll) => {}
        }
        loop {
            match store.events_after(hub.position(), BATCH).await {
                Ok(events) => {
                    let full = events.len() == BATCH;
                    for event in events {
                        hub.publish(event);
                    }
                    if !full {
                        break;
                    }
                }
                Err(e) => {
                    failed(&e, "reading the event log failed; retrying");
                    break;
                }
            }
        }
    }
}

/// Drops the oldest events, up to the first one still inside the retention period (a prefix of
/// the log, by cursor: see `Store::prune_events`).
async fn pruner(store: Store, clock: Arc<dyn Clock>, timings: Timings, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(timings.prune_every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let retention = chrono::Duration::from_std(timings.retention).unwrap_or(chrono::Duration::days(1));
    loop {
        tokio::select! {
            () = stopped(&mut stop) => return,
            _ = tick.tick() => {}
        }
        loop {
            match store.prune_events(clock.now() - retention, BATCH).await {
                Ok(n) if n == BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    failed(&e, "pruning events failed");
                    break;
                }
            }
        }
        // First answers recorded under idempotency keys, past their retention.
        loop {
            match store.prune_recorded_answers(clock.now(), BATCH).await {
                Ok(n) if n == BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    failed(&e, "pruning recorded answers failed");
                    break;
                }
            }
        }
        // Operation records of write batches (`store/batch.rs`), past their retention.
        loop {
            match store.prune_ops(BATCH).await {
                Ok(n) if n == BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    failed(&e, "pruning operation records failed");
                    break;
                }
            }
        }
    }
}

/// Logs a failed pass: at warn, unless the database is unreachable, which the store logs once
/// per outage rather than once per pass.
fn failed(e: &StoreError, message: &'static str) {
    if e.is_outage() {
        tracing::debug!(error = %e, "{message}");
    } else {
        tracing::warn!(error = %e, "{message}");
    }
}
