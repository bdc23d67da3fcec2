//! Authorization codes.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::clients::CLIENT_STILL_REGISTERED;
use super::events::{EventKind, mark_revoked, revoke_grant_tokens};
use super::idempotency::{bind, bind_refusal, record_answer, recordable};
use super::{Emits, Store, StoreError, Vars, record};
use crate::domain::code::{self, CodeRecord, Consume, Consumption, Issue};
use crate::domain::idempotency::Keyed;
use crate::domain::session::SessionRecord;
use crate::error::{Error, InvalidGrant, NotFound};
use crate::types::{ConsumedCode, IssuedCode};

/// A `code` row as stored.
#[derive(Debug, Clone, Deserialize)]
struct CodeRow {
    grant_id: String,
    client_id: String,
    user_id: String,
    redirect_uri: String,
    code_challenge: String,
    code_challenge_method: String,
    scope: Option<String>,
    resource: Option<String>,
    data: Option<String>,
    session_id: Option<String>,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    consumed_at: Option<DateTime<Utc>>,
}

/// A `code` row read outside the store, decoded as the store decodes it (the benchmark's raw
/// ceiling reads rows on its own connection).
pub fn decode_code(row: serde_json::Value) -> Result<CodeRecord, StoreError> {
    serde_json::from_value::<CodeRow>(row).map(CodeRecord::from).map_err(|e| StoreError::Decode(e.to_string()))
}

impl From<CodeRow> for CodeRecord {
    fn from(row: CodeRow) -> Self {
        CodeRecord {
            grant_id: row.grant_id,
            client_id: row.client_id,
            user_id: row.user_id,
            redirect_uri: row.redirect_uri,
            code_challenge: row.code_challenge,
            code_challenge_method: row.code_challenge_method,
            scope: row.scope,
            resource: row.resource,
            data: row.data,
            session_id: row.session_id,
            issued_at: row.issued_at,
            expires_at: row.expires_at,
            consumed_at: row.consumed_at,
        }
    }
}

/// `code.consume`'s burn: exactly one transaction can move `consumed_at` from NONE. Public so
/// the benchmark's raw ceiling (`authstore-tools bench --raw`) runs this very text.
pub const CODE_BURN: &str = "UPDATE ONLY $item.rid SET consumed_at = $item.now, expires_at = $item.keep_until WHERE consumed_at = NONE RETURN AFTER";

impl Store {
    /// `code.issue`. With `session_id`, the session is consumed in the same transaction
    /// (emitting `completed`) and fills in what the call omits.
    pub async fn code_issue(
        &self,
        issue: &Issue,
        keyed: Option<&Keyed>,
        now: DateTime<Utc>,
    ) -> Result<IssuedCode, StoreError> {
        // A retry gets the recorded answer and the code minted again (it is never stored).
        let recalled = |answer: IssuedCode| Ok(IssuedCode { code: issue.code().to_string(), ..answer });
        self.keyed(keyed, recalled, || async {
            let row = match issue.session_id() {
                Some(id) => self.session_row(id.as_str()).await?,
                None => None,
            };
            let new = issue.decide(row.clone().map(SessionRecord::from))?;
            // Decided over a live session: `pending` is the session as read, its revision and
            // the client incarnation stored with it.
            let pending = row.map(|r| (r.rev, r.client_incarnation.clone(), SessionRecord::from(r)));
            let client = self.client_row(new.client_id.as_str()).await?;
            issue.may_issue(
                &new,
                client.as_ref().map(|c| c.registration()).as_ref(),
                pending.as_ref().map(|(_, incarnation, s)| (s, incarnation.as_deref())),
            )?;
            let Some(client) = client else { return Err(StoreError::Retry) };
            self.deadlines.expect(new.expires_at);
            let (complete_session, emits) = if pending.is_some() {
                let sql = format!(
                    "LET $s = (DELETE ONLY $session_rid WHERE rev = $session_rev AND expires_at > $now RETURN BEFORE); \
                     IF $s = NONE {{ THROW 'authstore:retry' }}; \
                     CREATE outbox CONTENT {{ stream: 'session', kind: {completed}, at: $now, ts: time::now(), session_id: $s.session_id, \
                        client_id: $s.client_id, user_id: $user_id, expires_at: $s.expires_at }};",
                    completed = EventKind::Completed.sql(),
                );
                (sql, Emits::Events)
            } else {
                (String::new(), Emits::Nothing)
            };
            let sql = format!(
                "BEGIN; {CLIENT_STILL_REGISTERED} {complete_session} \
                 CREATE ONLY $rid SET grant_id = $grant_id, client_id = $client_id, user_id = $user_id, \
                    redirect_uri = $redirect_uri, code_challenge = $code_challenge, \
                    code_challenge_method = $code_challenge_method, scope = $scope, resource = $resource, \
                    data = $data, session_id = $session_id, issued_at = $now, expires_at = $expires_at \
                    RETURN NONE; \
                 {record} \
                 COMMIT;",
                record = record_answer(keyed, "$idem_answer"),
            );
            let (session_rid, session_rev) = match &pending {
                Some((rev, _, s)) => (Some(record("session", &s.id)), *rev),
                None => (None, 0),
            };
            let issued = IssuedCode {
                code: new.code.clone(),
                grant_id: new.grant_id.clone(),
                expires_at: new.expires_at,
                client_id: new.client_id.as_str().to_string(),
                redirect_uri: new.redirect_uri.as_str().to_string(),
                state: new.state.clone(),
                scope: new.scope.as_ref().map(|s| s.as_str().to_string()),
                resource: new.resource.clone(),
            };
            let vars = bind(Vars::new(), keyed)
                .set("idem_answer", recordable(&issued)?)
                .set("client", record("client", new.client_id.as_str()))
                .set("incarnation", client.incarnation)
                .set("client_updated_at", client.updated_at)
                .set("rid", record("code", &new.hash))
                .set("session_rid", session_rid)
                .set("session_rev", session_rev)
                .set("grant_id", new.grant_id.clone())
                .set("client_id", new.client_id.as_str().to_string())
                .set("user_id", new.user_id.as_str().to_string())
                .set("redirect_uri", new.redirect_uri.as_str().to_string())
                .set("code_challenge", new.code_challenge)
                .set("code_challenge_method", new.code_challenge_method)
                .set("scope", new.scope.as_ref().map(|s| s.as_str().to_string()))
                .set("resource", new.resource)
                .set("data", new.data)
                .set("session_id", new.session_id.as_ref().map(|s| s.as_str().to_string()))
                .set("expires_at", new.expires_at)
                .set("now", now);
            self.run(&sql, vars, emits).await?;
            Ok(issued)
        })
        .await
    }

    /// `code.consume`: at most one call ever succeeds for a code. Any failed attempt burns it;
    /// a replay revokes every refresh token of its grant.
    pub async fn code_consume(
        &self,
        consumption: &Consumption,
        keyed: Option<&Keyed>,
    ) -> Result<ConsumedCode, StoreError> {
        let key = &consumption.hash;
        let now = consumption.now;
        self.keyed(
            keyed,
            |consumed: ConsumedCode| Ok(consumed),
            || async {
                let stored: Option<CodeRow> = self.row("code", key).await?;
                let stored = CodeRecord::from(stored.ok_or(Error::NotFound(NotFound::Missing))?);
                let decision = consumption.decide(&stored);
                if decision == Consume::Replay {
                    self.revoke_replayed_grant(&stored, consumption.revoked_family_expires_at(), now, keyed).await?;
                    return Err(Error::InvalidGrant(InvalidGrant::Consumed).into());
                }
                // The gate: exactly one transaction can move consumed_at from NONE. The used code is
                // kept for the replay window, so a late replay still revokes the grant.
                let keep_until = consumption.keep_until(&stored);
                let vars = Vars::new().set("rid", record("code", key)).set("now", now).set("keep_until", keep_until);
                // With a key, what this call answers is recorded with the burn: the redeemed grant,
                // or the refusal that burned the code.
                let recorded = match &decision {
                    Consume::Redeem => Vars::new().set("idem_answer", recordable(&code::consumed(stored.clone()))?),
                    Consume::Burn(reason) => bind_refusal(Vars::new(), &Error::InvalidGrant(*reason)),
                    Consume::Replay => Vars::new(),
                };
                let burned: Option<CodeRow> =
                    self.write_keyed(CODE_BURN, vars, keyed, "$idem_answer", recorded).await?;
                if burned.is_none() {
                    // Someone else consumed (or purged) it first: decide again from a fresh read.
                    return Err(StoreError::Retry);
                }
                match decision {
                    Consume::Redeem => Ok(code::consumed(stored)),
                    Consume::Burn(reason) => Err(Error::InvalidGrant(reason).into()),
                    Consume::Replay => Err(Error::InvalidGrant(InvalidGrant::Consumed).into()),
                }
            },
        )
        .await
    }

    /// RFC 6749 §4.1.2: a code used twice revokes the tokens issued from it. The family record
    /// is created revoked if no token was minted yet, so none can be.
    async fn revoke_replayed_grant(
        &self,
        code: &CodeRecord,
        family_expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
        keyed: Option<&Keyed>,
    ) -> Result<(), StoreError> {
        let family_rid = record("family", &code.grant_id);
        let family = self.family_row(&code.grant_id).await?;
        if family.is_some_and(|f| f.revoked_at.is_some()) {
            return Ok(());
        }
        let sql = format!(
            "BEGIN; \
             LET $f = (UPSERT ONLY $family SET grant_id = $grant_id, client_id = client_id ?? $client_id, \
                user_id = user_id ?? $user_id, created_at = created_at ?? $now, \
                expires_at = expires_at ?? $family_expires_at, revoked_at = $now, revoke_reason = $reason, \
                active_token = NONE, rev = (rev ?? 0) + 1 RETURN AFTER); \
             {mark} \
             {revoke} \
             {record} \
             COMMIT;",
            mark = mark_revoked("$f"),
            revoke = revoke_grant_tokens(),
            record = record_answer(keyed, "NONE"),
        );
        let vars = bind_refusal(bind(Vars::new(), keyed), &Error::InvalidGrant(InvalidGrant::Consumed))
            .set("family", family_rid)
            .set("grant_id", code.grant_id.clone())
            .set("client_id", code.client_id.clone())
            .set("user_id", code.user_id.clone())
            .set("family_expires_at", family_expires_at)
            .set("reason", "code_replay")
            .set("now", now);
        self.query_emitting(&sql, vars).await?;
        Ok(())
    }
}
