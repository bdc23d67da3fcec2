//! Background work: the expiry scheduler, the event sequencer, the hub's reader and the
//! event pruner. Started with the application, stopped with it; each loop survives errors
//! (logging them) and exits when told to. The loops are named tasks owned by one
//! [`Tasks`](crate::tasks::Tasks), like the store's group-commit workers.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::{Instant, MissedTickBehavior};

use crate::clock::Clock;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use crate::tasks::{StopSignal, Tasks};

/// How many records or events one pass handles; passes repeat while batches come back full.
const BATCH: usize = 500;

/// Timings of the background loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// Whether the expiry scheduler runs. Off only in tests that watch records pass their
    /// deadline on a clock they move by hand.
    pub expiry: bool,
    /// The longest the expiry scheduler sleeps without looking for due records. It sleeps
    /// until the next deadline it knows of: found by its last pass, or written through this
    /// instance since. So only deadlines written by other instances wait up to this long.
    pub expiry_tick: Duration,
    /// How often the expiry scheduler looks for due records from the start of the `expires_at`
    /// indexes. Between these sweeps a pass looks only from a little before the previous pass
    /// (so it does not walk the removed records' tombstones), and a record committed long
    /// after its own deadline by another instance (a stalled writer, a clock far behind) waits
    /// for the next sweep.
    pub expiry_sweep: Duration,
    /// How often the hub looks for events it was not woken for (sequenced by other instances).
    pub poll: Duration,
    /// How often the sequencer looks for outbox rows it was not woken for. Each instance
    /// sequences its own writes as they commit, so this only catches what slipped past that: a
    /// commit whose answer was lost, a failed pass, an instance killed between its commit and
    /// sequencing. Against a shared server each look reads the outbox's index from its start,
    /// past the tombstones of the rows already sequenced (12 ms on a dataset that had sequenced
    /// 70 000 events), so it is not done every `poll`: that cost a quarter of a core on an idle
    /// server.
    pub sequence_poll: Duration,
    /// How often the sequencer reads the outbox from its start rather than from the floor its
    /// last pass returned (see `sequencer`).
    pub sequence_sweep: Duration,
    /// How long sequenced events are kept.
    pub retention: Duration,
    /// How often old events are pruned.
    pub prune_every: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            expiry: true,
            expiry_tick: Duration::from_secs(1),
            expiry_sweep: Duration::from_secs(60),
            poll: Duration::from_millis(50),
            sequence_poll: Duration::from_secs(1),
            sequence_sweep: Duration::from_secs(60),
            retention: Duration::from_secs(24 * 3600),
            prune_every: Duration::from_secs(60),
        }
    }
}

/// The running loops.
#[derive(Debug)]
pub struct Background {
    tasks: Tasks,
}

impl Background {
    pub async fn start(store: Store, clock: Arc<dyn Clock>, hub: Hub, metrics: Arc<Metrics>, timings: Timings) -> Self {
        let mut tasks = Tasks::new();
        // The hub starts at the current head: subscribers without `since` see what comes next.
        match store.log_bounds().await {
            Ok(bounds) => hub.publish_position(bounds.head),
            Err(e) => tracing::warn!(error = %e, "cannot read the event log head; starting from 0"),
        }
        let stop = tasks.stop_signal();
        if timings.expiry {
            tasks.spawn(
                "expiry-scheduler",
                expiry(store.clone(), clock.clone(), metrics.clone(), timings, stop.clone()),
            );
        }
        tasks.spawn("sequencer", sequencer(store.clone(), clock.clone(), hub.clone(), metrics, timings, stop.clone()));
        tasks.spawn("hub-reader", read_into_hub(store.clone(), hub, timings, stop.clone()));
        tasks.spawn("revoked-families", record_revoked_families(store.clone()));
        tasks.spawn("pruner", pruner(store, clock, timings, stop));
        Background { tasks }
    }

    /// Stops every loop and waits for each to finish its current pass.
    pub async fn stop(self) {
        self.tasks.stop().await;
    }

    /// Stops every loop and waits, until `deadline`, for each to finish its current pass;
    /// a loop still running then is aborted.
    pub async fn stop_by(self, deadline: tokio::time::Instant) {
        self.tasks.stop_by(deadline).await;
    }
}

/// The shortest time from the end of one expiry pass to the start of the next. Deadlines closer
/// together than this are removed by one pass, so a steady stream of them costs at most 40
/// passes a second, each a few milliseconds late at most.
const PASS_GAP: Duration = Duration::from_millis(25);

/// How far before the previous pass's `now` a pass starts looking: a record can become visible
/// after a pass whose `now` was past its deadline (its transaction committed later, or another
/// instance's clock is a little behind). Twice the default database timeout; a commit later
/// than that (a longer `--db-timeout-ms`, retries) waits for the next sweep.
const SWEPT_MARGIN: chrono::Duration = chrono::Duration::seconds(10);

/// Removes due records on time, emitting `expired` with each removal. Sleeps until the next
/// deadline it knows of (found by its last pass, or written through this instance since), but
/// starts a pass no sooner than [`PASS_GAP`] after the last one ended and no later than
/// `expiry_tick` after it.
async fn expiry(store: Store, clock: Arc<dyn Clock>, metrics: Arc<Metrics>, timings: Timings, mut stop: StopSignal) {
    let written = store.deadlines();
    // How far past `now` a pass looks for the next deadline: twice the longest sleep, so a
    // deadline just past one sleep is still planned for exactly. A pass that took longer than a
    // sleep may have missed one beyond that: the next pass then follows at once (below).
    let horizon = chrono::Duration::from_std(timings.expiry_tick * 2).unwrap_or(chrono::Duration::days(1));
    let mut next: Option<DateTime<Utc>> = None;
    // When the last pass ended; `None` before the first, which runs at once.
    let mut last_pass: Option<Instant> = None;
    // The `now` of the last pass that left nothing due, and when the last sweep from the
    // indexes' start did (`None`: a sweep is due).
    let mut cleared: Option<DateTime<Utc>> = None;
    let mut last_sweep: Option<Instant> = None;
    let plan = |next: Option<DateTime<Utc>>, last_pass: Option<Instant>| -> Instant {
        let Some(last) = last_pass else { return Instant::now() };
        let latest = last + timings.expiry_tick;
        let due = next.map_or(latest, |at| Instant::now() + until(at, clock.now()));
        due.min(latest).max(last + PASS_GAP)
    };
    loop {
        // Aimed before taking what was written, so a deadline written in between either is
        // taken here or wakes the sleep below.
        written.aim(next);
        next = earliest(next, written.take());
        written.aim(next);
        let sleep = tokio::time::sleep_until(plan(next, last_pass));
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = stop.stopped() => return,
                () = &mut sleep => break,
                () = written.earlier() => {
                    let sooner = earliest(next, written.take());
                    if sooner != next {
                        next = sooner;
                        written.aim(next);
                        let wake = plan(next, last_pass);
                        if wake < sleep.deadline() {
                            sleep.as_mut().reset(wake);
                        }
                    }
                }
            }
        }
        let sweep = last_sweep.is_none_or(|at| at.elapsed() >= timings.expiry_sweep);
        let from = if sweep { None } else { look_from(cleared, next, clock.now()) };
        // Kept for a failed pass: a deadline written before the cleared range is looked for
        // from its own place next time too, not left for the sweep.
        let woke_for = next.take();
        let began = Instant::now();
        loop {
            let now = clock.now();
            let started = Instant::now();
            match store.expire_due(now, from, horizon, BATCH).await {
                Ok(pass) => {
                    tracing::debug!(
                        removed = pass.removed,
                        more = pass.more,
                        sweep = from.is_none(),
                        ms = started.elapsed().as_secs_f64() * 1000.0,
                        "expiry pass"
                    );
                    for deadline in &pass.deadlines {
                        metrics.expiry_lateness((now - *deadline).to_std().unwrap_or_default());
                    }
                    // A full batch leaves due records behind, possibly before `now` minus the
                    // margin: the next pass looks from the same place.
                    if !pass.more {
                        next = pass.next;
                        cleared = Some(now);
                        if from.is_none() {
                            last_sweep = Some(Instant::now());
                        }
                        break;
                    }
                }
                Err(e) => {
                    failed(&e, "expiry pass failed; retrying after the longest sleep");
                    next = woke_for;
                    break;
                }
            }
        }
        if next.is_none() && began.elapsed() > timings.expiry_tick {
            // Its `now` is a tick or more behind: a deadline past its horizon may be due before
            // the next sleep would end.
            next = Some(clock.now());
        }
        last_pass = Some(Instant::now());
    }
}

/// Where a pass between sweeps starts looking: a margin before the last pass that left nothing
/// due, or at the earliest deadline written through this instance since, if that is earlier.
/// `None` (from the start) when no pass has cleared yet or the clock went back past it.
fn look_from(
    cleared: Option<DateTime<Utc>>,
    written: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let from = cleared.filter(|cleared| *cleared <= now)? - SWEPT_MARGIN;
    Some(written.map_or(from, |written| written.min(from)))
}

/// How long from `now` until `at`, plus a millisecond so that a timer firing early does not
/// find the deadline a hair ahead.
fn until(at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (at - now).to_std().unwrap_or_default() + Duration::from_millis(1)
}

fn earliest<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Once, at start: records the families an older server revoked, which the live-token count
/// needs (`Store::record_revoked_families`).
async fn record_revoked_families(store: Store) {
    match store.record_revoked_families().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(families = n, "recorded families revoked by an older server"),
        Err(e) => failed(&e, "recording revoked families failed; the token count may include them"),
    }
}

/// Gives outbox events their cursors as soon as they are written. Each pass reads from the
/// floor the last one returned (`Store::sequence_pending`; none after the clock went back), and
/// once every `sequence_sweep` from the outbox's start, a net for a row a floor passed by
/// anyway.
async fn sequencer(
    store: Store,
    clock: Arc<dyn Clock>,
    hub: Hub,
    metrics: Arc<Metrics>,
    timings: Timings,
    mut stop: StopSignal,
) {
    let written = store.outbox_written();
    let mut floor = None;
    let mut last_sweep: Option<Instant> = None;
    loop {
        tokio::select! {
            () = stop.stopped() => return,
            () = written.notified() => {}
            () = tokio::time::sleep(timings.sequence_poll) => {}
        }
        let sweep = last_sweep.is_none_or(|at| at.elapsed() >= timings.sequence_sweep);
        let mut from = if sweep { None } else { floor };
        loop {
            let started = Instant::now();
            match store.sequence_pending(from, BATCH, clock.now()).await {
                Ok(pass) => {
                    tracing::debug!(
                        events = pass.count,
                        sweep = from.is_none(),
                        ms = started.elapsed().as_secs_f64() * 1000.0,
                        "sequencer pass"
                    );
                    floor = pass.next_from;
                    from = floor;
                    if pass.count > 0 {
                        metrics.events_emitted(pass.count);
                        hub.wake().notify_one();
                    }
                    if pass.count < BATCH {
                        if sweep {
                            last_sweep = Some(Instant::now());
                        }
                        break;
                    }
                }
                Err(e) => {
                    // The failed pass may have taken the only sign that the clock went back.
                    floor = None;
                    failed(&e, "sequencing failed; retrying");
                    break;
                }
            }
        }
    }
}

/// The hub's reader: follows the event log and broadcasts it to this instance's subscribers.
async fn read_into_hub(store: Store, hub: Hub, timings: Timings, mut stop: StopSignal) {
    let wake = hub.wake();
    loop {
        tokio::select! {
            () = stop.stopped() => return,
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
async fn pruner(store: Store, clock: Arc<dyn Clock>, timings: Timings, mut stop: StopSignal) {
    let mut tick = tokio::time::interval(timings.prune_every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let retention = chrono::Duration::from_std(timings.retention).unwrap_or(chrono::Duration::days(1));
    loop {
        tokio::select! {
            () = stop.stopped() => return,
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
