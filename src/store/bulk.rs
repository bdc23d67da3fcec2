//! Changes that may touch any number of rows run in pages: `session.purge`, `token.revoke` by
//! client or user, `client.delete`'s cascade, and the start-up pass that marks revoked families.
//!
//! SurrealKV holds a whole transaction in its write buffer (64 MiB on a 512 MB machine), and a
//! transaction that does not fit fails at commit, however often it is run again: unpaged, a
//! `token.revoke` of a client with some tens of thousands of live families could never
//! succeed. A page changes at most [`PAGE`] rows of each kind it touches (fewer with a small
//! buffer, see [`page_rows`]), in one transaction with its events.
//!
//! Pages walk their rows by key. Each selection is an index range in key order, and a page
//! hands the next the last key it took of each kind (its cursor, bound as `$after_<name>`),
//! so no page walks again what an earlier one changed: removed rows leave tombstones in an
//! index, revoked families stay as rows, and a walk from the range's start through either
//! costs as much as the rows themselves (16 s through a million families here).
//!
//! Each page stands on its own. A call cut off part-way (a timeout, a lost connection, SIGKILL)
//! leaves the pages it committed, each with its events, and running the call again finishes
//! the job; nothing a page changes is undone by a later one. With an idempotency key, each page
//! adds its count to the key's record (`partial`) and the last page (the first that finds less
//! than a full page) turns the total into the recorded answer, so a retry after a lost
//! connection answers for the whole change: the first call's pages and its own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::event_log::read_bound;
use super::idempotency::bind;
use super::{Store, StoreError, Vars, take_returned};
use crate::domain::idempotency::Keyed;

/// The most rows of one kind a page changes where the write buffer is no concern (`mem://`, a
/// shared server) or large (64 MiB and up).
pub(super) const PAGE: usize = 250;

/// Write buffer per row of each kind in a page. A purged session, with its index entries and
/// its event, takes 2–3 KiB; a revoked family with its token and their event up to 4 KiB; a
/// `client.delete` page changes three kinds: 16 KiB per row keeps a page under a quarter of
/// the buffer.
const BUFFER_PER_ROW: u64 = 16 << 10;

/// The rows of one kind a page changes with a SurrealKV write buffer of `memtable_bytes`.
pub(super) fn page_rows(memtable_bytes: u64) -> usize {
    usize::try_from(memtable_bytes / BUFFER_PER_ROW).unwrap_or(PAGE).clamp(8, PAGE)
}

/// A key a page walks its rows by, and from which the next page goes on. A page binds it as
/// `$after_<name>`, selects its rows in that key's order from it on, and sets
/// `$cursor.<name>` to the last key it took (or back to `$after_<name>` if it took none).
#[derive(Debug, Clone, Copy)]
pub(super) enum Cursor {
    /// A text key; the first page starts from `""`, before every key.
    Text(&'static str),
    /// A datetime key; the first page starts from the epoch, before every deadline. The next
    /// page starts a second before the last key taken (`event_log::read_bound`): a datetime
    /// index orders its keys by their text, which agrees with time order only a second apart.
    Time(&'static str),
}

impl Cursor {
    pub(super) fn var(self) -> String {
        match self {
            Cursor::Text(name) | Cursor::Time(name) => format!("after_{name}"),
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Cursor::Text(name) | Cursor::Time(name) => name,
        }
    }

    /// Binds the start of the walk.
    fn start(self, vars: Vars) -> Vars {
        match self {
            Cursor::Text(_) => vars.set(&self.var(), String::new()),
            Cursor::Time(_) => vars.set(&self.var(), DateTime::<Utc>::UNIX_EPOCH),
        }
    }

    /// Binds where the next page goes on, from what a page reported.
    fn after(self, vars: Vars, reported: &serde_json::Map<String, serde_json::Value>) -> Result<Vars, StoreError> {
        let value = reported
            .get(self.name())
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| StoreError::Decode(format!("a page reported no cursor `{}`", self.name())))?;
        Ok(match self {
            Cursor::Text(_) => vars.set(&self.var(), value.to_string()),
            Cursor::Time(_) => {
                let at = value.parse::<DateTime<Utc>>().map_err(|e| StoreError::Decode(format!("cursor: {e}")))?;
                vars.set(&self.var(), read_bound(at))
            }
        })
    }
}

/// How the pages of a change walk: by which cursors, and after which first transaction.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Walk<'a> {
    /// The keys pages go on from (the first page starts at their start).
    pub cursors: &'a [Cursor],
    /// A transaction run first in each attempt (also on a keyed retry that goes on from
    /// committed pages); what it returns (text, or NONE) is bound as `$before` for the pages.
    pub before: Option<&'a str>,
}

/// What one page reports.
#[derive(Debug, Deserialize)]
struct Page {
    /// Whether it found a full page of some kind, so that another page may find more.
    full: bool,
    /// What the pages so far count: this page's own, plus (with a key) the earlier pages'.
    total: u64,
    /// The last key it took of each kind ([`Cursor`]).
    #[serde(default)]
    cursor: serde_json::Map<String, serde_json::Value>,
}

impl Store {
    /// Runs `page` (SurrealQL, inside a transaction) until it finds less than a full page, and
    /// returns the sum of what the pages counted. `page` takes at most `$take` rows of each
    /// kind (`$page`, unless it sets `$take` lower), never selects a row it has already
    /// changed, walks its rows as `walk` says, and sets `$n` (what it counts), `$full` (whether
    /// any of its selections came back with `$page` rows) and `$cursor` (an object: each
    /// cursor's last key).
    ///
    /// With a key, the answer recorded by the last page is `answer`, SurrealQL over `$total`;
    /// a recorded answer is turned back into a count by `recalled`.
    pub(super) async fn in_pages<R: DeserializeOwned>(
        &self,
        keyed: Option<&Keyed>,
        page: &str,
        answer: &str,
        recalled: impl Fn(R) -> u64,
        walk: Walk<'_>,
        vars: Vars,
    ) -> Result<u64, StoreError> {
        let Walk { cursors, before } = walk;
        let sql = format!(
            "BEGIN; LET $take = $page; LET $cursor = {{}}; {page} {progress} \
             RETURN {{ full: $full, total: $total, cursor: $cursor }}; COMMIT;",
            progress = progress(keyed, answer),
        );
        let vars = bind(vars, keyed).set("page", self.page_rows as i64);
        let start = cursors.iter().fold(vars, |vars, cursor| cursor.start(vars));
        // Without a key, what the committed pages counted, kept across a restart of the loop.
        let counted = AtomicU64::new(0);
        let committed = AtomicBool::new(false);
        let outcome = self
            .keyed(
                keyed,
                |answer: R| Ok(recalled(answer)),
                || async {
                    // Each run of the loop walks from the start: after exhausted retries, a
                    // page's rows may have changed under the cursors.
                    let mut vars = start.clone();
                    if let Some(before) = before {
                        let pinned: Option<String> = self
                            .retrying(|| async { take_returned(&mut self.query(before, vars.clone()).await?) })
                            .await?;
                        // It may have changed something: a failure from here on is an unknown outcome.
                        committed.store(true, Ordering::Relaxed);
                        vars = vars.set("before", pinned);
                    }
                    loop {
                        let page: Option<Page> = self
                            .retrying(|| async { take_returned(&mut self.query_emitting(&sql, vars.clone()).await?) })
                            .await?;
                        let page = page.ok_or_else(|| StoreError::Decode("a page returned nothing".into()))?;
                        committed.store(true, Ordering::Relaxed);
                        // Without a key each page counts only itself; with one, `total` is the
                        // whole change so far, carried in the key's record.
                        let so_far = match keyed {
                            Some(_) => page.total,
                            None => counted.fetch_add(page.total, Ordering::Relaxed) + page.total,
                        };
                        if !page.full {
                            return Ok(so_far);
                        }
                        for cursor in cursors {
                            vars = cursor.after(vars, &page.cursor)?;
                        }
                    }
                },
            )
            .await;
        // A failure after some pages committed must not tell the caller nothing changed.
        match outcome {
            Err(StoreError::Unreachable | StoreError::Retry | StoreError::Database(_) | StoreError::Decode(_))
                if committed.load(Ordering::Relaxed) =>
            {
                Err(StoreError::OutcomeUnknown)
            }
            other => other,
        }
    }
}

/// SurrealQL that sets `$total` from the page's `$n`; with a key, it also carries the count in
/// the key's record: as `partial` while more pages may follow, as the answer (`answer` over
/// `$total`) on the last. A record holding an answer means a call with the same key finished
/// first, and one with other params a call with the same key and other params got there first
/// (`authstore:recorded` for both: the caller then finds the record, and is answered from it
/// or refused for its params).
fn progress(keyed: Option<&Keyed>, answer: &str) -> String {
    if keyed.is_none() {
        return "LET $total = $n;".into();
    }
    format!(
        "LET $held = (SELECT partial, params FROM ONLY $idem); \
         IF $held != NONE AND ($held.partial = NONE OR $held.params != $idem_params) {{ \
            THROW 'authstore:recorded' }}; \
         LET $total = ($held.partial ?? 0) + $n; \
         UPSERT $idem SET params = $idem_params, \
            partial = IF $full {{ $total }} ELSE {{ NONE }}, \
            answer = IF $full {{ NONE }} ELSE {{ {answer} }}, \
            refused = NONE, secret_id = $idem_secret_id, expires_at = $idem_expires_at RETURN NONE;"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_a_small_share_of_the_write_buffer() {
        const MIB: u64 = 1 << 20;
        assert_eq!(page_rows(256 * MIB), PAGE);
        assert_eq!(page_rows(64 * MIB), PAGE);
        assert_eq!(page_rows(2 * MIB), 128);
        assert_eq!(page_rows(512 << 10), 32);
        assert_eq!(page_rows(0), 8);
    }
}
