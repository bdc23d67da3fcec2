//! On-time expiry: one bounded pass of the scheduler, driven by the `expires_at` indexes, and
//! the deadlines written since, which wake it.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};
use tokio::sync::Notify;

use super::events::{EventKind, session_event, token_event};
use super::{Store, StoreError, Vars, take_returned};

/// What one pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ExpiryPass {
    /// Deadlines of the sessions and active tokens that expired (for lateness figures).
    pub deadlines: Vec<DateTime<Utc>>,
    /// Records removed, of every kind.
    pub removed: usize,
    /// Whether a kind filled its batch, so another pass should follow at once.
    pub more: bool,
    /// The earliest deadline still ahead when the pass committed, of any kind, up to the
    /// horizon the pass was given (`None`: nothing due before it).
    #[serde(deserialize_with = "earliest")]
    pub next: Option<DateTime<Utc>>,
}

/// The earliest of one deadline per kind (`NONE` for a kind with nothing ahead).
fn earliest<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let each = Vec::<Option<DateTime<Utc>>>::deserialize(d)?;
    Ok(each.into_iter().flatten().min())
}

/// The earliest deadline written through this store since the scheduler last took it, so the
/// scheduler can sleep until the next deadline instead of polling. Deadlines written by other
/// instances are not seen here; the scheduler's longest sleep bounds how late those are.
#[derive(Debug)]
pub struct Deadlines {
    /// Milliseconds since the epoch; `i64::MAX` when none was written.
    earliest_ms: AtomicI64,
    /// The deadline the scheduler sleeps towards (ms); `i64::MAX` when it knows of none.
    target_ms: AtomicI64,
    earlier: Notify,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines { earliest_ms: AtomicI64::new(i64::MAX), target_ms: AtomicI64::new(i64::MAX), earlier: Notify::new() }
    }
}

impl Deadlines {
    /// Notes a deadline about to be written; wakes the scheduler only if it is earlier than the
    /// one it sleeps towards (a later one is found by the pass at that deadline).
    pub(super) fn expect(&self, at: DateTime<Utc>) {
        let ms = at.timestamp_millis();
        self.earliest_ms.fetch_min(ms, Ordering::AcqRel);
        if ms < self.target_ms.load(Ordering::Acquire) {
            self.earlier.notify_one();
        }
    }

    /// Says which deadline the scheduler now sleeps towards.
    pub fn aim(&self, at: Option<DateTime<Utc>>) {
        self.target_ms.store(at.map_or(i64::MAX, |at| at.timestamp_millis()), Ordering::Release);
    }

    /// The earliest deadline noted since the last call.
    pub fn take(&self) -> Option<DateTime<Utc>> {
        match self.earliest_ms.swap(i64::MAX, Ordering::AcqRel) {
            i64::MAX => None,
            ms => DateTime::from_timestamp_millis(ms),
        }
    }

    /// Resolves once a deadline earlier than any noted before was written (or at once, if one
    /// was since the last wait).
    pub async fn earlier(&self) {
        self.earlier.notified().await;
    }
}

impl Store {
    /// Removes up to `batch` records of each kind whose deadline is at or before `now` (and, given
    /// `from`, not before it), emitting `expired` for sessions and active tokens in the same
    /// transaction, and finds the next deadline. The cost is proportional to what expires:
    /// every lookup walks an `expires_at` index, from `from` when given. A removed record
    /// leaves a tombstone in that index until the engine compacts it, so a lookup from the
    /// index's start walks every recent removal; `from` is how the scheduler skips the range
    /// it has already cleared. Several schedulers may run against one database; they conflict
    /// on the records they both remove, so each expiry is emitted once.
    ///
    /// The next deadline is looked for only up to `horizon` past `now`: the scheduler never
    /// sleeps longer than that, so a later deadline would change nothing. Unbounded, that
    /// lookup reads ahead through the live records' rows (11–18 ms per kind at a million live
    /// records, every pass); bounded, it reads only what falls due before the horizon.
    pub async fn expire_due(
        &self,
        now: DateTime<Utc>,
        from: Option<DateTime<Utc>>,
        horizon: chrono::Duration,
        batch: usize,
    ) -> Result<ExpiryPass, StoreError> {
        let sql = format!(
            "BEGIN; \
             LET $s = (SELECT VALUE id FROM session WHERE {due} ORDER BY expires_at LIMIT $batch); \
             LET $gone_s = (DELETE $s RETURN BEFORE); \
             FOR $x IN $gone_s {{ {session_expired} }}; \
             LET $t = (SELECT VALUE id FROM token WHERE {due} ORDER BY expires_at LIMIT $batch); \
             LET $gone_t = (DELETE $t RETURN BEFORE); \
             LET $active_t = (SELECT * FROM $gone_t WHERE status = 'active'); \
             FOR $x IN $active_t {{ {token_expired} }}; \
             LET $c = (SELECT VALUE id FROM code WHERE {due} ORDER BY expires_at LIMIT $batch); \
             DELETE $c; \
             LET $f = (SELECT VALUE id FROM family WHERE {due} ORDER BY expires_at LIMIT $batch); \
             DELETE $f; \
             LET $r = (SELECT VALUE id FROM family_revoked WHERE {due} ORDER BY expires_at LIMIT $batch); \
             DELETE $r; \
             RETURN {{ \
                deadlines: array::concat($gone_s.expires_at, $active_t.expires_at), \
                next: [ \
                    (SELECT VALUE expires_at FROM session WHERE {ahead} ORDER BY expires_at LIMIT 1)[0], \
                    (SELECT VALUE expires_at FROM token WHERE {ahead} ORDER BY expires_at LIMIT 1)[0], \
                    (SELECT VALUE expires_at FROM code WHERE {ahead} ORDER BY expires_at LIMIT 1)[0], \
                    (SELECT VALUE expires_at FROM family WHERE {ahead} ORDER BY expires_at LIMIT 1)[0] \
                ], \
                removed: array::len($s) + array::len($t) + array::len($c) + array::len($f) + array::len($r), \
                more: array::max([array::len($s), array::len($t), array::len($c), array::len($f), array::len($r)]) \
                    >= $batch \
             }}; \
             COMMIT;",
            session_expired = session_event(EventKind::Expired, "$x"),
            token_expired = token_event(EventKind::Expired, "$x", "'expired'"),
            due = if from.is_some() { "expires_at >= $from AND expires_at <= $now" } else { "expires_at <= $now" },
            ahead = "expires_at > $now AND expires_at <= $horizon",
        );
        let mut vars = Vars::new()
            .set("now", now)
            .set("horizon", now + horizon.max(chrono::Duration::zero()))
            .set("batch", batch as i64);
        if let Some(from) = from {
            vars = vars.set("from", from);
        }
        let pass: Option<ExpiryPass> =
            self.retrying(|| async { take_returned(&mut self.query_emitting(&sql, vars.clone()).await?) }).await?;
        Ok(pass.unwrap_or_default())
    }
}
