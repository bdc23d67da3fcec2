//! Lifecycle events: their kinds, the SurrealQL fragments that write them, and the revocation
//! that emits most of them. The fragments are spliced into the transaction of the change they
//! report and write to the `outbox`, from which the sequencer (`event_log.rs`) assigns cursors;
//! a query that splices one says so (`Store::query_emitting`). They reference only bound
//! parameters (`$now`, `$reason`, ...), never caller text.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::bulk::Cursor;

/// What happened to a session or a token. Spelled in snake case in the database and on the
/// wire (`expired`, `reuse_detected`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A session or a token reached its deadline.
    Expired,
    /// A live session removed by `session.purge` or `client.delete`.
    Purged,
    /// A live session removed by `session.delete`.
    Deleted,
    /// A session turned into a code by `code.issue`.
    Completed,
    /// A token replaced by its successor.
    Rotated,
    /// A token revoked (on request, superseded, or with its family).
    Revoked,
    /// A rotated token presented again: its family is revoked.
    ReuseDetected,
}

impl EventKind {
    /// The kinds of the `session` stream.
    pub const SESSION: &'static [EventKind] =
        &[EventKind::Expired, EventKind::Purged, EventKind::Deleted, EventKind::Completed];
    /// The kinds of the `token` stream.
    pub const TOKEN: &'static [EventKind] =
        &[EventKind::Rotated, EventKind::Revoked, EventKind::ReuseDetected, EventKind::Expired];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Expired => "expired",
            EventKind::Purged => "purged",
            EventKind::Deleted => "deleted",
            EventKind::Completed => "completed",
            EventKind::Rotated => "rotated",
            EventKind::Revoked => "revoked",
            EventKind::ReuseDetected => "reuse_detected",
        }
    }

    /// The kind as a SurrealQL string literal.
    pub(super) fn sql(self) -> String {
        format!("'{}'", self.as_str())
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "expired" => EventKind::Expired,
            "purged" => EventKind::Purged,
            "deleted" => EventKind::Deleted,
            "completed" => EventKind::Completed,
            "rotated" => EventKind::Rotated,
            "revoked" => EventKind::Revoked,
            "reuse_detected" => EventKind::ReuseDetected,
            _ => return Err(()),
        })
    }
}

/// Emits a session event of kind `kind` for the session row bound to `var` (e.g. `$s`).
///
/// A session has one end, reported once. One already past its deadline at `$now` ended by
/// expiring, so removing it (`session.delete`, `session.purge`, `client.delete`) reports
/// `expired`, exactly as the scheduler would have; `deleted` and `purged` report the end of a
/// live session only.
pub(super) fn session_event(kind: EventKind, var: &str) -> String {
    let kind = match kind {
        EventKind::Deleted | EventKind::Purged => {
            format!(
                "(IF {var}.expires_at <= $now {{ {expired} }} ELSE {{ {kind} }})",
                expired = EventKind::Expired.sql(),
                kind = kind.sql()
            )
        }
        other => other.sql(),
    };
    format!(
        "CREATE outbox CONTENT {{ stream: 'session', kind: {kind}, at: $now, ts: time::now(), session_id: {var}.session_id, \
         client_id: {var}.client_id, user_id: {var}.user_id, expires_at: {var}.expires_at }};"
    )
}

/// Emits a token event of kind `kind` for the token row bound to `var`, with `reason` (a
/// SurrealQL expression).
pub(super) fn token_event(kind: EventKind, var: &str, reason: &str) -> String {
    let kind = kind.sql();
    format!(
        "CREATE outbox CONTENT {{ stream: 'token', kind: {kind}, at: $now, ts: time::now(), token_id: {var}.token_id, \
         grant_id: {var}.grant_id, client_id: {var}.client_id, user_id: {var}.user_id, reason: {reason} }};"
    )
}

/// Which families a revocation in pages covers, as SurrealQL over bound parameters.
pub(super) struct Families {
    /// The condition on the family records.
    pub families: &'static str,
    /// The indexed field after the scope's own that pages walk the families by (a [`Cursor`]
    /// named `family`), where there is one. Ties are walked again: a page goes on from the
    /// last key it took, with `>=`, so a client's families are walked user by user and only
    /// one user's revoked families are ever passed twice.
    pub walk: Option<&'static str>,
}

impl Families {
    /// The cursors a page of this scope walks by ([`revoke_families_page`]).
    pub(super) fn cursors(&self) -> &'static [Cursor] {
        match self.walk {
            Some(_) => &[Cursor::Text("family")],
            None => &[],
        }
    }
}

pub(super) const BY_CLIENT: Families = Families { families: "client_id = $client_id", walk: Some("user_id") };
pub(super) const BY_CLIENT_USER: Families =
    Families { families: "client_id = $client_id AND user_id = $user_id", walk: None };
pub(super) const BY_USER: Families = Families { families: "user_id = $user_id", walk: None };

/// Revokes the family `$family` (of grant `$grant_id`) and every active token in it, emitting
/// one `revoked` event per token with `$reason`. Leaves the revoked tokens in `$revoked`.
///
/// Writing the family record is what makes this safe against a concurrent rotation: both
/// transactions write the family, so one of them conflicts and runs again.
pub(super) fn revoke_grant() -> String {
    format!(
        "LET $revoked_families = (UPDATE $family SET revoked_at = $now, revoke_reason = $reason, \
            active_token = NONE, rev += 1 WHERE revoked_at = NONE RETURN AFTER); \
         FOR $f IN $revoked_families {{ {mark} }}; {tokens}",
        mark = mark_revoked("$f"),
        tokens = revoke_grant_tokens(),
    )
}

/// One page (`bulk.rs`) of a revocation of families for a scope that may cover any number of
/// families: at most `$take` of them, each with its active tokens, found through `token_grant`.
/// Sets `$full` when it found `$page` families or `more` (SurrealQL, another selection of the
/// same page) holds, `$n` to the tokens revoked, and `$cursor.family` where the scope has a
/// [`Families::walk`].
///
/// Nothing else of the scope is swept: a family that is not revoked holds the only active
/// tokens it has, and revoking a family revokes them in the same transaction (the same
/// invariant the live-token count rests on, `stats.rs`). A sweep of the scope's tokens by
/// `token_client` reads every token row the client ever had (15 s at a million).
pub(super) fn revoke_families_page(scope: &Families, more: &str) -> String {
    let (walk, order, cursor) = match scope.walk {
        Some(key) => (
            format!("AND {key} >= $after_family"),
            format!("ORDER BY {key}"),
            format!("LET $cursor = object::extend($cursor, {{ family: array::last($fams).{key} ?? $after_family }});"),
        ),
        None => (String::new(), String::new(), String::new()),
    };
    format!(
        "LET $fams = (SELECT id, {select} FROM family WHERE {families} AND revoked_at = NONE {walk} {order} LIMIT $take); \
         LET $revoked_families = (UPDATE $fams.id SET revoked_at = $now, revoke_reason = $reason, \
            active_token = NONE, rev += 1 WHERE revoked_at = NONE RETURN AFTER); \
         FOR $f IN $revoked_families {{ {mark} }}; \
         LET $revoked = array::flatten($revoked_families.map(|$f| (UPDATE token SET {revoke} \
            WHERE grant_id = $f.grant_id AND status = 'active' RETURN AFTER))); \
         FOR $t IN $revoked {{ {event} }}; \
         LET $full = {more} OR array::len($fams) >= $page; \
         {cursor} \
         LET $n = array::len($revoked);",
        select = scope.walk.unwrap_or("grant_id"),
        families = scope.families,
        mark = mark_revoked("$f"),
        revoke = REVOKE_TOKEN,
        event = token_event(EventKind::Revoked, "$t", "$reason"),
    )
}

/// The fields a token revocation sets.
const REVOKE_TOKEN: &str = "status = 'revoked', status_at = $now, reason = $reason, rev += 1";

/// Records that the family bound to `var` (as it is after its revocation) is revoked, under its
/// deadline: what the live-token count subtracts (`store/stats.rs`). Every statement that sets a
/// family's `revoked_at` runs this in the same transaction.
pub(super) fn mark_revoked(var: &str) -> String {
    format!("UPSERT type::record('family_revoked', {var}.grant_id) SET expires_at = {var}.expires_at RETURN NONE;")
}

/// Revokes the active tokens of grant `$grant_id` with one `revoked` event each; the family
/// record is the caller's to write. Leaves the revoked tokens in `$revoked`.
pub(super) fn revoke_grant_tokens() -> String {
    format!(
        "LET $revoked = (UPDATE token SET {revoke} WHERE grant_id = $grant_id AND status = 'active' RETURN AFTER); \
         FOR $t IN $revoked {{ {event} }};",
        revoke = REVOKE_TOKEN,
        event = token_event(EventKind::Revoked, "$t", "$reason"),
    )
}

#[cfg(test)]
mod tests {
    use super::EventKind;

    #[test]
    fn kinds_read_back_as_they_are_written() {
        for kind in EventKind::SESSION.iter().chain(EventKind::TOKEN) {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(*kind));
            assert_eq!(serde_json::to_value(kind).ok(), Some(serde_json::Value::from(kind.as_str())));
        }
        assert!("reuse-detected".parse::<EventKind>().is_err());
    }
}
