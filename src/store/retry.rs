//! What a failed query means, and running an operation again when it lost a race.
//!
//! A failed statement is classified by the most specific cause SurrealDB reports: a `THROW`
//! of our own SurrealQL (`authstore:<kind>:<reason>`) carries a contract error or a retry; a
//! write conflict, or a conditional write that matched nothing, is [`StoreError::Retry`], and
//! the operation runs again from a fresh read after a short jittered pause, so the loser of a
//! race sees the winner's result instead of an error.

use std::future::Future;
use std::time::Duration;

use surrealdb::types::QueryError;

use super::{Store, StoreError};
use crate::error::{Error, InvalidClient, InvalidGrant, NotFound};

/// How many times an operation that keeps losing races is tried before giving up.
pub(super) const MAX_ATTEMPTS: u32 = 200;

impl Store {
    /// Runs `attempt` until it stops asking for a retry.
    pub(super) async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        for n in 0..MAX_ATTEMPTS {
            match attempt().await {
                Err(StoreError::Retry) => backoff(n).await,
                other => return other,
            }
        }
        Err(StoreError::Retry)
    }
}

/// Ranks an error by how much it tells us, and maps it.
pub(super) fn classify(e: &surrealdb::Error) -> (u8, StoreError) {
    if e.is_thrown()
        && let Some(rejection) = thrown(e.message())
    {
        return (4, rejection);
    }
    if e.is_already_exists() {
        return (3, StoreError::AlreadyExists);
    }
    if matches!(e.query_details(), Some(QueryError::TransactionConflict)) {
        return (2, StoreError::Retry);
    }
    if matches!(e.query_details(), Some(QueryError::NotExecuted)) {
        return (0, StoreError::Retry);
    }
    (1, StoreError::Database(e.to_string()))
}

/// Marker that SurrealQL `THROW`s carry: `authstore:retry`, `authstore:not_found:expired`...
const THROWN: &str = "authstore:";

/// Maps a `THROW` raised by our own SurrealQL back to its meaning.
pub(super) fn thrown(message: &str) -> Option<StoreError> {
    let tail = &message[message.find(THROWN)? + THROWN.len()..];
    let mut parts = tail.trim_end_matches(['"', '\'']).splitn(2, ':');
    let kind = parts.next()?;
    let reason = parts.next().unwrap_or_default();
    let error = match kind {
        "retry" => return Some(StoreError::Retry),
        "recorded" => return Some(StoreError::Recorded),
        "conflict" => Error::Conflict,
        "not_found" => Error::NotFound(NotFound::parse(reason).unwrap_or(NotFound::Missing)),
        "invalid_grant" => Error::InvalidGrant(InvalidGrant::parse(reason)?),
        "invalid_client" => Error::InvalidClient(InvalidClient::parse(reason)?),
        _ => return None,
    };
    Some(StoreError::Rejected(error))
}

pub(super) async fn backoff(attempt: u32) {
    let mut bytes = [0u8; 2];
    let jitter = match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from(u16::from_le_bytes(bytes)),
        Err(_) => 0,
    };
    // Up to ~1 ms at first, growing to ~8 ms: enough to let one contender commit.
    let ceiling = 1000 * u64::from(1 + attempt.min(7));
    tokio::time::sleep(Duration::from_micros(jitter % ceiling)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thrown_markers_map_to_contract_errors() {
        assert!(matches!(thrown("An error occurred: authstore:retry"), Some(StoreError::Retry)));
        assert!(matches!(
            thrown("An error occurred: authstore:not_found:expired"),
            Some(StoreError::Rejected(Error::NotFound(NotFound::Expired)))
        ));
        assert!(matches!(
            thrown("authstore:invalid_client:unknown_client"),
            Some(StoreError::Rejected(Error::InvalidClient(InvalidClient::UnknownClient)))
        ));
        assert!(thrown("something else").is_none());
    }
}
