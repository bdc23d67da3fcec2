//! The emitting transactions this process has in flight, so the sequencer can read the outbox
//! from a floor instead of from its start.
//!
//! Why a floor: a sequenced outbox row is deleted, and SurrealKV drops a deleted key only when a
//! compaction reaches its bottom level, which a dataset smaller than hundreds of gigabytes never
//! fills. So the `outbox_ts` index keeps one tombstone per event ever sequenced, all in front
//! of the live rows, and a read from the index's start walks every one of them: 24–37 ms on a
//! dataset that had sequenced some 200 000 events, growing with every event for the life of the
//! data. From a floor a minute back it takes 0.6 ms.
//!
//! Why this is safe: a row's `ts` is the database's clock when its change ran, and that change
//! is registered here (with this machine's clock, the same one in-process) before it is sent.
//! So a row that a read cannot see yet has a `ts` no earlier than the oldest change in flight
//! when the read began, or than the read's start if none was: [`InFlight::settled`]. Everything
//! before that was visible to the read. A change whose answer never came (it timed out, or its
//! call was cancelled) stopped with its future: an embedded query runs on its caller's future,
//! and a commit SurrealKV has applied is published by whichever committer finishes the commits
//! before it, within that committer's apply, so a dropped change has landed or will at once. It
//! stays registered a minute all the same.
//!
//! A reading earlier than the one before it means the clock went back; the next read is from
//! the start. A change that was already in flight when the clock went back and writes its rows
//! after can still be passed by (its `ts` is earlier than its registration); the sequencer's
//! sweep once a minute sequences them. Only where this process is the database's only writer
//! (embedded SurrealKV, `mem://`) is there such a set; against a shared server the sequencer
//! reads from the start. How a read starts from a floor: `event_log.rs`, `read_bound`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::clock::Clock;

/// The set of emitting transactions sent and not yet answered.
pub(super) struct InFlight {
    open: Mutex<Open>,
    /// How long after it was given up on an unanswered change is still counted as in flight.
    given_up_for: chrono::Duration,
    /// This machine's clock: the database's, in-process (`time::now()` in SurrealQL).
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight").field("open", &self.open).field("given_up_for", &self.given_up_for).finish()
    }
}

#[derive(Debug, Default)]
struct Open {
    next: u64,
    /// By ticket: when each change began, and where it stands.
    changes: BTreeMap<u64, (DateTime<Utc>, Standing)>,
    /// The latest clock reading taken here.
    latest: Option<DateTime<Utc>>,
    /// A reading earlier than the one before it was taken since the last floor was given out.
    went_back: bool,
}

impl Open {
    /// A clock reading, taken under the lock so that readings are ordered as they are taken. One
    /// earlier than the reading before means the clock went back; later readings are compared
    /// with it, so a clock set forward and then corrected costs one read from the start, not
    /// reads from the start until it catches up.
    fn read(&mut self, clock: &dyn Clock) -> DateTime<Utc> {
        let now = clock.now();
        if self.latest.is_some_and(|latest| now < latest) {
            self.went_back = true;
        }
        self.latest = Some(now);
        now
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// Sent, its answer awaited.
    Sent,
    /// Its answer will never be read; counted as in flight until then.
    GivenUp(DateTime<Utc>),
}

impl InFlight {
    pub(super) fn new(given_up_for: chrono::Duration, clock: Arc<dyn Clock>) -> Self {
        InFlight { open: Mutex::default(), given_up_for, clock }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Open> {
        // Nothing here can leave the set half-updated, so a panic elsewhere cannot poison it.
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a change about to be sent. The ticket ends it when dropped: as answered once
    /// [`Ticket::answered`] was called, otherwise as given up on.
    pub(super) fn begin(&self) -> Ticket<'_> {
        let mut open = self.open();
        let began = open.read(&*self.clock);
        let id = open.next;
        open.next += 1;
        open.changes.insert(id, (began, Standing::Sent));
        Ticket { set: self, id, answered: false }
    }

    /// The earliest `ts` a row not yet visible to a read that begins now can have (give or take
    /// the millisecond `stored_precision` may add): the start of the oldest change in flight, or
    /// now. `None` if the clock went back since the last call: rows written since may sit before
    /// any floor, so the read is from the start. Call it before the read begins.
    pub(super) fn settled(&self) -> Option<DateTime<Utc>> {
        let mut open = self.open();
        let now = open.read(&*self.clock);
        open.changes.retain(|_, (_, standing)| !matches!(standing, Standing::GivenUp(until) if *until < now));
        if std::mem::take(&mut open.went_back) {
            return None;
        }
        Some(open.changes.values().map(|(began, _)| *began).min().map_or(now, |oldest| oldest.min(now)))
    }

    fn end(&self, id: u64, answered: bool) {
        let mut open = self.open();
        if answered {
            open.changes.remove(&id);
        } else {
            let until = open.read(&*self.clock) + self.given_up_for;
            if let Some((_, standing)) = open.changes.get_mut(&id) {
                *standing = Standing::GivenUp(until);
            }
        }
    }
}

/// One registered change; see [`InFlight::begin`].
#[derive(Debug)]
pub(super) struct Ticket<'a> {
    set: &'a InFlight,
    id: u64,
    answered: bool,
}

impl Ticket<'_> {
    /// The database answered: the change committed or failed, and either way is over.
    pub(super) fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.set.end(self.id, self.answered);
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::clock::ManualClock;

    fn set(given_up_for: Duration) -> (InFlight, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(DateTime::from_timestamp(1_800_000_000, 5_000_000).unwrap_or_default()));
        (InFlight::new(given_up_for, clock.clone()), clock)
    }

    #[test]
    fn the_floor_holds_at_the_oldest_change_in_flight_until_it_is_answered() {
        let (set, clock) = set(Duration::minutes(1));
        let before = clock.now();
        let first = set.begin();
        clock.advance(Duration::milliseconds(5));
        let second = set.begin();
        clock.advance(Duration::milliseconds(5));
        assert_eq!(set.settled(), Some(before));
        second.answered();
        assert_eq!(set.settled(), Some(before), "the older change still holds it");
        first.answered();
        assert_eq!(set.settled(), Some(clock.now()), "nothing in flight: the floor is now");
    }

    #[test]
    fn a_change_given_up_on_holds_the_floor_for_a_while_and_is_then_forgotten() {
        let (set, clock) = set(Duration::milliseconds(30));
        let began = clock.now();
        drop(set.begin());
        clock.advance(Duration::milliseconds(20));
        assert_eq!(set.settled(), Some(began), "it may still commit");
        clock.advance(Duration::milliseconds(20));
        assert_eq!(set.settled(), Some(clock.now()), "past its time it cannot");
        assert!(set.open().changes.is_empty());
    }

    #[test]
    fn a_clock_that_went_back_gives_no_floor_once_and_a_change_since_holds_the_next() {
        let (set, clock) = set(Duration::minutes(1));
        assert!(set.settled().is_some());
        clock.advance(Duration::seconds(-2));
        let began = clock.now();
        let change = set.begin();
        clock.advance(Duration::milliseconds(5));
        assert_eq!(set.settled(), None, "a change began before a floor already given out");
        assert_eq!(set.settled(), Some(began), "the change in flight holds the next floor");
        change.answered();
        assert_eq!(set.settled(), Some(clock.now()));

        // Set an hour forward, then corrected: one read from the start, not an hour of them.
        clock.advance(Duration::hours(1));
        assert!(set.settled().is_some());
        clock.advance(Duration::hours(-1));
        assert_eq!(set.settled(), None);
        clock.advance(Duration::milliseconds(5));
        assert_eq!(set.settled(), Some(clock.now()));
    }
}
