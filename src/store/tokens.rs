//! Refresh tokens and their families.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::bulk::Walk;
use super::clients::CLIENT_STILL_REGISTERED;
use super::events::{
    BY_CLIENT, BY_CLIENT_USER, BY_USER, EventKind, Families, mark_revoked, revoke_families_page, revoke_grant,
    revoke_grant_tokens, token_event,
};
use super::idempotency::{bind, bind_refusal, record_answer, recordable};
use super::{Emits, Store, StoreError, Vars, record, take_all, take_one, take_returned};
use crate::domain::idempotency::Keyed;
use crate::domain::ids::{ClientId, GrantId, UserId};
use crate::domain::token::{self, FamilyRecord, Get, NewToken, RevokeScope, Rotate, Rotation, Status, TokenRecord};
use crate::error::{Error, InvalidClient, InvalidGrant};
use crate::types::IssuedToken;

/// A `token` row as stored.
#[derive(Debug, Clone, Deserialize)]
struct TokenRow {
    hash: String,
    token_id: String,
    grant_id: String,
    client_id: String,
    user_id: String,
    scope: Option<String>,
    resource: Option<String>,
    data: Option<String>,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    status: StatusRow,
    status_at: Option<DateTime<Utc>>,
    successor: Option<String>,
    rev: i64,
}

/// A token's `status` as stored.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StatusRow {
    Active,
    Rotated,
    Revoked,
}

impl From<TokenRow> for TokenRecord {
    fn from(row: TokenRow) -> Self {
        TokenRecord {
            hash: row.hash,
            token_id: row.token_id,
            grant_id: row.grant_id,
            client_id: row.client_id,
            user_id: row.user_id,
            scope: row.scope,
            resource: row.resource,
            data: row.data,
            issued_at: row.issued_at,
            expires_at: row.expires_at,
            last_used_at: row.last_used_at,
            status: match row.status {
                StatusRow::Active => Status::Active,
                StatusRow::Rotated => Status::Rotated,
                StatusRow::Revoked => Status::Revoked,
            },
            status_at: row.status_at,
            successor: row.successor,
            rev: row.rev,
        }
    }
}

/// A `family` row as stored.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct FamilyRow {
    grant_id: String,
    client_id: String,
    user_id: String,
    revoked_at: Option<DateTime<Utc>>,
    active_token: Option<String>,
    rev: i64,
}

impl From<FamilyRow> for FamilyRecord {
    fn from(row: FamilyRow) -> Self {
        FamilyRecord {
            grant_id: row.grant_id,
            client_id: row.client_id,
            user_id: row.user_id,
            revoked_at: row.revoked_at,
            active_token: row.active_token,
            rev: row.rev,
        }
    }
}

/// Which tokens `token.list` covers.
#[derive(Debug, Clone, Default)]
pub struct TokenFilter {
    pub user_id: Option<UserId>,
    pub client_id: Option<ClientId>,
    pub grant_id: Option<GrantId>,
}

/// The condition under which a family is still as it was read (`$family_rev`,
/// `$family_active`) and not revoked. The active token is compared as well as `rev`: a family
/// removed at its deadline and created again under the same grant starts again at `rev` 1, so a
/// decision taken on the old one's read would otherwise pass, and join (or rotate into) the new
/// family beside its own active token.
const FAMILY_AS_READ: &str = "rev = $family_rev AND active_token = $family_active AND revoked_at = NONE";

/// SurrealQL that creates the token described by the bound `$new_*` parameters.
const CREATE_NEW: &str = "CREATE ONLY $new SET hash = $new_hash, token_id = $new_token_id, grant_id = $grant_id, \
    client_id = $client_id, user_id = $user_id, scope = $scope, resource = $resource, data = $data, \
    issued_at = $now, expires_at = $expires_at, status = 'active', rev = 1 RETURN NONE;";

fn bind_new(vars: Vars, new: &NewToken) -> Vars {
    vars.set("new", record("token", &new.hash))
        .set("new_hash", new.hash.clone())
        .set("new_token_id", new.token_id.clone())
        .set("grant_id", new.grant_id.clone())
        .set("client_id", new.client_id.clone())
        .set("user_id", new.user_id.clone())
        .set("scope", new.scope.clone())
        .set("resource", new.resource.clone())
        .set("data", new.data.clone())
        .set("expires_at", new.expires_at)
}

fn issued(new: NewToken) -> IssuedToken {
    IssuedToken {
        token: new.token,
        token_id: new.token_id,
        grant_id: new.grant_id,
        expires_at: new.expires_at,
        client_id: new.client_id,
        user_id: new.user_id,
        scope: new.scope,
        resource: new.resource,
    }
}

impl Store {
    async fn token_row(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.row::<TokenRow>("token", hash).await?.map(TokenRecord::from))
    }

    pub(super) async fn family_row(&self, grant_id: &str) -> Result<Option<FamilyRecord>, StoreError> {
        Ok(self.row::<FamilyRow>("family", grant_id).await?.map(FamilyRecord::from))
    }

    /// `token.issue`: mints a token into a new or existing family. A family has one active
    /// token, so joining one supersedes (revokes) its current token.
    pub async fn token_issue(
        &self,
        new: NewToken,
        keyed: Option<&Keyed>,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, StoreError> {
        let answer = issued(new.clone());
        self.deadlines.expect(new.expires_at);
        // A retry gets the recorded answer and the token again: the caller's, or minted again
        // from the key (it is never stored).
        let recalled = |answer: IssuedToken| Ok(IssuedToken { token: new.token.clone(), ..answer });
        self.keyed(keyed, recalled, || async {
            let client =
                self.client_row(&new.client_id).await?.ok_or(Error::InvalidClient(InvalidClient::UnknownClient))?;
            let family = self.family_row(&new.grant_id).await?;
            let family_sql = match &family {
                Some(f) => {
                    token::may_join(f, &new.client_id, &new.user_id)?;
                    format!(
                        "LET $f = (UPDATE ONLY $family SET active_token = $new_hash, expires_at = $expires_at, rev += 1 \
                            WHERE {FAMILY_AS_READ} RETURN AFTER); \
                         IF $f = NONE {{ THROW 'authstore:retry' }}; \
                         LET $old = IF $previous != NONE {{ (UPDATE ONLY $previous SET status = 'revoked', status_at = $now, \
                            reason = 'superseded', rev += 1 WHERE status = 'active' RETURN AFTER) }}; \
                         IF $old != NONE {{ {event} }};",
                        event = token_event(EventKind::Revoked, "$old", "'superseded'"),
                    )
                }
                None => "IF record::exists($family) { THROW 'authstore:retry' }; \
                    CREATE ONLY $family SET grant_id = $grant_id, client_id = $client_id, user_id = $user_id, \
                        created_at = $now, expires_at = $expires_at, active_token = $new_hash, rev = 1 RETURN NONE;"
                    .to_string(),
            };
            let sql = format!(
                "BEGIN; {CLIENT_STILL_REGISTERED} {family_sql} {CREATE_NEW} {record} COMMIT;",
                record = record_answer(keyed, "$idem_answer")
            );
            // Joining a family may revoke its active token, which is reported.
            let emits = if family.is_some() { Emits::Events } else { Emits::Nothing };
            let previous = family.as_ref().and_then(|f| f.active_token.as_deref()).map(|h| record("token", h));
            let vars = bind_new(bind(Vars::new(), keyed), &new)
                .set("idem_answer", recordable(&answer)?)
                .set("client", record("client", &new.client_id))
                .set("incarnation", client.incarnation)
                .set("client_updated_at", client.updated_at)
                .set("family", record("family", &new.grant_id))
                .set("family_rev", family.as_ref().map(|f| f.rev).unwrap_or_default())
                .set("family_active", family.as_ref().and_then(|f| f.active_token.clone()))
                .set("previous", previous)
                .set("now", now);
            self.run(&sql, vars, emits).await?;
            Ok(answer.clone())
        })
        .await
    }

    /// `token.get`: what `get` decides over the stored token.
    pub async fn token_get(&self, get: &Get) -> Result<TokenRecord, StoreError> {
        Ok(get.decide(self.token_row(&get.hash).await?)?)
    }

    /// `token.rotate`: exactly one concurrent rotation of a token succeeds; reuse of a rotated
    /// token either reissues (inside the grace window) or revokes the family.
    pub async fn token_rotate(&self, rotate: &Rotate, keyed: Option<&Keyed>) -> Result<IssuedToken, StoreError> {
        // A retry gets the recorded answer and the new token minted again from the key.
        let recalled = |answer: IssuedToken| Ok(IssuedToken { token: rotate.successor_secret().to_string(), ..answer });
        self.keyed(keyed, recalled, || async {
            let (old, family) = self.token_and_family(&rotate.hash).await?;
            let decision = rotate.decide(old.as_ref(), family.as_ref());
            let (Some(old), Some(family)) = (old, family) else {
                return match decision {
                    Rotation::Refuse(e) => Err(e.into()),
                    _ => Err(Error::InvalidGrant(InvalidGrant::Revoked).into()),
                };
            };
            let (scope, expires_at, at, replace) = match decision {
                Rotation::Refuse(e) => return Err(e.into()),
                Rotation::ReuseDetected => {
                    if family.revoked_at.is_none() {
                        self.revoke_reused_family(&old, family.rev, rotate.reuse_time(&old), keyed).await?;
                    }
                    return Err(Error::InvalidGrant(InvalidGrant::ReuseDetected).into());
                }
                Rotation::Rotate { scope, expires_at, at } => (scope, expires_at, at, None),
                Rotation::Reissue { scope, expires_at, revoke, at } => (scope, expires_at, at, Some(revoke)),
            };
            self.deadlines.expect(expires_at);
            let new = rotate.successor(&old, scope, expires_at);
            let retire_old = match &replace {
                // The presented token is active: it becomes rotated.
                None => format!(
                    "LET $old = (UPDATE ONLY $old SET status = 'rotated', status_at = $now, last_used_at = $now, \
                        successor = $new_hash, rev += 1 WHERE rev = $old_rev AND status = 'active' RETURN AFTER); \
                     IF $old = NONE {{ THROW 'authstore:retry' }}; \
                     {event}",
                    event = token_event(EventKind::Rotated, "$old", "NONE"),
                ),
                // A rotated token inside the grace window: its unused successor is revoked and
                // replaced.
                Some(_) => format!(
                    "LET $old = (UPDATE ONLY $old SET last_used_at = $now, successor = $new_hash, rev += 1 \
                        WHERE rev = $old_rev RETURN AFTER); \
                     IF $old = NONE {{ THROW 'authstore:retry' }}; \
                     LET $prev = (UPDATE ONLY $previous SET status = 'revoked', status_at = $now, reason = 'superseded', \
                        rev += 1 WHERE status = 'active' RETURN AFTER); \
                     IF $prev = NONE {{ THROW 'authstore:retry' }}; \
                     {revoked} {rotated}",
                    revoked = token_event(EventKind::Revoked, "$prev", "'superseded'"),
                    rotated = token_event(EventKind::Rotated, "$old", "'grace'"),
                ),
            };
            let sql = format!(
                "BEGIN; {retire_old} \
                 LET $f = (UPDATE ONLY $family SET active_token = $new_hash, expires_at = $expires_at, rev += 1 \
                    WHERE {FAMILY_AS_READ} RETURN AFTER); \
                 IF $f = NONE {{ THROW 'authstore:retry' }}; \
                 {CREATE_NEW} \
                 {record} \
                 COMMIT;",
                record = record_answer(keyed, "$idem_answer"),
            );
            let answer = issued(new.clone());
            let vars = bind_new(bind(Vars::new(), keyed), &new)
                .set("idem_answer", recordable(&answer)?)
                .set("old", record("token", &old.hash))
                .set("old_rev", old.rev)
                .set("previous", replace.as_deref().map(|h| record("token", h)))
                .set("family", record("family", &old.grant_id))
                .set("family_rev", family.rev)
                .set("family_active", family.active_token.clone())
                .set("now", at);
            self.query_emitting(&sql, vars).await?;
            Ok(answer)
        })
        .await
    }

    /// A token and its family, read from one snapshot so that decisions never mix states.
    async fn token_and_family(&self, hash: &str) -> Result<(Option<TokenRecord>, Option<FamilyRecord>), StoreError> {
        const SQL: &str = "BEGIN; \
            LET $t = (SELECT * FROM ONLY $rid); \
            $t; \
            (SELECT * FROM ONLY type::record('family', $t.grant_id ?? '-')); \
            COMMIT;";
        let mut results = self.query(SQL, Vars::new().set("rid", record("token", hash))).await?;
        let token: Option<TokenRow> = take_one(&mut results, 2)?;
        let family: Option<FamilyRow> = take_one(&mut results, 3)?;
        Ok((token.map(TokenRecord::from), family.map(FamilyRecord::from)))
    }

    /// RFC 9700 §4.14.2: a rotated token presented again revokes its whole family. Conditional
    /// on the family being as it was read, so a decision taken on a stale read runs again.
    async fn revoke_reused_family(
        &self,
        reused: &TokenRecord,
        family_rev: i64,
        now: DateTime<Utc>,
        keyed: Option<&Keyed>,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "BEGIN; \
             LET $f = (UPDATE ONLY $family SET revoked_at = $now, revoke_reason = $reason, active_token = NONE, \
                rev += 1 WHERE rev = $family_rev AND revoked_at = NONE RETURN AFTER); \
             IF $f = NONE {{ THROW 'authstore:retry' }}; {mark} \
             LET $reused = (SELECT * FROM ONLY $old); {event} {revoke} {record} COMMIT;",
            mark = mark_revoked("$f"),
            event = token_event(EventKind::ReuseDetected, "$reused", "$reason"),
            revoke = revoke_grant_tokens(),
            record = record_answer(keyed, "NONE"),
        );
        let vars = bind_refusal(bind(Vars::new(), keyed), &Error::InvalidGrant(InvalidGrant::ReuseDetected))
            .set("family_rev", family_rev)
            .set("old", record("token", &reused.hash))
            .set("family", record("family", &reused.grant_id))
            .set("grant_id", reused.grant_id.clone())
            .set("reason", "reuse_detected")
            .set("now", now);
        self.query_emitting(&sql, vars).await?;
        Ok(())
    }

    /// `token.revoke`: revokes the named families and all their active tokens.
    pub async fn token_revoke(
        &self,
        scope: RevokeScope,
        keyed: Option<&Keyed>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        // A client's or a user's families may be any number: those are revoked in pages.
        let (families, vars): (&Families, Vars) = match scope {
            RevokeScope::Token(hash) => return self.revoke_one_family(OneFamily::OfToken(hash), keyed, now).await,
            RevokeScope::Grant(grant_id) => {
                return self.revoke_one_family(OneFamily::Grant(grant_id), keyed, now).await;
            }
            RevokeScope::Client { client_id, user_id: None } => (&BY_CLIENT, Vars::new().set("client_id", client_id)),
            RevokeScope::Client { client_id, user_id: Some(user_id) } => {
                (&BY_CLIENT_USER, Vars::new().set("client_id", client_id).set("user_id", user_id))
            }
            RevokeScope::User(user_id) => (&BY_USER, Vars::new().set("user_id", user_id)),
        };
        let vars = vars.set("reason", "requested").set("now", now);
        let page = revoke_families_page(families, "false");
        self.in_pages(
            keyed,
            &page,
            "$total",
            |revoked: u64| revoked,
            Walk { cursors: families.cursors(), before: None },
            vars,
        )
        .await
    }

    /// `token.revoke` of one family, in one transaction.
    async fn revoke_one_family(
        &self,
        family: OneFamily,
        keyed: Option<&Keyed>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let sql = format!(
            "BEGIN; {} {} RETURN array::len($revoked); COMMIT;",
            revoke_grant(),
            record_answer(keyed, "array::len($revoked)")
        );
        let revoked: Option<u64> = self
            .keyed(
                keyed,
                |revoked: u64| Ok(Some(revoked)),
                || async {
                    // The token is looked up inside the attempt, so that a keyed retry answers from
                    // its record even once the token has expired and gone.
                    let grant_id = match &family {
                        OneFamily::OfToken(hash) => match self.token_row(hash).await? {
                            // RFC 7009 §2.2: an unknown token is not an error (and changes nothing).
                            None => return Ok(Some(0)),
                            Some(t) => t.grant_id,
                        },
                        OneFamily::Grant(grant_id) => grant_id.clone(),
                    };
                    let vars = bind(grant_vars(&grant_id), keyed).set("reason", "requested").set("now", now);
                    take_returned(&mut self.query_emitting(&sql, vars).await?)
                },
            )
            .await?;
        Ok(revoked.unwrap_or(0))
    }

    /// `token.list`: active tokens in `token_id` order after `after`, `limit` + 1 rows.
    pub async fn token_list(
        &self,
        filter: &TokenFilter,
        after: Option<String>,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let mut conditions = vec!["status = 'active'", "expires_at > $now"];
        if filter.grant_id.is_some() {
            conditions.push("grant_id = $grant_id");
        }
        if filter.client_id.is_some() {
            conditions.push("client_id = $client_id");
        }
        if filter.user_id.is_some() {
            conditions.push("user_id = $user_id");
        }
        if after.is_some() {
            conditions.push("token_id > $after_key");
        }
        let sql = format!("SELECT * FROM token WHERE {} ORDER BY token_id LIMIT $limit", conditions.join(" AND "));
        let vars = Vars::new()
            .set("grant_id", filter.grant_id.as_ref().map(|g| g.as_str().to_string()))
            .set("client_id", filter.client_id.as_ref().map(|c| c.as_str().to_string()))
            .set("user_id", filter.user_id.as_ref().map(|u| u.as_str().to_string()))
            .set("after_key", after)
            .set("limit", limit as i64 + 1)
            .set("now", now);
        let rows: Vec<TokenRow> = take_all(&mut self.query(&sql, vars).await?, 0)?;
        Ok(rows.into_iter().map(TokenRecord::from).collect())
    }
}

/// The family a `token.revoke` of one token or grant names.
enum OneFamily {
    /// The family of the token with this digest.
    OfToken(String),
    Grant(String),
}

fn grant_vars(grant_id: &str) -> Vars {
    Vars::new().set("family", record("family", grant_id)).set("grant_id", grant_id.to_string())
}
