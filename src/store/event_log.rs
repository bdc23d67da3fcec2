//! The event log: sequencing the outbox into cursors, reading after a cursor, pruning.
//!
//! This is the log every instance shares; the hub (`crate::hub`) broadcasts it live within one
//! instance, and a subscription (`rpc/subscription.rs`) replays it from a cursor.

use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::{EventKind, Store, StoreError, Vars, take_all, take_one, take_returned};
use crate::clock::stored_precision;

/// A sequenced lifecycle event as stored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EventRecord {
    pub seq: i64,
    pub stream: String,
    pub kind: EventKind,
    pub at: DateTime<Utc>,
    pub session_id: Option<String>,
    pub token_id: Option<String>,
    pub grant_id: Option<String>,
    pub client_id: Option<String>,
    pub user_id: Option<String>,
    pub reason: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The retained range of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct LogBounds {
    /// The last cursor handed out (0 before the first event).
    pub head: i64,
    /// The oldest retained event's cursor, if any is retained.
    pub oldest: Option<i64>,
}

impl LogBounds {
    /// The oldest cursor a subscription may resume from with no gap: the one just before the
    /// oldest retained event, or the head when nothing is retained.
    pub fn resume_from(&self) -> i64 {
        self.oldest.map_or(self.head, |oldest| oldest - 1)
    }
}

/// A page of the log and the head as of the same read.
#[derive(Debug, Clone, Deserialize)]
pub struct EventPage {
    pub events: Vec<EventRecord>,
    /// The last cursor handed out when the page was read.
    pub head: i64,
}

#[derive(Debug, Deserialize)]
struct Pending {
    key: String,
    ts: DateTime<Utc>,
}

/// How far before a floor a sequencing read starts.
///
/// SurrealDB keys a datetime index by its RFC 3339 text with as few fractional digits as are
/// exact (`crate::clock::stored_precision`), and `ts` is the database's clock to the
/// nanosecond: a row in the floor's own millisecond (`…05.123456789Z`) sorts before the floor
/// (`…05.123Z`), and a floor on a whole second (`…05Z`) sorts after that whole second. So a
/// floor is never read from as it is: see [`read_bound`].
const FLOOR_MARGIN: chrono::Duration = chrono::Duration::seconds(1);

/// Where a read from `floor` starts: a second before it, never on a whole second. Every row
/// at or past the floor is then more than a millisecond past the bound, so byte order agrees
/// with time order between them; what the range takes in before the floor is sequenced already
/// (a second of tombstones). The margin also absorbs the millisecond a clock reading may be
/// moved forward by.
pub(super) fn read_bound(floor: DateTime<Utc>) -> DateTime<Utc> {
    stored_precision(floor - FLOOR_MARGIN)
}

/// What one sequencing pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequenced {
    /// Rows given cursors.
    pub count: usize,
    /// Where the next pass may start reading: every row with an earlier `ts` is sequenced, and
    /// none can appear. `None` where that cannot be known (several instances share the
    /// database): from the start.
    pub next_from: Option<DateTime<Utc>>,
}

impl Store {
    /// Moves up to `limit` outbox rows into the event log, giving them consecutive cursors in
    /// the order they became visible; rows that became visible together are ordered by the
    /// database's clock at the change (`ts`), so a change that committed before another began
    /// comes first. Sequencers on several instances conflict on the sequencer record, so
    /// cursors are never handed out twice.
    ///
    /// Given `from`, only rows with a `ts` from then on are read: a floor a previous pass
    /// returned in [`Sequenced::next_from`], before which every row is already sequenced. A
    /// read from the outbox's start walks the tombstone of every row ever sequenced
    /// (`in_flight.rs`).
    pub async fn sequence_pending(
        &self,
        from: Option<DateTime<Utc>>,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Sequenced, StoreError> {
        // Whether an attempt found no floor (the clock went back): a retry must not find one
        // either, since the signal is given once.
        let no_floor = AtomicBool::new(false);
        self.retrying(|| async {
            // Taken before the read begins: no row it cannot see has an earlier `ts`.
            let settled = self.in_flight.as_ref().and_then(|set| {
                let settled = set.settled();
                if settled.is_none() {
                    no_floor.store(true, Ordering::Relaxed);
                }
                settled.filter(|_| !no_floor.load(Ordering::Relaxed))
            });
            const READ: &str = "BEGIN; \
                (SELECT VALUE next FROM ONLY sequencer:events) ?? 1; \
                SELECT record::id(id) AS key, ts FROM outbox ORDER BY ts, id LIMIT $limit; \
                COMMIT;";
            const READ_FROM: &str = "BEGIN; \
                (SELECT VALUE next FROM ONLY sequencer:events) ?? 1; \
                SELECT record::id(id) AS key, ts FROM outbox WHERE ts >= $from ORDER BY ts, id LIMIT $limit; \
                COMMIT;";
            let vars = Vars::new().set("limit", limit as i64);
            let mut results = match from {
                Some(from) => self.query(READ_FROM, vars.set("from", read_bound(from))).await?,
                None => self.query(READ, vars).await?,
            };
            let first: i64 = take_one(&mut results, 1)?.unwrap_or(1);
            let pending: Vec<Pending> = take_all(&mut results, 2)?;
            // A full page may have left rows at the last `ts` it read, never before it.
            let next_from = match pending.last() {
                Some(last) if pending.len() >= limit => settled.map(|settled| settled.min(last.ts)),
                _ => settled,
            };
            if pending.is_empty() {
                return Ok(Sequenced { count: 0, next_from });
            }
            let items: Vec<serde_json::Value> = pending
                .iter()
                .enumerate()
                .map(|(i, p)| json!({ "key": p.key, "seq": first + i as i64 }))
                .collect();
            const WRITE: &str = "BEGIN; \
                IF ((SELECT VALUE next FROM ONLY sequencer:events) ?? 1) != $first { THROW 'authstore:retry' }; \
                UPSERT sequencer:events SET next = $next; \
                FOR $item IN $items { \
                    LET $o = (SELECT * FROM ONLY type::record('outbox', $item.key)); \
                    IF $o = NONE { THROW 'authstore:retry' }; \
                    CREATE type::record('event', $item.seq) CONTENT { seq: $item.seq, stream: $o.stream, kind: $o.kind, \
                        at: $o.at, session_id: $o.session_id, token_id: $o.token_id, grant_id: $o.grant_id, \
                        client_id: $o.client_id, user_id: $o.user_id, reason: $o.reason, expires_at: $o.expires_at, \
                        sequenced_at: $now }; \
                    DELETE type::record('outbox', $item.key); \
                }; \
                COMMIT;";
            let count = items.len();
            let vars = Vars::new()
                .set("first", first)
                .set("next", first + count as i64)
                .set("items", serde_json::Value::Array(items))
                .set("now", now);
            self.query(WRITE, vars).await?;
            Ok(Sequenced { count, next_from })
        })
        .await
    }

    /// Up to `limit` events with a cursor greater than `after`, in cursor order.
    pub async fn events_after(&self, after: i64, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        const SQL: &str = "SELECT * FROM event WHERE seq > $after ORDER BY seq LIMIT $limit";
        let vars = Vars::new().set("after", after).set("limit", limit as i64);
        take_all(&mut self.query(SQL, vars).await?, 0)
    }

    /// Like [`Store::events_after`], together with the head of the log read in the same
    /// transaction, so a reader can tell "nothing more was sequenced" from "what followed was
    /// pruned".
    pub async fn events_page(&self, after: i64, limit: usize) -> Result<EventPage, StoreError> {
        const SQL: &str = "BEGIN; \
            LET $events = (SELECT * FROM event WHERE seq > $after ORDER BY seq LIMIT $limit); \
            RETURN { events: $events, head: ((SELECT VALUE next FROM ONLY sequencer:events) ?? 1) - 1 }; \
            COMMIT;";
        let vars = Vars::new().set("after", after).set("limit", limit as i64);
        let page: Option<EventPage> = take_returned(&mut self.query(SQL, vars).await?)?;
        page.ok_or_else(|| StoreError::Decode("no event page".into()))
    }

    /// The newest cursor handed out and the oldest one still retained.
    pub async fn log_bounds(&self) -> Result<LogBounds, StoreError> {
        const SQL: &str = "BEGIN; RETURN { \
            head: ((SELECT VALUE next FROM ONLY sequencer:events) ?? 1) - 1, \
            oldest: (SELECT VALUE seq FROM event WHERE seq >= $from ORDER BY seq LIMIT 1)[0] }; COMMIT;";
        let vars = Vars::new().set("from", self.pruned_below());
        let bounds: Option<LogBounds> = take_returned(&mut self.query(SQL, vars).await?)?;
        let bounds = bounds.ok_or_else(|| StoreError::Decode("no log bounds".into()))?;
        // The log is a suffix: nothing below the oldest retained cursor (or above the head,
        // when none is) can be retained again.
        self.pruned_to(bounds.oldest.unwrap_or(bounds.head + 1));
        Ok(bounds)
    }

    /// Every cursor below this one is gone for good, as far as this store has seen: pruned, or
    /// never handed out. Reads of the log's start look from here, so that they do not walk
    /// the tombstones the pruned events left in the `event_seq` index (SurrealKV keeps one for
    /// every deleted key, `in_flight.rs`).
    fn pruned_below(&self) -> i64 {
        self.pruned_below.load(Ordering::Acquire)
    }

    fn pruned_to(&self, cursor: i64) {
        self.pruned_below.fetch_max(cursor, Ordering::AcqRel);
    }

    /// Drops the oldest events, at most `limit`, that were sequenced before `before`, stopping
    /// at the first one that was not. What is dropped is always a prefix of the log, decided
    /// once (the cut-off cursor) in the transaction that deletes below it: the events kept are
    /// consecutive cursors up to the head whichever instance prunes and whatever its clock
    /// says, and an event stamped late by a slow clock can hold back pruning but never leaves a
    /// hole. Returns how many were dropped.
    pub async fn prune_events(&self, before: DateTime<Utc>, limit: usize) -> Result<usize, StoreError> {
        const SQL: &str = "BEGIN; \
            LET $rows = (SELECT id, seq, sequenced_at FROM event WHERE seq >= $from ORDER BY seq LIMIT $limit); \
            LET $kept = (SELECT VALUE seq FROM $rows WHERE sequenced_at >= $before); \
            LET $cut = IF array::len($kept) > 0 { array::min($kept) } ELSE { (array::max($rows.seq) ?? 0) + 1 }; \
            LET $old = (SELECT VALUE id FROM $rows WHERE seq < $cut); \
            DELETE $old; \
            RETURN { pruned: array::len($old), cut: $cut }; \
            COMMIT;";
        #[derive(Deserialize)]
        struct Pruned {
            pruned: usize,
            cut: i64,
        }
        let vars = Vars::new().set("before", before).set("limit", limit as i64).set("from", self.pruned_below());
        let pruned: Option<Pruned> =
            self.retrying(|| async { take_returned(&mut self.query(SQL, vars.clone()).await?) }).await?;
        match pruned {
            Some(Pruned { pruned, cut }) => {
                // An empty page says nothing about where the log starts (`cut` is 1 then).
                if pruned > 0 {
                    self.pruned_to(cut);
                }
                Ok(pruned)
            }
            None => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;
    use crate::store::{Location, Memory, StoreConfig};

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).unwrap_or_default()
    }

    /// A row in the floor's own millisecond, or on a whole second after it, is read from the
    /// floor: the index orders datetimes by their text, with as few digits as are exact.
    #[test]
    fn a_read_from_a_floor_finds_every_row_at_or_past_it_whatever_its_digits() {
        let cases = [
            ("2026-11-29T12:00:05.123Z", "2026-11-29T12:00:05.123456789Z"),
            ("2026-11-29T12:00:05.123Z", "2026-11-29T12:00:05.123Z"),
            ("2026-11-29T12:00:05.999Z", "2026-11-29T12:00:06Z"),
            ("2026-11-29T12:00:06.001Z", "2026-11-29T12:00:06.001000500Z"),
            ("2026-11-29T12:00:05.123456789Z", "2026-11-29T12:00:05.123456789Z"),
            // A full page's last `ts` can fall on a whole second.
            ("2026-11-29T12:00:06Z", "2026-11-29T12:00:06.5Z"),
        ];
        let thread = std::thread::Builder::new().stack_size(20 << 20).spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime
                .block_on(async {
                    for (floor, ts) in cases {
                        let config = StoreConfig {
                            location: Location::Memory,
                            namespace: "t".into(),
                            database: "t".into(),
                            username: None,
                            password: None,
                            memory: Memory::default_for(None),
                        };
                        let store = Store::open(&config).await.map_err(|e| format!("{e}"))?;
                        let row = "CREATE outbox CONTENT { stream: 'session', kind: 'deleted', at: $ts, ts: $ts, \
                               session_id: 's' }";
                        store.query_emitting(row, Vars::new().set("ts", at(ts))).await.map_err(|e| format!("{e}"))?;
                        let pass =
                            store.sequence_pending(Some(at(floor)), 10, at(ts)).await.map_err(|e| format!("{e}"))?;
                        if pass.count != 1 {
                            return Err(format!("a row at {ts} was not read from the floor {floor}"));
                        }
                    }
                    Ok::<_, String>(())
                })
                .map_err(std::io::Error::other)
        });
        let result = thread.map(|t| t.join());
        assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
    }
}
