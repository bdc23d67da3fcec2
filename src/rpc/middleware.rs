//! RPC middleware, created per connection: [`CallGuard`] (in-flight limit, metrics, one
//! tracing span per call) and [`ObjectParams`] (the contract's call shape).
//!
//! ## Object params
//!
//! The contract sends each method's params as one JSON object (`{"client_id": ..}`); the
//! `#[rpc]` traits take that object as their single argument. This layer wraps an object (or
//! absent) params value in a one-element array so the generated decoder hands the whole object
//! to the handler. Batches are rewritten entry by entry: jsonrpsee does not route batch
//! entries through `call`.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use jsonrpsee::MethodResponse;
use jsonrpsee::core::middleware::{Batch, BatchEntry, BatchEntryErr, Notification, RpcServiceT};
use jsonrpsee::types::{ErrorObject, Request};
use serde_json::value::RawValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::metrics::Metrics;

/// jsonrpsee's code for "server is busy".
const BUSY: i32 = -32009;

/// Caps the calls in flight on one connection (jsonrpsee has no such limit), counts and times
/// every call, and gives each its own tracing span. One is built per connection, so its
/// lifetime is the connection's.
#[derive(Clone)]
pub struct CallGuard<S> {
    inner: S,
    in_flight: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    _connection: Arc<Connection>,
}

/// Counts the connection in the open-connections gauge for as long as it lives.
struct Connection(Arc<Metrics>);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

impl<S> CallGuard<S> {
    pub fn new(inner: S, max_in_flight: usize, metrics: Arc<Metrics>) -> Self {
        metrics.connection_opened();
        let connection = Arc::new(Connection(metrics.clone()));
        Self { inner, in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))), metrics, _connection: connection }
    }

    fn permit(&self) -> Option<OwnedSemaphorePermit> {
        self.in_flight.clone().try_acquire_owned().ok()
    }
}

fn busy() -> ErrorObject<'static> {
    ErrorObject::owned(BUSY, "Server is busy: too many calls in flight on this connection", None::<()>)
}

impl<S> RpcServiceT for CallGuard<S>
where
    S: RpcServiceT<
            MethodResponse = MethodResponse,
            BatchResponse = MethodResponse,
            NotificationResponse = MethodResponse,
        > + Send
        + Sync
        + Clone
        + 'static,
{
    type MethodResponse = MethodResponse;
    type NotificationResponse = MethodResponse;
    type BatchResponse = MethodResponse;

    fn call<'a>(&self, request: Request<'a>) -> impl Future<Output = Self::MethodResponse> + Send + 'a {
        let permit = self.permit();
        let inner = self.inner.clone();
        let metrics = self.metrics.clone();
        async move {
            let method = metrics.label(request.method_name()).to_string();
            let started = Instant::now();
            let span = tracing::debug_span!("rpc", method = %method);
            let response = match permit {
                Some(_permit) => inner.call(request).instrument(span.clone()).await,
                None => MethodResponse::error(request.id, busy()),
            };
            let took = started.elapsed();
            let error = response.as_error_code();
            metrics.record_call(&method, took, error);
            span.in_scope(|| match error {
                None => tracing::debug!(duration_us = took.as_micros() as u64, outcome = "ok", "call"),
                Some(code) => tracing::debug!(duration_us = took.as_micros() as u64, outcome = "error", code, "call"),
            });
            response
        }
    }

    fn batch<'a>(&self, batch: Batch<'a>) -> impl Future<Output = Self::BatchResponse> + Send + 'a {
        // Batch entries never pass through `call`: each takes its own permit here, and the
        // ones that find none are answered "busy".
        let mut permits = Vec::new();
        let entries: Vec<_> = batch
            .into_iter()
            .map(|entry| match entry {
                Ok(BatchEntry::Call(request)) => match self.permit() {
                    Some(permit) => {
                        permits.push(permit);
                        Ok(BatchEntry::Call(request))
                    }
                    None => Err(BatchEntryErr::new(request.id, busy())),
                },
                other => other,
            })
            .collect();
        let inner = self.inner.clone();
        let metrics = self.metrics.clone();
        async move {
            let started = Instant::now();
            let response =
                inner.batch(Batch::from(entries)).instrument(tracing::debug_span!("rpc", method = "batch")).await;
            drop(permits);
            metrics.record_call("batch", started.elapsed(), None);
            response
        }
    }

    fn notification<'a>(&self, n: Notification<'a>) -> impl Future<Output = Self::NotificationResponse> + Send + 'a {
        self.inner.notification(n)
    }
}

/// The RPC middleware; built per connection by `RpcServiceBuilder::layer_fn`.
#[derive(Debug, Clone)]
pub struct ObjectParams<S> {
    inner: S,
}

impl<S> ObjectParams<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S> RpcServiceT for ObjectParams<S>
where
    S: RpcServiceT + Send + Sync + Clone + 'static,
{
    type MethodResponse = S::MethodResponse;
    type NotificationResponse = S::NotificationResponse;
    type BatchResponse = S::BatchResponse;

    fn call<'a>(&self, mut request: Request<'a>) -> impl Future<Output = Self::MethodResponse> + Send + 'a {
        if let Some(wrapped) = wrap(&request.method, request.params.as_deref()) {
            request.params = Some(Cow::Owned(wrapped));
        }
        self.inner.call(request)
    }

    fn batch<'a>(&self, mut batch: Batch<'a>) -> impl Future<Output = Self::BatchResponse> + Send + 'a {
        for entry in batch.iter_mut().flatten() {
            if let BatchEntry::Call(request) = entry
                && let Some(wrapped) = wrap(&request.method, request.params.as_deref())
            {
                request.params = Some(Cow::Owned(wrapped));
            }
        }
        self.inner.batch(batch)
    }

    fn notification<'a>(&self, n: Notification<'a>) -> impl Future<Output = Self::NotificationResponse> + Send + 'a {
        self.inner.notification(n)
    }
}

/// `{..}` or nothing becomes `[{..}]`; arrays pass untouched (positional callers and the
/// generated client already send `[{..}]`). A scalar is wrapped too, so the handler reports it
/// as invalid params naming `params`. Unsubscribe methods take a bare id.
fn wrap(method: &str, params: Option<&RawValue>) -> Option<Box<RawValue>> {
    if method.ends_with("unsubscribe") {
        return None;
    }
    let text = match params {
        None => "{}",
        Some(raw) if raw.get().trim_start().starts_with('[') => return None,
        Some(raw) => raw.get(),
    };
    RawValue::from_string(format!("[{text}]")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_and_missing_params_are_wrapped_arrays_pass() {
        let object = RawValue::from_string(r#"{"id":"x"}"#.into()).unwrap();
        assert_eq!(wrap("session.get", Some(&object)).unwrap().get(), r#"[{"id":"x"}]"#);
        assert_eq!(wrap("server.ping", None).unwrap().get(), "[{}]");
        let array = RawValue::from_string(r#"[{"id":"x"}]"#.into()).unwrap();
        assert!(wrap("session.get", Some(&array)).is_none());
        assert!(wrap("session.unsubscribe", Some(&object)).is_none());
    }
}
