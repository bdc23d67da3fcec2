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
//! call was cancelled) may still commit, so it stays registered until the database would have
//! cancelled it. Only where this process is the database's only writer (embedded SurrealKV,
//! `mem://`) is there such a set; against a shared server the sequencer reads from the start.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::clock::{Clock, SystemClock};

/// The set of emitting transactions sent and not yet answered.
#[derive(Debug)]
pub(super) struct InFlight {
    open: Mutex<Open>,
    /// How long after it was given up on an unanswered transaction may still commit: the
    /// database's own transaction timeout plus a margin. `None`: no bound is known, so it is
    /// kept for the life of the process.
    abandoned_for: Option<chrono::Duration>,
}

#[derive(Debug, Default)]
struct Open {
    next: u64,
    /// By ticket: when each change began, and where it stands.
    changes: BTreeMap<u64, (DateTime<Utc>, Standing)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// Sent, its answer awaited.
    Sent,
    /// Its answer will never be read; it may commit until then (`None`: for ever).
    GivenUp(Option<DateTime<Utc>>),
}

impl InFlight {
    pub(super) fn new(abandoned_for: Option<chrono::Duration>) -> Self {
        InFlight { open: Mutex::default(), abandoned_for }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Open> {
        // Nothing here can leave the set half-updated, so a panic elsewhere cannot poison it.
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a change about to be sent. The ticket ends it when dropped: as answered once
    /// [`Ticket::answered`] was called, otherwise as given up on.
    pub(super) fn begin(&self) -> Ticket<'_> {
        let began = SystemClock.now();
        let mut open = self.open();
        let id = open.next;
        open.next += 1;
        open.changes.insert(id, (began, Standing::Sent));
        Ticket { set: self, id, answered: false }
    }

    /// The earliest `ts` a row not yet visible to a read that begins now can have: the start of
    /// the oldest change in flight, or now. Call it before the read begins.
    pub(super) fn settled(&self) -> DateTime<Utc> {
        let now = SystemClock.now();
        let mut open = self.open();
        open.changes.retain(|_, (_, standing)| !matches!(standing, Standing::GivenUp(Some(until)) if *until < now));
        open.changes.values().map(|(began, _)| *began).min().map_or(now, |oldest| oldest.min(now))
    }

    fn end(&self, id: u64, answered: bool) {
        let mut open = self.open();
        if answered {
            open.changes.remove(&id);
        } else if let Some((_, standing)) = open.changes.get_mut(&id) {
            *standing = Standing::GivenUp(self.abandoned_for.map(|bound| SystemClock.now() + bound));
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
    use super::*;

    #[test]
    fn the_floor_holds_at_the_oldest_change_in_flight_until_it_is_answered() {
        let set = InFlight::new(Some(chrono::Duration::minutes(5)));
        let before = SystemClock.now();
        let first = set.begin();
        let second = set.begin();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let floor = set.settled();
        assert!(floor >= before && floor < SystemClock.now() - chrono::Duration::milliseconds(4));
        second.answered();
        assert_eq!(set.settled(), floor, "the older change still holds it");
        first.answered();
        assert!(set.settled() > floor, "nothing in flight: the floor is now");
    }

    #[test]
    fn a_change_given_up_on_holds_the_floor_until_the_database_would_have_cancelled_it() {
        let set = InFlight::new(Some(chrono::Duration::milliseconds(30)));
        drop(set.begin());
        let floor = set.settled();
        std::thread::sleep(std::time::Duration::from_millis(10));
        assert_eq!(set.settled(), floor, "it may still commit");
        std::thread::sleep(std::time::Duration::from_millis(40));
        assert!(set.settled() > floor, "past the database's bound it cannot");

        let unbounded = InFlight::new(None);
        drop(unbounded.begin());
        let floor = unbounded.settled();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(unbounded.settled(), floor, "with no bound it holds for good");
    }
}
