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
use jsonrpsee::types::{ErrorObject, ErrorObjectOwned, Request};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use super::error::BUSY;
use super::params::clip;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::stall::{BacklogTicket, Unsent};

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
        let guard = self.clone();
        let unsent = unsent(request.extensions());
        async move {
            if let Some(unsent) = &unsent {
                unsent.room().await;
            }
            let (permit, inner, metrics) = (guard.permit(), guard.inner, guard.metrics);
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
            counted(response, unsent)
        }
    }

    fn batch<'a>(&self, mut batch: Batch<'a>) -> impl Future<Output = Self::BatchResponse> + Send + 'a {
        let guard = self.clone();
        let unsent = unsent(batch.extensions());
        async move {
            if let Some(unsent) = &unsent {
                unsent.room().await;
            }
            // Batch entries never pass through `call`: each takes its own permit here, and the
            // ones that find none are answered "busy".
            let mut permits = Vec::new();
            let entries: Vec<_> = batch
                .into_iter()
                .map(|entry| match entry {
                    Ok(BatchEntry::Call(request)) => match guard.permit() {
                        Some(permit) => {
                            permits.push(permit);
                            Ok(BatchEntry::Call(request))
                        }
                        None => Err(BatchEntryErr::new(request.id, busy())),
                    },
                    other => other,
                })
                .collect();
            let (inner, metrics) = (guard.inner, guard.metrics);
            let started = Instant::now();
            let response =
                inner.batch(Batch::from(entries)).instrument(tracing::debug_span!("rpc", method = "batch")).await;
            drop(permits);
            metrics.record_call("batch", started.elapsed(), None);
            counted(response, unsent)
        }
    }

    fn notification<'a>(&self, n: Notification<'a>) -> impl Future<Output = Self::NotificationResponse> + Send + 'a {
        self.inner.notification(n)
    }
}

/// The connection's count of answer bytes waiting for the socket (`stall.rs`); WebSocket calls
/// carry it, plain HTTP requests do not.
fn unsent(extensions: &http::Extensions) -> Option<Unsent> {
    extensions.get::<BacklogTicket>().map(BacklogTicket::unsent)
}

/// Adds an answer that jsonrpsee sends next (a call's or a batch's) to its connection's
/// unsent bytes. A subscription's answer was already sent by its handler and a notification
/// gets none: neither is added, since a byte added that is never sent would hold the
/// connection's reading for good.
fn counted(response: MethodResponse, unsent: Option<Unsent>) -> MethodResponse {
    if let Some(unsent) = unsent
        && (response.is_method_call() || response.is_batch())
    {
        unsent.answered(response.as_json().get().len());
    }
    response
}

/// Marks the calls of a plain HTTP request (inserted by the HTTP layer; a WebSocket's calls
/// do not carry it): a subscription needs a connection to send its notifications on.
#[derive(Debug, Clone, Copy)]
pub struct PlainHttp;

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
    S: RpcServiceT<MethodResponse = MethodResponse> + Send + Sync + Clone + 'static,
{
    type MethodResponse = MethodResponse;
    type NotificationResponse = S::NotificationResponse;
    type BatchResponse = S::BatchResponse;

    fn call<'a>(&self, mut request: Request<'a>) -> impl Future<Output = Self::MethodResponse> + Send + 'a {
        let plain_http = request.extensions().get::<PlainHttp>().is_some();
        let refused = match shape(&request.method, request.params.as_deref(), plain_http) {
            Ok(Some(wrapped)) => {
                request.params = Some(Cow::Owned(wrapped));
                None
            }
            Ok(None) => None,
            Err(e) => Some(e),
        };
        let inner = self.inner.clone();
        async move {
            match refused {
                Some(e) => MethodResponse::error(request.id, ErrorObjectOwned::from(e)),
                None => inner.call(request).await,
            }
        }
    }

    fn batch<'a>(&self, mut batch: Batch<'a>) -> impl Future<Output = Self::BatchResponse> + Send + 'a {
        for entry in batch.iter_mut() {
            let refused = match entry {
                Ok(BatchEntry::Call(request)) => match shape(
                    &request.method,
                    request.params.as_deref(),
                    request.extensions().get::<PlainHttp>().is_some(),
                ) {
                    Ok(Some(wrapped)) => {
                        request.params = Some(Cow::Owned(wrapped));
                        None
                    }
                    Ok(None) => None,
                    Err(e) => Some(BatchEntryErr::new(request.id.clone(), ErrorObjectOwned::from(e))),
                },
                _ => None,
            };
            if let Some(refused) = refused {
                *entry = Err(refused);
            }
        }
        self.inner.batch(batch)
    }

    fn notification<'a>(&self, n: Notification<'a>) -> impl Future<Output = Self::NotificationResponse> + Send + 'a {
        self.inner.notification(n)
    }
}

/// Methods that take no params: anything given to them is a parameter they do not know.
const NO_PARAMS: &[&str] = &["server.ping", "server.info", "server.stats", "rpc.discover"];

/// Brings a call's params to the shape the `#[rpc]` traits decode, or refuses them.
///
/// `{..}` or nothing becomes `[{..}]`; a one-element array passes untouched (positional callers
/// and the generated client already send `[{..}]`), an empty one becomes `[{}]`, and a longer
/// one is refused: the method takes one object. A scalar is wrapped too, so the handler
/// reports it as invalid params naming `params`. Unsubscribe methods take a bare id. Methods
/// without params refuse any (`data.field` names the first key). Over plain HTTP, subscribing
/// and unsubscribing are refused: there is no connection to carry notifications.
fn shape(method: &str, params: Option<&RawValue>, plain_http: bool) -> Result<Option<Box<RawValue>>, Error> {
    if plain_http && method.ends_with("subscribe") {
        return Err(Error::WebSocketRequired);
    }
    if method.ends_with("unsubscribe") {
        return Ok(None);
    }
    if NO_PARAMS.contains(&method) {
        return match params.map(|raw| serde_json::from_str::<Value>(raw.get())) {
            None | Some(Ok(Value::Null)) => Ok(None),
            Some(Ok(Value::Object(map))) if map.is_empty() => Ok(None),
            Some(Ok(Value::Array(items))) if items.is_empty() => Ok(None),
            Some(Ok(Value::Object(map))) => {
                let key = map.keys().next().filter(|k| !k.is_empty()).map_or("params", String::as_str);
                Err(Error::invalid(clip(key, 256), format!("{method} takes no params")))
            }
            Some(_) => Err(Error::invalid("params", format!("{method} takes no params"))),
        };
    }
    let text = match params {
        None => "{}",
        Some(raw) if raw.get().trim_start().starts_with('[') => {
            return match serde_json::from_str::<Vec<&RawValue>>(raw.get()) {
                Ok(items) if items.is_empty() => Ok(RawValue::from_string("[{}]".into()).ok()),
                Ok(items) if items.len() > 1 => {
                    Err(Error::invalid("params", "must be one object of named params (or an array holding only it)"))
                }
                _ => Ok(None),
            };
        }
        Some(raw) => raw.get(),
    };
    Ok(RawValue::from_string(format!("[{text}]")).ok())
}
#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.into()).unwrap()
    }

    fn refused_field(method: &str, params: Option<&str>) -> String {
        match shape(method, params.map(raw).as_deref(), false) {
            Err(Error::InvalidParams { field, .. }) => field,
            other => panic!("expected invalid params, got {other:?}"),
        }
    }

    #[test]
    fn objects_and_missing_params_are_wrapped_arrays_pass() {
        let object = raw(r#"{"id":"x"}"#);
        assert_eq!(shape("session.get", Some(&object), false).unwrap().unwrap().get(), r#"[{"id":"x"}]"#);
        assert_eq!(shape("session.list", None, false).unwrap().unwrap().get(), "[{}]");
        assert_eq!(shape("session.list", Some(&raw("[]")), false).unwrap().unwrap().get(), "[{}]");
        assert!(shape("session.get", Some(&raw(r#"[{"id":"x"}]"#)), false).unwrap().is_none());
        assert!(shape("session.unsubscribe", Some(&object), false).unwrap().is_none());
    }

    #[test]
    fn params_a_method_does_not_take_are_refused() {
        assert_eq!(refused_field("session.get", Some(r#"[{"id":"x"}, {"id":"y"}]"#)), "params");
        assert_eq!(refused_field("server.ping", Some(r#"{"verbose":true}"#)), "verbose");
        assert_eq!(refused_field("server.info", Some("[1]")), "params");
        assert_eq!(refused_field("rpc.discover", Some("\"x\"")), "params");
        for fine in [None, Some("{}"), Some("[]"), Some("null")] {
            assert!(shape("server.ping", fine.map(raw).as_deref(), false).unwrap().is_none(), "{fine:?}");
        }
    }

    #[test]
    fn subscriptions_over_plain_http_are_refused_and_other_calls_are_not() {
        for method in ["session.subscribe", "token.subscribe", "token.unsubscribe"] {
            assert!(matches!(shape(method, None, true), Err(Error::WebSocketRequired)), "{method}");
            assert!(shape(method, None, false).is_ok(), "{method} over a WebSocket");
        }
        assert!(shape("session.get", Some(&raw(r#"{"id":"x"}"#)), true).is_ok());
    }
}
