//! SurrealQL fragments that write lifecycle events, and the revocation that emits most of
//! them. They are spliced into the transaction of the change they report and write to the
//! `outbox`, from which the sequencer (`feed.rs`) assigns cursors. They reference only bound
//! parameters (`$now`, `$reason`, ...), never caller text.

/// Emits a session event of kind `kind` for the session row bound to `var` (e.g. `$s`).
///
/// A session has one end, reported once. One already past its deadline at `$now` ended by
/// expiring, so removing it (`session.delete`, `session.purge`, `client.delete`) reports
/// `expired`, exactly as the scheduler would have; `deleted` and `purged` report the end of a
/// live session only.
pub(super) fn session_event(kind: &str, var: &str) -> String {
    let kind = match kind {
        "deleted" | "purged" => format!("(IF {var}.expires_at <= $now {{ 'expired' }} ELSE {{ '{kind}' }})"),
        other => format!("'{other}'"),
    };
    format!(
        "CREATE outbox CONTENT {{ stream: 'session', kind: {kind}, at: $now, ts: time::now(), session_id: {var}.session_id, \
         client_id: {var}.client_id, user_id: {var}.user_id, expires_at: {var}.expires_at }};"
    )
}

/// Emits a token event of kind `kind` for the token row bound to `var`, with `reason` (a
/// SurrealQL expression).
pub(super) fn token_event(kind: &str, var: &str, reason: &str) -> String {
    format!(
        "CREATE outbox CONTENT {{ stream: 'token', kind: '{kind}', at: $now, ts: time::now(), token_id: {var}.token_id, \
         grant_id: {var}.grant_id, client_id: {var}.client_id, user_id: {var}.user_id, reason: {reason} }};"
    )
}

/// Which families a revocation covers, as SurrealQL over bound parameters.
pub(super) struct Families {
    /// The `UPDATE` target for the family records.
    pub target: &'static str,
    /// The condition on the family records.
    pub families: &'static str,
    /// The condition selecting their tokens.
    pub tokens: &'static str,
}

pub(super) const BY_GRANT: Families = Families { target: "$family", families: "true", tokens: "grant_id = $grant_id" };
pub(super) const BY_CLIENT: Families =
    Families { target: "family", families: "client_id = $client_id", tokens: "client_id = $client_id" };
pub(super) const BY_CLIENT_USER: Families = Families {
    target: "family",
    families: "client_id = $client_id AND user_id = $user_id",
    tokens: "client_id = $client_id AND user_id = $user_id",
};
pub(super) const BY_USER: Families =
    Families { target: "family", families: "user_id = $user_id", tokens: "user_id = $user_id" };

/// Revokes the families selected by `scope` and every active token in them, emitting one
/// `revoked` event per token with `$reason`. Leaves the revoked tokens in `$revoked`.
///
/// Writing the family records is what makes this safe against a concurrent rotation: both
/// transactions write the family, so one of them conflicts and runs again.
pub(super) fn revoke_families(scope: &Families) -> String {
    format!(
        "UPDATE {target} SET revoked_at = $now, revoke_reason = $reason, active_token = NONE, rev += 1 \
            WHERE {families} AND revoked_at = NONE; {tokens}",
        target = scope.target,
        families = scope.families,
        tokens = revoke_tokens(scope),
    )
}

/// Revokes the active tokens selected by `scope` with one `revoked` event each; the family
/// records are the caller's to write. Leaves the revoked tokens in `$revoked`.
pub(super) fn revoke_tokens(scope: &Families) -> String {
    format!(
        "LET $revoked = (UPDATE token SET status = 'revoked', status_at = $now, reason = $reason, rev += 1 \
            WHERE {tokens} AND status = 'active' RETURN AFTER); \
         FOR $t IN $revoked {{ {event} }};",
        tokens = scope.tokens,
        event = token_event("revoked", "$t", "$reason"),
    )
}
