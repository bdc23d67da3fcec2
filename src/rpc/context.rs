//! What every handler needs: the store, the rules, the clock.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonrpsee::core::RpcResult;

use crate::clock::Clock;
use crate::domain::Policy;
use crate::domain::idempotency::{self, Call};
use crate::error::Error;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Shared by all handlers of one server.
pub struct Context {
    pub store: Store,
    pub policy: Policy,
    pub clock: Arc<dyn Clock>,
    pub started_at: DateTime<Utc>,
    /// This instance's live event feed.
    pub hub: Hub,
    /// How long a subscriber may leave a notification unread before it is closed.
    pub subscriber_send_timeout: Duration,
    pub metrics: Arc<Metrics>,
    /// The server secret that secrets minted under an idempotency key derive from.
    pub idempotency_secret: Vec<u8>,
    /// Its name (`secret::server_secret_id`), recorded with each keyed answer.
    pub idempotency_secret_id: String,
}

impl Context {
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Describes the state-changing call `method`: its idempotency key (taken out of `params`
    /// by the caller, so the params compared on a retry are the rest) and its mint.
    pub fn call<P: serde::Serialize>(
        &self,
        method: &str,
        key: Option<String>,
        params: &P,
        now: DateTime<Utc>,
    ) -> Result<Call, Error> {
        idempotency::call(method, key.as_deref(), params, &self.idempotency_secret, &self.idempotency_secret_id, now)
    }

    /// Runs one operation to completion on its own task, so that a client hanging up
    /// mid-call cannot cancel a state change halfway, and maps its error for the wire.
    pub async fn run<T, F, Fut>(self: &Arc<Self>, operation: F) -> RpcResult<T>
    where
        F: FnOnce(Arc<Context>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        let task = tokio::spawn(operation(self.clone()));
        match task.await {
            Ok(result) => result.map_err(|e| Error::from(e).into()),
            Err(join) => {
                tracing::error!(error = %join, "operation task failed");
                Err(Error::Unavailable.into())
            }
        }
    }
}
