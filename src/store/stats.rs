//! Counts for `server.stats` (and `/metrics`), all from one snapshot. None reads a token.
//!
//! Clients, sessions and events are read from the COUNT indexes the schema defines: a total,
//! less (for sessions) the range past its deadline that the scheduler has not removed yet,
//! counted over `session_expires`'s keys. Those cost the same at a million records as at ten,
//! and the overdue range stays cheap even when an outage leaves a million due at once.
//!
//! Live tokens are counted through their families. A family that is not revoked holds exactly
//! one active token, whose deadline is the family's (issuing and rotation set both in one
//! transaction; every revocation marks the family in `family_revoked` in the transaction that
//! revokes it, and [`Store::record_revoked_families`] at every start for families an older
//! server revoked). So the live tokens are the families whose deadline is past `now`, less the
//! revoked ones: two ranges counted over `family_expires`'s and `family_revoked_expires`'s
//! keys, never their rows (0.3 s at a million families, against 13–16 s reading each token;
//! docs/benchmarks.md, "Counts"). Every form that counted tokens directly cost the token
//! writes a quarter to a half of their throughput: a COUNT index (conditional or not) on
//! `token` or `family`, or a `(status, expires_at)` index. These markers are written only by
//! revocations (and the start-up pass). Codes live minutes, so theirs are still counted row by row.
//!
//! SurrealDB counts over index keys only when the bound is a constant, so `now` is written into
//! the statement as a datetime literal rather than bound as a parameter (bound, the same count
//! reads every row).

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use serde::Deserialize;

use super::events::mark_revoked;
use super::{Store, StoreError, Vars, take_all, take_one, take_returned};
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
        let sql = format!(
            "RETURN {{ \
                clients: (SELECT count() FROM client GROUP ALL)[0].count ?? 0, \
                sessions: math::max([0, ((SELECT count() FROM session GROUP ALL)[0].count ?? 0) \
                    - ((SELECT count() FROM session WHERE expires_at <= {now} GROUP ALL)[0].count ?? 0)]), \
                codes: count(SELECT id FROM code WHERE expires_at > {now} AND consumed_at = NONE), \
                tokens: math::max([0, ((SELECT count() FROM family WHERE expires_at > {now} GROUP ALL)[0].count ?? 0) \
                    - ((SELECT count() FROM family_revoked WHERE expires_at > {now} GROUP ALL)[0].count ?? 0)]), \
                events: (SELECT count() FROM event GROUP ALL)[0].count ?? 0, \
                oldest_due: (SELECT VALUE expires_at FROM session WHERE expires_at <= {now} ORDER BY expires_at LIMIT 1)[0] \
            }}",
            now = datetime_literal(now),
        );
        let counts: Option<Counts> = take_one(&mut self.query(&sql, Vars::new()).await?, 0)?;
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

    /// Writes the `family_revoked` record of every revoked family that has none: families an
    /// older server revoked (the first start on its data, a rollback and upgrade again, or an
    /// older instance still running beside this one during a deploy). Run at every start, in
    /// the background; reads every family's row (0.5–0.8 s at a million), then writes in pages
    /// (`bulk.rs`). Returns how many it wrote.
    pub async fn record_revoked_families(&self) -> Result<usize, StoreError> {
        const MISSING: &str = "SELECT VALUE grant_id FROM family WHERE revoked_at != NONE \
            AND !record::exists(type::record('family_revoked', grant_id))";
        // Each family is read again as it is marked, and one removed since is skipped. An expiry
        // pass removing a family while its marker is written can still leave the marker; it is
        // past its deadline, so no count includes it, and the next pass removes it.
        let write = format!(
            "BEGIN; \
             LET $ids = $grants.map(|$g| type::record('family', $g)); \
             LET $marked = (SELECT grant_id, expires_at FROM $ids WHERE revoked_at != NONE); \
             FOR $f IN $marked {{ {mark} }}; \
             RETURN array::len($marked); \
             COMMIT;",
            mark = mark_revoked("$f"),
        );
        let missing: Vec<String> =
            self.retrying(|| async { take_all(&mut self.query(MISSING, Vars::new()).await?, 0) }).await?;
        let mut written = 0;
        for grants in missing.chunks(self.page_rows) {
            let vars = Vars::new().set("grants", grants.to_vec());
            let marked: Option<usize> =
                self.retrying(|| async { take_returned(&mut self.query(&write, vars.clone()).await?) }).await?;
            written += marked.unwrap_or(0);
        }
        Ok(written)
    }
}

/// `at` as a SurrealQL datetime literal (`d'2026-11-29T06:00:00.123456789Z'`): digits, `+`,
/// `-`, `:`, `.`, `T` and `Z` only, so nothing in it can end the literal. A leap second (which
/// chrono writes as `:60`, and SurrealDB refuses) is written as the second before it.
fn datetime_literal(at: DateTime<Utc>) -> String {
    let at = at.with_nanosecond(at.nanosecond() % 1_000_000_000).unwrap_or(at);
    format!("d'{}'", at.to_rfc3339_opts(SecondsFormat::Nanos, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datetime_literal_keeps_every_nanosecond() {
        let at = DateTime::from_timestamp(1_796_000_000, 123_456_789).unwrap_or_default();
        assert_eq!(datetime_literal(at), "d'2026-11-30T00:53:20.123456789Z'");
        // Half a second into the leap second after 00:52:59.
        let leap = DateTime::from_timestamp(1_795_999_979, 1_500_000_000).unwrap_or_default();
        assert_eq!(leap.to_rfc3339_opts(SecondsFormat::Nanos, true), "2026-11-30T00:52:60.500000000Z");
        assert_eq!(datetime_literal(leap), "d'2026-11-30T00:52:59.500000000Z'");
    }
}
