//! Registered clients and cached client ID metadata documents.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::bulk::{Cursor, Walk};
use super::events::{BY_CLIENT, EventKind, revoke_families_page, session_event};
use super::idempotency::{bind, record_answer, record_answer_if};
use super::{Emits, Store, StoreError, Vars, record, take_all, take_returned};
use crate::domain::client::{Authenticate, CachedDocument, ClientRecord, NewClient, Origin, Registration, Update};
use crate::domain::idempotency::Keyed;
use crate::error::{Error, NotFound};
use crate::types::ClientMetadata;

/// A `client` row as stored.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct ClientRow {
    client_id: String,
    origin: String,
    metadata: String,
    pub(super) redirect_uris: Vec<String>,
    secret_hash: Option<String>,
    pub(super) issued_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
    max_age_secs: Option<i64>,
    /// Random per registration (`None` for clients stored before it existed).
    pub(super) incarnation: Option<String>,
    /// When a `client.delete` began removing it (`client_delete`).
    #[serde(default)]
    deleting_at: Option<DateTime<Utc>>,
}

impl ClientRow {
    /// What the rules need to let a flow name this client.
    pub(super) fn registration(&self) -> Registration {
        Registration {
            redirect_uris: self.redirect_uris.clone(),
            incarnation: self.incarnation.clone(),
            issued_at: self.issued_at,
        }
    }

    fn origin(&self) -> Origin {
        if self.origin == "registered" { Origin::Registered } else { Origin::Document }
    }

    fn into_record(self) -> Result<ClientRecord, StoreError> {
        let metadata: ClientMetadata =
            serde_json::from_str(&self.metadata).map_err(|e| StoreError::Decode(format!("client metadata: {e}")))?;
        Ok(ClientRecord {
            origin: self.origin(),
            client_id: self.client_id,
            metadata,
            issued_at: self.issued_at,
            updated_at: self.updated_at,
            max_age_secs: self.max_age_secs,
            secret: None,
        })
    }
}

/// What `client.update` and `client.register` hand back: the client and, when one was minted,
/// the plaintext secret.
fn with_secret(mut client: ClientRecord, secret: Option<String>) -> ClientRecord {
    client.secret = secret;
    client
}

impl Store {
    /// The client, unless it is being deleted: once `client.delete` has frozen it, nothing can
    /// be issued for it and `client.get`, `client.list` and `client.authenticate` do not know it.
    pub(super) async fn client_row(&self, client_id: &str) -> Result<Option<ClientRow>, StoreError> {
        let row: Option<ClientRow> = self.row("client", client_id).await?;
        Ok(row.filter(|row| row.deleting_at.is_none()))
    }

    /// `client.register`: stores the registration `new`; only the digest of its secret.
    pub async fn client_register(
        &self,
        new: NewClient,
        keyed: Option<&Keyed>,
        now: DateTime<Utc>,
    ) -> Result<ClientRecord, StoreError> {
        let metadata = metadata_json(&new.meta.metadata)?;
        let sql = format!(
            "BEGIN; \
             LET $r = (CREATE ONLY $rid SET client_id = $client_id, origin = 'registered', metadata = $metadata, \
                redirect_uris = $redirect_uris, secret_hash = $secret_hash, issued_at = $now, updated_at = $now, \
                incarnation = $incarnation RETURN AFTER); \
             {record} \
             RETURN $r; \
             COMMIT;",
            record = record_answer(keyed, "$r"),
        );
        let vars = bind(Vars::new(), keyed)
            .set("incarnation", new.incarnation)
            .set("rid", record("client", &new.client_id))
            .set("client_id", new.client_id)
            .set("metadata", metadata)
            .set("redirect_uris", new.meta.metadata.redirect_uris)
            .set("secret_hash", new.secret_hash)
            .set("now", now);
        // A retry gets the recorded client and the same secret: the caller's, or minted again
        // from the key.
        let row: Option<ClientRow> = self.keyed_transaction::<ClientRow>(keyed, &sql, &vars, Emits::Nothing).await?;
        let row = row.ok_or_else(|| StoreError::Decode("CREATE returned nothing".into()))?;
        Ok(with_secret(row.into_record()?, new.secret))
    }

    /// `client.cache_document`: stores or replaces a client ID metadata document.
    pub async fn client_cache_document(
        &self,
        doc: CachedDocument,
        keyed: Option<&Keyed>,
        now: DateTime<Utc>,
    ) -> Result<ClientRecord, StoreError> {
        let CachedDocument { client_id, meta, max_age_secs, incarnation } = doc;
        let metadata = metadata_json(&meta.metadata)?;
        // A registered client keeps its registration: a document may not take over its id. Nor
        // may it take over a client being deleted: that delete would go on removing what the
        // new registration issues (`client_delete`).
        let sql = format!(
            "BEGIN; \
             LET $held = (SELECT origin, deleting_at FROM ONLY $rid); \
             IF $held.origin = 'registered' OR $held.deleting_at != NONE {{ THROW 'authstore:conflict' }}; \
             LET $r = (UPSERT ONLY $rid SET client_id = $client_id, origin = 'document', metadata = $metadata, \
                redirect_uris = $redirect_uris, secret_hash = NONE, issued_at = issued_at ?? $now, \
                updated_at = $now, max_age_secs = $max_age_secs, incarnation = incarnation ?? $incarnation \
                RETURN AFTER); \
             {record} \
             RETURN $r; \
             COMMIT;",
            record = record_answer(keyed, "$r"),
        );
        let vars = bind(Vars::new(), keyed)
            .set("rid", record("client", &client_id))
            .set("incarnation", incarnation)
            .set("client_id", client_id)
            .set("metadata", metadata)
            .set("redirect_uris", meta.metadata.redirect_uris)
            .set("max_age_secs", i64::try_from(max_age_secs).unwrap_or(i64::MAX))
            .set("now", now);
        let row: Option<ClientRow> = self.keyed_transaction::<ClientRow>(keyed, &sql, &vars, Emits::Nothing).await?;
        row.ok_or_else(|| StoreError::Decode("UPSERT returned nothing".into()))?.into_record()
    }

    /// `client.get`.
    pub async fn client_get(&self, client_id: &str) -> Result<ClientRecord, StoreError> {
        match self.client_row(client_id).await? {
            Some(row) => row.into_record(),
            None => Err(Error::NotFound(NotFound::Missing).into()),
        }
    }

    /// `client.list`: clients in id order after `after`, `limit` + 1 rows.
    pub async fn client_list(&self, after: Option<String>, limit: usize) -> Result<Vec<ClientRecord>, StoreError> {
        let sql = if after.is_some() {
            "SELECT * FROM client WHERE client_id > $after_key AND deleting_at = NONE ORDER BY client_id LIMIT $limit"
        } else {
            "SELECT * FROM client WHERE deleting_at = NONE ORDER BY client_id LIMIT $limit"
        };
        let vars = Vars::new().set("after_key", after).set("limit", limit as i64 + 1);
        let rows: Vec<ClientRow> = take_all(&mut self.query(sql, vars).await?, 0)?;
        rows.into_iter().map(ClientRow::into_record).collect()
    }

    /// `client.update`: replaces a registered client's metadata, with the secret `update`
    /// decides over the client as read.
    pub async fn client_update(
        &self,
        update: &Update,
        keyed: Option<&Keyed>,
        now: DateTime<Utc>,
    ) -> Result<ClientRecord, StoreError> {
        let metadata = metadata_json(&update.meta.metadata)?;
        let rid = record("client", &update.client_id);
        // A retry gets the recorded client and, if the first call minted a secret, that secret
        // again.
        let recalled = |row: ClientRow| {
            let again = update.minted_again(row.secret_hash.as_deref());
            Ok(with_secret(row.into_record()?, again))
        };
        self.keyed(keyed, recalled, || async {
            let current = self.client_row(&update.client_id).await?;
            let change = update.decide(current.as_ref().map(|c| (c.origin(), c.secret_hash.as_deref())))?;
            let seen_secret_hash = current.and_then(|c| c.secret_hash);
            // Conditional on the secret we read, so a concurrent rotation is not lost.
            let sql = format!(
                "BEGIN; \
                 LET $r = (UPDATE ONLY $rid SET metadata = $metadata, redirect_uris = $redirect_uris, \
                    secret_hash = $secret_hash, updated_at = $now \
                    WHERE secret_hash = $seen_secret_hash AND deleting_at = NONE RETURN AFTER); \
                 {record} \
                 RETURN $r; \
                 COMMIT;",
                record = record_answer_if(keyed, "$r != NONE", "$r"),
            );
            let vars = bind(Vars::new(), keyed)
                .set("rid", rid.clone())
                .set("metadata", metadata.clone())
                .set("redirect_uris", update.meta.metadata.redirect_uris.clone())
                .set("secret_hash", change.secret_hash)
                .set("seen_secret_hash", seen_secret_hash)
                .set("now", now);
            let row: Option<ClientRow> = take_returned(&mut self.query(&sql, vars).await?)?;
            let row = row.ok_or(StoreError::Retry)?;
            Ok(with_secret(row.into_record()?, change.new_secret))
        })
        .await
    }

    /// `client.authenticate`: the client, if `auth` accepts the secret digest stored with it.
    pub async fn client_authenticate(&self, auth: &Authenticate) -> Result<ClientRecord, StoreError> {
        let row = self.client_row(&auth.client_id).await?;
        auth.decide(row.as_ref().map(|r| r.secret_hash.as_deref()))?;
        match row {
            Some(row) => row.into_record(),
            None => Err(Error::NotFound(NotFound::Missing).into()),
        }
    }

    /// `client.delete`: removes the client with its sessions purged, its codes removed and its
    /// refresh tokens revoked, with events, in pages (`bulk.rs`).
    ///
    /// A transaction of its own first reads the client and marks it as being deleted
    /// (`deleting_at`, and a new `updated_at`), pinning the incarnation it found. From then on
    /// `client.get`, `client.list` and `client.authenticate` do not know it, and an issue in
    /// flight finds the client changed and runs again, into `unknown_client` (issuing writes
    /// the client record, see [`CLIENT_STILL_REGISTERED`]). So no family or code can appear
    /// behind the pages' cursors, and the last page removes the client with the last of its
    /// rows. The pages themselves do not write the client: a page takes far longer than an
    /// issue, and pages that did would lose every race to a busy client's issues. A call cut
    /// off part-way leaves the client being deleted; calling `client.delete` again finishes it.
    ///
    /// The pages act only while the client they pinned is being deleted (or gone): if it was
    /// deleted by another call and registered again meanwhile, the rest of the pages do
    /// nothing and the answer is `false`. A keyed retry whose earlier run committed pages does
    /// not freeze a client that is not being deleted: that is a new registration.
    pub async fn client_delete(
        &self,
        client_id: &str,
        keyed: Option<&Keyed>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let page = format!(
            "LET $client = (SELECT incarnation, deleting_at FROM ONLY $rid); \
             LET $take = IF $client != NONE AND ($client.incarnation != $before OR $client.deleting_at = NONE) \
                {{ 0 }} ELSE {{ $page }}; \
             LET $rows = (SELECT id, session_id FROM session WHERE client_id = $client_id \
                AND session_id > $after_session ORDER BY session_id LIMIT $take); \
             LET $gone = (DELETE $rows.id RETURN BEFORE); \
             FOR $s IN $gone {{ {purged} }}; \
             LET $cids = (SELECT VALUE id FROM code WHERE client_id = $client_id LIMIT $take); \
             DELETE $cids; \
             LET $cursor = {{ session: array::last($rows).session_id ?? $after_session }}; \
             {revoke} \
             LET $c = IF $full {{ [] }} ELSE {{ \
                (DELETE $rid WHERE incarnation = $before AND deleting_at != NONE RETURN BEFORE) }}; \
             LET $n = array::len($c);",
            purged = session_event(EventKind::Purged, "$s"),
            revoke = revoke_families_page(&BY_CLIENT, "array::len($rows) >= $page OR array::len($cids) >= $page"),
        );
        let vars = Vars::new()
            .set("rid", record("client", client_id))
            .set("client_id", client_id.to_string())
            .set("reason", "client_deleted")
            .set("now", now);
        let cursors = [&[Cursor::Text("session")], BY_CLIENT.cursors()].concat();
        // Freezes the client and returns the incarnation the pages remove (`$before`).
        const FREEZE: &str = "BEGIN; \
            LET $client = (SELECT incarnation, deleting_at FROM ONLY $rid); \
            LET $went_on = IF $idem = NONE { false } ELSE { (SELECT VALUE partial FROM ONLY $idem) != NONE }; \
            IF $client != NONE AND ($client.deleting_at != NONE OR !$went_on) { \
                UPDATE $rid SET deleting_at = deleting_at ?? $now, updated_at = $now RETURN NONE }; \
            RETURN $client.incarnation; \
            COMMIT;";
        let deleted = self
            .in_pages(
                keyed,
                &page,
                "$total > 0",
                |deleted: bool| u64::from(deleted),
                Walk { cursors: &cursors, before: Some(FREEZE) },
                vars,
            )
            .await?;
        Ok(deleted > 0)
    }
}

/// SurrealQL that writes the client `$client` if it is still the incarnation `$incarnation` that
/// was read, unchanged since (`$client_updated_at`: the redirect URIs checked are still its
/// own), or asks for a retry. Every transaction that issues a code or a token runs it, so
/// issuing and `client.delete` (or a re-registration) write the same record: under snapshot
/// isolation only writes conflict, and a delete that commits first makes the issue run again
/// and find the client gone. Issues for one client then serialize on its record, which is the
/// price of that guarantee.
pub(super) const CLIENT_STILL_REGISTERED: &str = "LET $issuing_client = (UPDATE $client SET last_issued_at = $now \
        WHERE incarnation = $incarnation AND updated_at = $client_updated_at AND deleting_at = NONE \
        RETURN VALUE client_id); \
     IF array::len($issuing_client) = 0 { THROW 'authstore:retry' };";

fn metadata_json(meta: &ClientMetadata) -> Result<String, StoreError> {
    serde_json::to_string(meta).map_err(|e| StoreError::Decode(e.to_string()))
}
