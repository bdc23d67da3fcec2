//! Counts for `server.stats`.

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
        const SQL: &str = "RETURN { \
            clients: count(SELECT id FROM client), \
            sessions: count(SELECT id FROM session WHERE expires_at > $now), \
            codes: count(SELECT id FROM code WHERE expires_at > $now AND consumed_at = NONE), \
            tokens: count(SELECT id FROM token WHERE status = 'active' AND expires_at > $now), \
            events: count(SELECT id FROM event), \
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
