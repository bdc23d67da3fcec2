//! Pending authorization sessions.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::bulk::{Cursor, Walk};
use super::events::{EventKind, session_event};
use super::idempotency::{bind, record_answer, record_answer_if};
use super::{Emits, Store, StoreError, Vars, record, take_all};
use crate::domain::idempotency::Keyed;
use crate::domain::ids::{ClientId, SessionId, UserId};
use crate::domain::session::{self, Get, NewSession, SessionChange, SessionRecord};
use crate::error::{Error, NotFound};

/// A `session` row as stored.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct SessionRow {
    session_id: String,
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    scope: Option<String>,
    resource: Option<String>,
    user_id: Option<String>,
    data: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    pub(super) rev: i64,
    /// The client's incarnation when the session was put (`None` for older rows).
    pub(super) client_incarnation: Option<String>,
}

impl From<SessionRow> for SessionRecord {
    fn from(row: SessionRow) -> Self {
        SessionRecord {
            id: row.session_id,
            client_id: row.client_id,
            redirect_uri: row.redirect_uri,
            state: row.state,
            code_challenge: row.code_challenge,
            code_challenge_method: row.code_challenge_method,
            scope: row.scope,
            resource: row.resource,
            user_id: row.user_id,
            data: row.data,
            created_at: row.created_at,
            updated_at: row.updated_at,
            expires_at: row.expires_at,
        }
    }
}

/// Which sessions a list or purge covers.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub client_id: Option<ClientId>,
    pub user_id: Option<UserId>,
}

impl SessionFilter {
    fn conditions(&self) -> Vec<&'static str> {
        let mut conditions = Vec::new();
        if self.client_id.is_some() {
            conditions.push("client_id = $client_id");
        }
        if self.user_id.is_some() {
            conditions.push("user_id = $user_id");
        }
        conditions
    }

    fn bind(&self, vars: Vars) -> Vars {
        vars.set("client_id", self.client_id.as_ref().map(|c| c.as_str().to_string()))
            .set("user_id", self.user_id.as_ref().map(|u| u.as_str().to_string()))
    }
}

/// `session.put`'s single statement, run through group commit with one `$item` per call.
/// Public so the benchmark's raw ceiling (`authstore-tools bench --raw`) runs this very text.
pub const SESSION_PUT: &str = "UPSERT ONLY $item.rid SET session_id = $item.id, client_id = $item.client_id, \
    redirect_uri = $item.redirect_uri, state = $item.state, code_challenge = $item.code_challenge, \
    code_challenge_method = $item.code_challenge_method, scope = $item.scope, resource = $item.resource, \
    user_id = $item.user_id, data = $item.data, created_at = created_at ?? $item.now, updated_at = $item.now, \
    expires_at = $item.expires_at, rev = (rev ?? 0) + 1, \
    client_incarnation = $item.client_incarnation RETURN AFTER";

impl Store {
    /// `session.put`: creates or replaces a session for a registered client.
    pub async fn session_put(
        &self,
        s: NewSession,
        keyed: Option<&Keyed>,
        now: DateTime<Utc>,
    ) -> Result<SessionRecord, StoreError> {
        self.deadlines.expect(s.expires_at);
        let vars = Vars::new()
            .set("rid", record("session", s.id.as_str()))
            .set("id", s.id.as_str().to_string())
            .set("client_id", s.client_id.as_str().to_string())
            .set("redirect_uri", s.redirect_uri.as_str().to_string())
            .set("state", s.state.clone())
            .set("code_challenge", s.code_challenge.clone())
            .set("code_challenge_method", s.code_challenge_method.clone())
            .set("scope", s.scope.as_ref().map(|v| v.as_str().to_string()))
            .set("resource", s.resource.clone())
            .set("user_id", s.user_id.as_ref().map(|v| v.as_str().to_string()))
            .set("data", s.data.clone())
            .set("expires_at", s.expires_at)
            .set("now", now);
        let row: Option<SessionRow> = self
            .keyed(
                keyed,
                |row: SessionRow| Ok(Some(row)),
                || async {
                    // The client is read before the upsert, outside its transaction: a client
                    // deleted in between can leave a session behind, which expires on its own and
                    // cannot mint a code: code.issue conflicts with client.delete, and refuses a
                    // session stamped with another incarnation of its client (a client
                    // re-registered under the same id). Read inside the attempt, so that a keyed
                    // retry answers from its record even if the client changed since.
                    let client = self.client_row(s.client_id.as_str()).await?;
                    session::may_put(&s, client.as_ref().map(|c| c.registration()).as_ref())?;
                    let vars = vars.clone().set("client_incarnation", client.and_then(|c| c.incarnation));
                    self.write_keyed(SESSION_PUT, vars, keyed, "$r", Vars::new()).await
                },
            )
            .await?;
        row.map(SessionRecord::from).ok_or_else(|| StoreError::Decode("UPSERT returned nothing".into()))
    }

    /// The stored session row, live or not.
    pub(super) async fn session_row(&self, id: &str) -> Result<Option<SessionRow>, StoreError> {
        self.row("session", id).await
    }

    /// `session.get`: the session as `get` decides over the stored one.
    pub async fn session_get(&self, get: &Get) -> Result<SessionRecord, StoreError> {
        Ok(get.decide(self.session_row(get.id.as_str()).await?.map(SessionRecord::from))?)
    }

    /// `session.update`: changes the given fields of a live session.
    pub async fn session_update(
        &self,
        c: SessionChange,
        keyed: Option<&Keyed>,
        now: DateTime<Utc>,
    ) -> Result<SessionRecord, StoreError> {
        let sql = format!(
            "BEGIN; \
             LET $r = (UPDATE ONLY $rid SET user_id = $user_id ?? user_id, scope = $scope ?? scope, \
                data = $data ?? data, expires_at = $expires_at ?? expires_at, updated_at = $now, rev += 1 \
                WHERE expires_at > $now RETURN AFTER); \
             {record} \
             RETURN $r; \
             COMMIT;",
            record = record_answer_if(keyed, "$r != NONE", "$r"),
        );
        if let Some(at) = c.expires_at {
            self.deadlines.expect(at);
        }
        let vars = bind(Vars::new(), keyed)
            .set("rid", record("session", c.id.as_str()))
            .set("user_id", c.user_id.as_ref().map(|v| v.as_str().to_string()))
            .set("scope", c.scope.as_ref().map(|v| v.as_str().to_string()))
            .set("data", c.data)
            .set("expires_at", c.expires_at)
            .set("now", now);
        let updated: Option<SessionRow> =
            self.keyed_transaction::<SessionRow>(keyed, &sql, &vars, Emits::Nothing).await?;
        match updated {
            Some(row) => Ok(row.into()),
            None => match self.session_row(c.id.as_str()).await? {
                Some(_) => Err(Error::NotFound(NotFound::Expired).into()),
                None => Err(Error::NotFound(NotFound::Missing).into()),
            },
        }
    }

    /// `session.delete`: removes a session; `true` (and a `deleted` event) if it was live. An
    /// expired one is removed with an `expired` event (see [`session_event`]) and reported as
    /// not deleted.
    pub async fn session_delete(
        &self,
        id: &SessionId,
        keyed: Option<&Keyed>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "BEGIN; \
             LET $s = (DELETE ONLY $rid RETURN BEFORE); \
             IF $s != NONE {{ {removed} }}; \
             LET $deleted = $s != NONE AND $s.expires_at > $now; \
             {record} \
             RETURN $deleted; \
             COMMIT;",
            removed = session_event(EventKind::Deleted, "$s"),
            record = record_answer(keyed, "$deleted"),
        );
        let vars = bind(Vars::new(), keyed).set("rid", record("session", id.as_str())).set("now", now);
        let deleted: Option<bool> = self.keyed_transaction::<bool>(keyed, &sql, &vars, Emits::Events).await?;
        Ok(deleted.unwrap_or(false))
    }

    /// `session.list`: live sessions in id order, after `after`, at most `limit` (+1 to detect a
    /// next page).
    pub async fn session_list(
        &self,
        filter: &SessionFilter,
        after: Option<String>,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let mut conditions = vec!["expires_at > $now"];
        conditions.extend(filter.conditions());
        if after.is_some() {
            conditions.push("session_id > $after_key");
        }
        let sql = format!("SELECT * FROM session WHERE {} ORDER BY session_id LIMIT $limit", conditions.join(" AND "));
        let vars = filter.bind(Vars::new()).set("after_key", after).set("limit", limit as i64 + 1).set("now", now);
        let rows: Vec<SessionRow> = take_all(&mut self.query(&sql, vars).await?, 0)?;
        Ok(rows.into_iter().map(SessionRecord::from).collect())
    }

    /// `session.purge`: removes matching sessions (with no filter, every expired one), one
    /// event each: `purged` for a live session, `expired` for one already past its deadline.
    /// Runs in pages (`bulk.rs`).
    pub async fn session_purge(
        &self,
        filter: &SessionFilter,
        keyed: Option<&Keyed>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        // Walked by the key of the index the filter selects by, so that no page walks the
        // tombstones of the sessions earlier pages removed.
        let (walk, key, cursor) = match (&filter.client_id, &filter.user_id) {
            (None, None) => {
                ("expires_at <= $now AND expires_at >= $after_expires", "expires_at", Cursor::Time("expires"))
            }
            _ => ("session_id > $after_session", "session_id", Cursor::Text("session")),
        };
        let mut conditions = filter.conditions();
        conditions.push(walk);
        let page = format!(
            "LET $rows = (SELECT id, {key} FROM session WHERE {conditions} ORDER BY {key} LIMIT $take); \
             LET $gone = (DELETE $rows.id RETURN BEFORE); \
             FOR $s IN $gone {{ {event} }}; \
             LET $n = array::len($gone); \
             LET $full = array::len($rows) >= $page; \
             LET $cursor = {{ {name}: array::last($rows).{key} ?? ${var} }};",
            conditions = conditions.join(" AND "),
            event = session_event(EventKind::Purged, "$s"),
            name = cursor.name(),
            var = cursor.var(),
        );
        let vars = filter.bind(Vars::new()).set("now", now);
        self.in_pages(keyed, &page, "$total", |purged: u64| purged, Walk { cursors: &[cursor], before: None }, vars)
            .await
    }
}
