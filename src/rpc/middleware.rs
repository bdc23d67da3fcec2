//! Adapts the contract's call shape to the generated server code.
//!
//! The contract sends each method's params as one JSON object (`{"client_id": ..}`); the
//! `#[rpc]` traits take that object as their single argument. This layer wraps an object (or
//! absent) params value in a one-element array so the generated decoder hands the whole object
//! to the handler. Batches are rewritten entry by entry: jsonrpsee does not route batch
//! entries through `call`.

use std::borrow::Cow;
use std::future::Future;

use jsonrpsee::core::middleware::{Batch, BatchEntry, Notification, RpcServiceT};
use jsonrpsee::types::Request;
use serde_json::value::RawValue;

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
