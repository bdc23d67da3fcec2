//! The store's error: a refusal the caller must hear, or a storage fault that it must not.

use crate::error::Error;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A rule refused the operation; passed to the caller as it is.
    #[error(transparent)]
    Rejected(#[from] Error),
    /// The transaction lost a race (a write conflict, or a conditional write that matched
    /// nothing). Nothing was changed; the operation runs again from a fresh read.
    #[error("transaction conflict")]
    Retry,
    /// A call with the same idempotency key recorded its answer first; the caller reads it.
    #[error("answer already recorded under this idempotency key")]
    Recorded,
    /// A record with that key already exists.
    #[error("record already exists")]
    AlreadyExists,
    /// SurrealDB failed. Details go to the log, never to the caller.
    #[error("database: {0}")]
    Database(String),
    /// SurrealDB answered something we did not expect.
    #[error("unexpected database answer: {0}")]
    Decode(String),
    /// The database did not answer in time, or the connection to it is down, and nothing was
    /// sent that could change anything (a read, or a write refused before it was sent).
    #[error("database unreachable")]
    Unreachable,
    /// The database stopped answering after a write was sent: it may have committed.
    #[error("database unreachable after a write was sent; outcome unknown")]
    OutcomeUnknown,
}

impl StoreError {
    /// Whether this is the database being unreachable, which the store logs once per outage:
    /// callers log it at debug level rather than once per failed call.
    pub fn is_outage(&self) -> bool {
        matches!(self, StoreError::Unreachable | StoreError::OutcomeUnknown)
    }
}

impl From<surrealdb::Error> for StoreError {
    fn from(e: surrealdb::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Rejected(e) => e,
            StoreError::AlreadyExists => Error::Conflict,
            StoreError::Retry | StoreError::Recorded => {
                tracing::warn!("gave up on an operation that kept conflicting");
                Error::Unavailable
            }
            StoreError::Database(detail) | StoreError::Decode(detail) => {
                tracing::error!(error = %detail, "storage failure");
                Error::Unavailable
            }
            // The outage itself is logged once by the store's health state, not per call.
            StoreError::Unreachable => Error::Unavailable,
            StoreError::OutcomeUnknown => Error::OutcomeUnknown,
        }
    }
}
