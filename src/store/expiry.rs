//! On-time expiry: one bounded pass of the scheduler, driven by the `expires_at` indexes.

use chrono::{DateTime, Utc};
use serde::Deserialize;

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
}

impl Store {
    /// Removes up to `batch` records of each kind whose deadline is at or before `now`, emitting
    /// `expired` for sessions and active tokens in the same transaction. The cost is
    /// proportional to what expires: every lookup walks an `expires_at` index. Several
    /// schedulers may run against one database; they conflict on the records they both
    /// remove, so each expiry is emitted once.
    pub async fn expire_due(&self, now: DateTime<Utc>, batch: usize) -> Result<ExpiryPass, StoreError> {
        let sql = format!(
            "BEGIN; \
             LET $s = (SELECT VALUE id FROM session WHERE expires_at <= $now ORDER BY expires_at LIMIT $batch); \
             LET $gone_s = (DELETE $s RETURN BEFORE); \
             FOR $x IN $gone_s {{ {session_expired} }}; \
             LET $t = (SELECT VALUE id FROM token WHERE expires_at <= $now ORDER BY expires_at LIMIT $batch); \
             LET $gone_t = (DELETE $t RETURN BEFORE); \
             LET $active_t = (SELECT * FROM $gone_t WHERE status = 'active'); \
             FOR $x IN $active_t {{ {token_expired} }}; \
             LET $c = (SELECT VALUE id FROM code WHERE expires_at <= $now ORDER BY expires_at LIMIT $batch); \
             DELETE $c; \
             LET $f = (SELECT VALUE id FROM family WHERE expires_at <= $now ORDER BY expires_at LIMIT $batch); \
             DELETE $f; \
             RETURN {{ \
                deadlines: array::concat($gone_s.expires_at, $active_t.expires_at), \
                removed: array::len($s) + array::len($t) + array::len($c) + array::len($f), \
                more: array::max([array::len($s), array::len($t), array::len($c), array::len($f)]) >= $batch \
             }}; \
             COMMIT;",
            session_expired = session_event(EventKind::Expired, "$x"),
            token_expired = token_event(EventKind::Expired, "$x", "'expired'"),
        );
        let vars = Vars::new().set("now", now).set("batch", batch as i64);
        let pass: Option<ExpiryPass> =
            self.retrying(|| async { take_returned(&mut self.query_emitting(&sql, vars.clone()).await?) }).await?;
        Ok(pass.unwrap_or_default())
    }
}
