//! First answers recorded under idempotency keys (`domain::idempotency`).
//!
//! A call with a key writes its answer to `idem:<digest of method and key>` in the same
//! transaction as the change it makes, so the answer exists exactly when the change does.
//! Before each attempt the record is looked up: found, the attempt is skipped and the recorded
//! answer returned (or the recorded refusal, for a failure that changed state, such as a code
//! burned by a wrong verifier). Two calls with one key race on that one record: the second to
//! commit finds it taken, abandons its transaction and returns the first one's answer.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{Emits, MAX_ATTEMPTS, Store, StoreError, Vars, backoff, record, take_returned, thrown};
use crate::domain::idempotency::{self, Keyed};
use crate::error::Error;

/// The database record holding the server secret that keyed mints derive from.
const SERVER_SECRET: &str = "idempotency";

/// SurrealQL that records `answer` (an expression; `$idem_refused` holds a refusal instead) under
/// the call's key `$idem`; nothing at all for a call without a key, so unkeyed calls pay
/// nothing. A record already there means a call with the same key got there first: the
/// transaction fails with `authstore:recorded`.
pub(super) fn record_answer(keyed: Option<&Keyed>, answer: &str) -> String {
    if keyed.is_none() {
        return String::new();
    }
    format!(
        "IF record::exists($idem) {{ THROW 'authstore:recorded' }}; \
         CREATE $idem SET params = $idem_params, answer = {answer}, refused = $idem_refused, \
            secret_id = $idem_secret_id, expires_at = $idem_expires_at RETURN NONE;"
    )
}

/// [`record_answer`] only when `condition` (SurrealQL) holds: a conditional write that matched
/// nothing changed nothing, so there is nothing to record.
pub(super) fn record_answer_if(keyed: Option<&Keyed>, condition: &str, answer: &str) -> String {
    if keyed.is_none() {
        return String::new();
    }
    format!("IF {condition} {{ {} }};", record_answer(keyed, answer))
}

/// Binds what [`record_answer`] needs (nothing without a key): the key's record, the params digest,
/// the server secret's name and how long the record is kept.
pub(super) fn bind(vars: Vars, keyed: Option<&Keyed>) -> Vars {
    let Some(k) = keyed else {
        return vars;
    };
    vars.set("idem", record("idem", &k.record))
        .set("idem_params", k.params.clone())
        .set("idem_secret_id", k.secret_id.clone())
        .set("idem_expires_at", k.expires_at)
}

/// Binds a refusal to record (`invalid_grant:consumed`...): the call failed, but changed state.
pub(super) fn bind_refusal(vars: Vars, refusal: &Error) -> Vars {
    vars.set("idem_refused", refusal_marker(refusal))
}

/// A stored first answer.
#[derive(Debug, Deserialize)]
struct Recorded {
    params: String,
    answer: Option<serde_json::Value>,
    refused: Option<String>,
    /// The server secret the first call minted under (see `secret::server_secret_id`).
    secret_id: Option<String>,
    /// For a change made in pages (`bulk.rs`), what the pages committed so far count, until
    /// the last one records the answer.
    partial: Option<u64>,
}

/// What a call with a key found recorded by an earlier call with the same key.
pub(super) enum Recalled<R> {
    /// The first call's answer, as it was recorded.
    Answer(R),
    /// The first call's refusal (it changed state: a burned code, a revoked grant or family).
    Refused(Error),
}

impl Store {
    /// The server secret keyed mints derive from, created with `fresh` on the first start
    /// against this database. Instances sharing a database share it.
    pub async fn idempotency_secret(&self, fresh: &str) -> Result<String, StoreError> {
        const SQL: &str = "BEGIN; \
            LET $s = (UPSERT ONLY $rid SET secret = secret ?? $fresh RETURN VALUE secret); \
            RETURN $s; COMMIT;";
        let vars = Vars::new().set("rid", record("meta", SERVER_SECRET)).set("fresh", fresh.to_string());
        let stored: Option<String> =
            self.retrying(|| async { take_returned(&mut self.query(SQL, vars.clone()).await?) }).await?;
        stored.ok_or_else(|| StoreError::Decode("no idempotency secret".into()))
    }

    /// The answer recorded under `keyed`, if any. The same key with other params is refused.
    async fn recall<R: DeserializeOwned>(&self, keyed: &Keyed) -> Result<Option<Recalled<R>>, StoreError> {
        let Some(found) = self.row::<Recorded>("idem", &keyed.record).await? else {
            return Ok(None);
        };
        idempotency::may_recall(keyed, &found.params, found.secret_id.as_deref())?;
        if found.partial.is_some() {
            // A change in pages, cut off part-way: running it again carries on.
            return Ok(None);
        }
        if let Some(marker) = found.refused {
            return match thrown(&format!("authstore:{marker}")) {
                Some(StoreError::Rejected(e)) => Ok(Some(Recalled::Refused(e))),
                _ => Err(StoreError::Decode(format!("recorded refusal {marker:?}"))),
            };
        }
        // An answer is recorded either as SurrealDB values (a row, a count) or, from
        // [`recordable`], as JSON text. No answer is itself a string.
        let answer = match found.answer.unwrap_or(serde_json::Value::Null) {
            serde_json::Value::String(text) => serde_json::from_str(&text),
            value => serde_json::from_value(value),
        };
        answer.map(|a| Some(Recalled::Answer(a))).map_err(|e| StoreError::Decode(format!("recorded answer: {e}")))
    }

    /// Runs `attempt` until it stops asking for a retry, like [`Store::retrying`]. For a call
    /// with a key, an answer recorded under it is returned instead (through `recalled`), looked
    /// for before each attempt and again after a refusal or an `AlreadyExists`, either of which
    /// may be a call with the same key having changed things first. Everything `attempt` reads
    /// must be read inside it, so a retry answers from the record whatever changed since.
    pub(super) async fn keyed<R, T, F, Fut>(
        &self,
        keyed: Option<&Keyed>,
        recalled: impl Fn(R) -> Result<T, StoreError>,
        mut attempt: F,
    ) -> Result<T, StoreError>
    where
        R: DeserializeOwned,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let Some(keyed) = keyed else {
            return self.retrying(attempt).await;
        };
        let finish = |found: Recalled<R>| match found {
            Recalled::Answer(answer) => recalled(answer),
            Recalled::Refused(e) => Err(StoreError::Rejected(e)),
        };
        for n in 0..MAX_ATTEMPTS {
            if let Some(found) = self.recall::<R>(keyed).await? {
                return finish(found);
            }
            match attempt().await {
                // A lost race, or a call with the same key that recorded its answer first: the
                // next turn finds what it left.
                Err(StoreError::Retry | StoreError::Recorded) => backoff(n).await,
                // A refusal, or a record that already exists, may be a call with the same key
                // having got there first (its code, token or chosen client id): look again.
                Err(e @ (StoreError::Rejected(_) | StoreError::AlreadyExists)) => {
                    return match self.recall::<R>(keyed).await? {
                        Some(found) => finish(found),
                        None => Err(e),
                    };
                }
                other => return other,
            }
        }
        Err(StoreError::Retry)
    }

    /// [`Store::keyed`] for a transaction whose `RETURN` is both its answer and what it records
    /// (a row, a flag, a count); `emits` says whether it writes events.
    pub(super) async fn keyed_transaction<R: DeserializeOwned>(
        &self,
        keyed: Option<&Keyed>,
        sql: &str,
        vars: &Vars,
        emits: Emits,
    ) -> Result<Option<R>, StoreError> {
        self.keyed(
            keyed,
            |answer: R| Ok(Some(answer)),
            || async { take_returned(&mut self.run(sql, vars.clone(), emits).await?) },
        )
        .await
    }

    /// Runs one statement that names its parameters `$item.<name>` (see [`Store::write`]).
    /// With a key, it runs in its own transaction, outside group commit, recording `answer`
    /// (SurrealQL over the statement's result `$r`, or a bound `$idem_answer`) when the statement
    /// returned something; `recorded` binds what `answer` refers to.
    pub(super) async fn write_keyed<T: DeserializeOwned>(
        &self,
        sql: &'static str,
        vars: Vars,
        keyed: Option<&Keyed>,
        answer: &str,
        recorded: Vars,
    ) -> Result<Option<T>, StoreError> {
        let Some(keyed) = keyed else {
            return self.write(sql, vars).await;
        };
        let txn = format!(
            "BEGIN; LET $r = ({sql}); {record} RETURN $r; COMMIT;",
            record = record_answer_if(Some(keyed), "$r != NONE", answer)
        );
        let vars = bind(recorded.set("item", vars.0), Some(keyed));
        take_returned(&mut self.query(&txn, vars).await?)
    }

    /// Drops first answers past their retention, at most `limit`; returns how many.
    pub async fn prune_recorded_answers(&self, now: DateTime<Utc>, limit: usize) -> Result<usize, StoreError> {
        const SQL: &str = "BEGIN; \
            LET $old = (SELECT VALUE id FROM idem WHERE expires_at <= $now ORDER BY expires_at LIMIT $limit); \
            DELETE $old; \
            RETURN array::len($old); \
            COMMIT;";
        let vars = Vars::new().set("now", now).set("limit", limit as i64);
        let pruned: Option<usize> =
            self.retrying(|| async { take_returned(&mut self.query(SQL, vars.clone()).await?) }).await?;
        Ok(pruned.unwrap_or(0))
    }
}

/// An answer as recorded for a retry: its JSON text, with any secret blanked (a retry mints it
/// again). Text, not a SurrealDB object: an answer carries the caller's `data`, whose JSON must
/// read back exactly as given (SurrealDB has no integer above `i64::MAX`, for one).
pub(super) fn recordable<T: serde::Serialize>(answer: &T) -> Result<String, StoreError> {
    let mut value = serde_json::to_value(answer).map_err(|e| StoreError::Decode(e.to_string()))?;
    if let Some(fields) = value.as_object_mut() {
        for secret in ["code", "token", "client_secret"] {
            if let Some(v) = fields.get_mut(secret) {
                *v = serde_json::Value::String(String::new());
            }
        }
    }
    serde_json::to_string(&value).map_err(|e| StoreError::Decode(e.to_string()))
}

/// The form a refusal is recorded in: the marker our SurrealQL `THROW`s use.
fn refusal_marker(e: &Error) -> Option<String> {
    match e {
        Error::InvalidGrant(reason) => Some(format!("invalid_grant:{reason}")),
        Error::InvalidClient(reason) => Some(format!("invalid_client:{reason}")),
        Error::NotFound(reason) => Some(format!("not_found:{reason}")),
        Error::Conflict => Some("conflict".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{InvalidGrant, NotFound};

    #[test]
    fn recorded_refusals_read_back_as_the_same_error() {
        for e in [
            Error::InvalidGrant(InvalidGrant::Consumed),
            Error::InvalidGrant(InvalidGrant::PkceMismatch),
            Error::InvalidGrant(InvalidGrant::ReuseDetected),
            Error::NotFound(NotFound::Expired),
        ] {
            let marker = refusal_marker(&e).unwrap();
            match thrown(&format!("authstore:{marker}")) {
                Some(StoreError::Rejected(back)) => assert_eq!(back, e),
                other => panic!("{marker}: {other:?}"),
            }
        }
    }
}
