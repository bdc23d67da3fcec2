//! Counts for `server.stats` (and `/metrics`), all from one snapshot.
//!
//! Clients, sessions and events are read from the COUNT indexes the schema defines: a total,
//! less (for sessions) the small range past its deadline that the scheduler has not removed
//! yet, so those cost the same at a million records as at ten. Codes and tokens are counted
//! over their `expires_at` index range, reading each unexpired row: a conditional COUNT index
//! (`consumed_at = NONE`, `status = 'active'`) would make them cheap, but halved the throughput
//! of the writes that flip the condition (the burn, rotation). Codes live minutes, so theirs
//! stays small; the token count grows with live tokens (docs/benchmarks.md, "Counts").

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{Store, StoreError, Vars, take_one};
use crate::types::ServerStats;

#[derive(Debug, Deserialize)]
struct Counts {
    clients: u64,
    sessions: u64,
    codes: u64,
    tokens: u64,
    events: u64,
    oldest_due: Option<DateTime<Utc>>,
}

impl Store {
    /// Live counts per kind, retained events, and how late the oldest overdue session is.
    pub async fn stats(&self, now: DateTime<Utc>) -> Result<ServerStats, StoreError> {
        // A total read while its COUNT index is still being built (a second instance starting
        // on data that predates it) can be short: the difference never goes below zero.
        const SQL: &str = "RETURN { \
            clients: (SELECT count() FROM client GROUP ALL)[0].count ?? 0, \
            sessions: math::max([0, ((SELECT count() FROM session GROUP ALL)[0].count ?? 0) \
                - ((SELECT count() FROM session WHERE expires_at <= $now GROUP ALL)[0].count ?? 0)]), \
            codes: count(SELECT id FROM code WHERE expires_at > $now AND consumed_at = NONE), \
            tokens: count(SELECT id FROM token WHERE status = 'active' AND expires_at > $now), \
            events: (SELECT count() FROM event GROUP ALL)[0].count ?? 0, \
            oldest_due: (SELECT VALUE expires_at FROM session WHERE expires_at <= $now ORDER BY expires_at LIMIT 1)[0] \
        }";
        let counts: Option<Counts> = take_one(&mut self.query(SQL, Vars::new().set("now", now)).await?, 0)?;
        let counts = counts.ok_or_else(|| StoreError::Decode("stats returned nothing".into()))?;
        let lag = counts.oldest_due.map(|due| (now - due).num_milliseconds().max(0) as u64).unwrap_or(0);
        Ok(ServerStats {
            clients: counts.clients,
            sessions: counts.sessions,
            codes: counts.codes,
            tokens: counts.tokens,
            events_retained: counts.events,
            expiry_lag_ms: lag,
        })
    }
}
