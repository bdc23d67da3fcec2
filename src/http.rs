//! The HTTP layer in front of JSON-RPC, in two pieces: API-key authentication
//! ([`ApiKeyLayer`]) and the probes ([`Probes`]: `GET /health`, `GET /ready`, `GET /metrics`).
//!
//! Authentication runs once per HTTP request and once per WebSocket upgrade, before jsonrpsee
//! sees anything, so an unauthenticated client gets `401` and no upgrade: no call, batch or
//! subscription can get past it. On the main listener only `/health` is answered without a
//! key; the other probes come after the key check.
//!
//! The probe listener (`--probe-listen`) puts [`ProbeLayer`] in front of a server with no
//! methods: it answers the three probe routes without a key, and `404` to everything else, so
//! a health checker or a metrics scraper never holds a key that could also call methods.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Method, StatusCode, header};
use jsonrpsee::core::BoxError;
use jsonrpsee::server::{HttpBody, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::rpc::middleware::PlainHttp;
use crate::store::Store;

/// The configured API keys, kept only as SHA-256 digests.
#[derive(Clone, Default)]
pub struct ApiKeys(Vec<[u8; 32]>);

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} configured)", self.0.len())
    }
}

impl ApiKeys {
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        ApiKeys(keys.into_iter().filter(|k| !k.is_empty()).map(|k| Sha256::digest(k.as_bytes()).into()).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `presented` is one of the keys. Digests make the comparison independent of the
    /// keys' lengths; every key is compared, so timing does not tell which one matched.
    pub fn accepts(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.0.iter().fold(subtle::Choice::from(0), |any, key| any | key.ct_eq(&digest)).into()
    }
}

/// What the probe routes read: the store (readiness, record counts), the metrics and the clock.
pub struct Probes {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
}

/// The main listener's tower layer, handed to jsonrpsee: requires one of `keys` on everything
/// but `GET /health`, then answers the probe routes and passes the rest to JSON-RPC.
#[derive(Clone)]
pub struct ApiKeyLayer {
    pub keys: ApiKeys,
    pub probes: Arc<Probes>,
}

impl<S> tower::Layer<S> for ApiKeyLayer {
    type Service = ApiKeyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiKeyService { keys: self.keys.clone(), probes: self.probes.clone(), inner }
    }
}

#[derive(Clone)]
pub struct ApiKeyService<S> {
    keys: ApiKeys,
    probes: Arc<Probes>,
    inner: S,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<HttpResponse, BoxError>> + Send>>;

impl<S> tower::Service<HttpRequest> for ApiKeyService<S>
where
    S: tower::Service<HttpRequest, Response = HttpResponse, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        let is_get = is_plain_get(&request);
        if is_get && request.uri().path() == "/health" {
            return Box::pin(async { Ok(text(StatusCode::OK, "ok\n")) });
        }
        if !self.keys.is_empty() && !self.keys.accepts(bearer(&request).unwrap_or_default()) {
            return Box::pin(async {
                let mut response = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                Ok(response)
            });
        }
        if is_get && let Some(answer) = self.probes.answer(request.uri().path()) {
            return answer;
        }
        let mut request = request;
        if !jsonrpsee::server::ws::is_upgrade_request(&request) {
            request.extensions_mut().insert(PlainHttp);
        }
        Box::pin(self.inner.call(request))
    }
}

/// A GET that is not a WebSocket upgrade.
fn is_plain_get(request: &HttpRequest) -> bool {
    request.method() == Method::GET && !jsonrpsee::server::ws::is_upgrade_request(request)
}

impl Probes {
    /// The answer to a probe route (`/health`, `/ready`, `/metrics`), or `None` for any other
    /// path.
    fn answer(self: &Arc<Self>, path: &str) -> Option<BoxFuture> {
        let probes = self.clone();
        match path {
            "/health" => Some(Box::pin(async { Ok(text(StatusCode::OK, "ok\n")) })),
            "/ready" => Some(Box::pin(async move {
                Ok(if probes.store.ready().await {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable\n")
                })
            })),
            "/metrics" => Some(Box::pin(async move {
                let records = match probes.store.stats(probes.clock.now()).await {
                    Ok(s) => {
                        vec![("clients", s.clients), ("sessions", s.sessions), ("codes", s.codes), ("tokens", s.tokens)]
                    }
                    Err(e) if e.is_outage() => Vec::new(),
                    Err(e) => {
                        tracing::warn!(error = %e, "record counts unavailable for /metrics");
                        Vec::new()
                    }
                };
                let mut response = text(StatusCode::OK, probes.metrics.render(&records));
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
                Ok(response)
            })),
            _ => None,
        }
    }
}

/// The tower layer of the probe listener: the probe routes without a key, `404` for the rest.
#[derive(Clone)]
pub struct ProbeLayer(pub Arc<Probes>);

impl<S> tower::Layer<S> for ProbeLayer {
    type Service = ProbeService;

    fn layer(&self, _inner: S) -> Self::Service {
        ProbeService { probes: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct ProbeService {
    probes: Arc<Probes>,
}

impl tower::Service<HttpRequest> for ProbeService {
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        let answer = is_plain_get(&request).then(|| self.probes.answer(request.uri().path())).flatten();
        answer.unwrap_or_else(|| Box::pin(async { Ok(text(StatusCode::NOT_FOUND, "not found\n")) }))
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(request: &HttpRequest) -> Option<&str> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn text(status: StatusCode, body: impl Into<String>) -> HttpResponse {
    let mut response = HttpResponse::new(HttpBody::from(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_matched_exactly_and_any_configured_key_works() {
        let keys = ApiKeys::new(["first-key", "second-key"]);
        assert!(keys.accepts("first-key"));
        assert!(keys.accepts("second-key"));
        assert!(!keys.accepts("first-ke"));
        assert!(!keys.accepts(""));
        assert!(ApiKeys::new([""]).is_empty());
        assert!(!format!("{keys:?}").contains("first"));
    }
}
