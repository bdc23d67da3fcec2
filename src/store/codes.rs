//! Authorization codes.

use chrono::{DateTime, Duration, Utc};

use super::clients::CLIENT_STILL_REGISTERED;
use super::events::{BY_GRANT, EventKind, revoke_tokens};
use super::idempotency::{bind, bind_refusal, record_answer, recordable};
use super::{Emits, Store, StoreError, Vars, record};
use crate::domain::code::{self, CodeRecord, Consume};
use crate::domain::idempotency::{Call, Keyed};
use crate::domain::token::FamilyRecord;
use crate::domain::{Policy, session, validate};
use crate::error::{Error, InvalidClient, InvalidGrant, NotFound};
use crate::secret;
use crate::types::{CodeConsume, CodeIssue, ConsumedCode, IssuedCode, Session};

impl Store {
    /// `code.issue`. With `session_id`, the session is consumed in the same transaction
    /// (emitting `completed`) and fills in what the call omits.
    pub async fn code_issue(
        &self,
        p: CodeIssue,
        call: &Call,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Result<IssuedCode, StoreError> {
        if let Some(id) = &p.session_id {
            validate::id("session_id", id)?;
        }
        let keyed = call.keyed.as_ref();
        // A retry gets the recorded answer and the code minted again (it is never stored).
        let recalled = |answer: IssuedCode| Ok(IssuedCode { code: call.mint.secret(), ..answer });
        self.keyed(keyed, recalled, || async {
            let pending = match &p.session_id {
                Some(id) => {
                    let row = self.session_row(id).await?;
                    let rev = row.as_ref().map(|r| r.rev);
                    let incarnation = row.as_ref().and_then(|r| r.client_incarnation.clone());
                    let live = session::live(row.map(Session::from), now)?;
                    Some((live, rev.unwrap_or_default(), incarnation))
                }
                None => None,
            };
            let new = code::issue(p.clone(), pending.as_ref().map(|(s, _, _)| s), policy, now, &call.mint)?;
            let client =
                self.client_row(&new.client_id).await?.ok_or(Error::InvalidClient(InvalidClient::UnknownClient))?;
            if !validate::redirect_uri_registered(&new.redirect_uri, &client.redirect_uris) {
                return Err(Error::invalid("redirect_uri", "not registered for this client").into());
            }
            // A session put under an earlier registration of this client_id (deleted since)
            // is not this client's: nothing begun under the old one carries over.
            if let Some((session, _, incarnation)) = &pending {
                let same_registration = match incarnation {
                    Some(incarnation) => client.incarnation.as_ref() == Some(incarnation),
                    // A session stored before incarnations existed: one put before this
                    // registration began belongs to an earlier one.
                    None => session.created_at >= client.issued_at,
                };
                if !same_registration {
                    return Err(Error::NotFound(NotFound::Missing).into());
                }
            }
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
                Some((s, rev, _)) => (Some(record("session", &s.id)), *rev),
                None => (None, 0),
            };
            let issued = IssuedCode {
                code: new.code.clone(),
                grant_id: new.grant_id.clone(),
                expires_at: new.expires_at,
                client_id: new.client_id.clone(),
                redirect_uri: new.redirect_uri.clone(),
                state: new.state.clone(),
                scope: new.scope.clone(),
                resource: new.resource.clone(),
            };
            let vars = bind(Vars::new(), keyed)
                .set("idem_answer", recordable(&issued)?)
                .set("client", record("client", &new.client_id))
                .set("incarnation", client.incarnation)
                .set("client_updated_at", client.updated_at)
                .set("rid", record("code", &new.hash))
                .set("session_rid", session_rid)
                .set("session_rev", session_rev)
                .set("grant_id", new.grant_id.clone())
                .set("client_id", new.client_id)
                .set("user_id", new.user_id)
                .set("redirect_uri", new.redirect_uri)
                .set("code_challenge", new.code_challenge)
                .set("code_challenge_method", new.code_challenge_method)
                .set("scope", new.scope)
                .set("resource", new.resource)
                .set("data", new.data)
                .set("session_id", new.session_id)
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
        p: &CodeConsume,
        call: &Call,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Result<ConsumedCode, StoreError> {
        let key = secret::digest(&p.code);
        let keyed = call.keyed.as_ref();
        self.keyed(
            keyed,
            |consumed: ConsumedCode| Ok(consumed),
            || async {
                let stored: Option<CodeRecord> = self.row("code", &key).await?;
                let stored = stored.ok_or(Error::NotFound(NotFound::Missing))?;
                let decision = code::consume(&stored, p, now);
                if decision == Consume::Replay {
                    self.revoke_replayed_grant(&stored, policy, now, keyed).await?;
                    return Err(Error::InvalidGrant(InvalidGrant::Consumed).into());
                }
                // The gate: exactly one transaction can move consumed_at from NONE. The used code is
                // kept for the replay window, so a late replay still revokes the grant.
                const BURN: &str = "UPDATE ONLY $item.rid SET consumed_at = $item.now, expires_at = $item.keep_until \
                 WHERE consumed_at = NONE RETURN AFTER";
                let window =
                    Duration::seconds(i64::try_from(policy.code_replay_window_secs).unwrap_or(i64::MAX / 1000));
                let keep_until = stored.expires_at.max(now + window);
                let vars = Vars::new().set("rid", record("code", &key)).set("now", now).set("keep_until", keep_until);
                // With a key, what this call answers is recorded with the burn: the redeemed grant,
                // or the refusal that burned the code.
                let recorded = match &decision {
                    Consume::Redeem => Vars::new().set("idem_answer", recordable(&code::consumed(stored.clone()))?),
                    Consume::Burn(reason) => bind_refusal(Vars::new(), &Error::InvalidGrant(*reason)),
                    Consume::Replay => Vars::new(),
                };
                let burned: Option<CodeRecord> = self.write_keyed(BURN, vars, keyed, "$idem_answer", recorded).await?;
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
        policy: &Policy,
        now: DateTime<Utc>,
        keyed: Option<&Keyed>,
    ) -> Result<(), StoreError> {
        let family_rid = record("family", &code.grant_id);
        let family: Option<FamilyRecord> = self.row("family", &code.grant_id).await?;
        if family.is_some_and(|f| f.revoked_at.is_some()) {
            return Ok(());
        }
        let sql = format!(
            "BEGIN; \
             UPSERT ONLY $family SET grant_id = $grant_id, client_id = client_id ?? $client_id, \
                user_id = user_id ?? $user_id, created_at = created_at ?? $now, \
                expires_at = expires_at ?? $family_expires_at, revoked_at = $now, revoke_reason = $reason, \
                active_token = NONE, rev = (rev ?? 0) + 1 RETURN NONE; \
             {revoke} \
             {record} \
             COMMIT;",
            revoke = revoke_tokens(&BY_GRANT),
            record = record_answer(keyed, "NONE"),
        );
        let family_expires_at =
            now + Duration::seconds(i64::try_from(policy.token.max_secs).unwrap_or(i64::MAX / 1000));
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
