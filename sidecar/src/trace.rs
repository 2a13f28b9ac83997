//! Distributed tracing as Dapr's Configuration asks for it: W3C `traceparent` propagation
//! and spans exported to Zipkin. With `samplingRate: "0"` none of this is installed, so the
//! request path does no tracing work at all.
//!
//! The layer wraps every listener (HTTP API, gRPC API, internal). For each request it
//! continues the caller's trace (or starts one, sampled at the configured rate), replaces the
//! request's `traceparent` with one naming this sidecar's span, so whatever the request is
//! forwarded to becomes its child, and records the span when the response is ready.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const MAX_BUFFER: usize = 10_000;

/// A parsed or fresh W3C trace context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: String,
    pub parent_id: Option<String>,
    pub sampled: bool,
}

/// Parses `00-<32 hex>-<16 hex>-<2 hex>`; anything else is ignored, as W3C requires.
pub fn parse_traceparent(v: &str) -> Option<TraceParent> {
    let mut parts = v.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    if version != "00" || !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2) {
        return None;
    }
    if trace.bytes().all(|b| b == b'0') || parent.bytes().all(|b| b == b'0') {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(TraceParent {
        trace_id: trace.to_string(),
        parent_id: Some(parent.to_string()),
        sampled: flags & 1 == 1,
    })
}

fn random_hex(bytes: usize) -> String {
    let raw = uuid::Uuid::new_v4();
    let mut s = String::with_capacity(bytes * 2);
    for b in &raw.as_bytes()[..bytes] {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Endpoint {
    service_name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ZipkinSpan {
    trace_id: String,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_id: Option<String>,
    name: String,
    kind: &'static str,
    timestamp: u64,
    duration: u64,
    local_endpoint: Endpoint,
    tags: std::collections::BTreeMap<&'static str, String>,
}

pub struct Tracer {
    rate: f64,
    service: String,
    buffer: Mutex<Vec<ZipkinSpan>>,
    export: bool,
}

impl Tracer {
    /// `None` when sampling is 0: the caller installs nothing.
    pub fn new(rate: f64, zipkin: Option<String>, service: &str) -> Option<Arc<Tracer>> {
        if rate <= 0.0 {
            return None;
        }
        let tracer = Arc::new(Tracer {
            rate,
            service: service.to_string(),
            buffer: Mutex::new(Vec::new()),
            export: zipkin.is_some(),
        });
        if let Some(endpoint) = zipkin {
            tokio::spawn(export_loop(Arc::downgrade(&tracer), endpoint));
        }
        Some(tracer)
    }

    fn decide(&self) -> bool {
        let r = u64::from_le_bytes(
            uuid::Uuid::new_v4().as_bytes()[..8]
                .try_into()
                .unwrap_or([0; 8]),
        );
        (r as f64 / u64::MAX as f64) < self.rate
    }

    fn record(&self, span: ZipkinSpan) {
        if !self.export {
            return;
        }
        let mut buf = self
            .buffer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buf.len() < MAX_BUFFER {
            buf.push(span);
        }
    }

    fn take(&self) -> Vec<ZipkinSpan> {
        std::mem::take(
            &mut *self
                .buffer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// Sends buffered spans to Zipkin's v2 JSON API once a second, until the tracer is gone.
async fn export_loop(tracer: std::sync::Weak<Tracer>, endpoint: String) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(t) = tracer.upgrade() else { return };
        let spans = t.take();
        drop(t);
        if spans.is_empty() {
            continue;
        }
        let Ok(body) = serde_json::to_vec(&spans) else {
            continue;
        };
        let req = Request::post(&endpoint)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)));
        match req {
            Ok(req) => match client.request(req).await {
                Ok(resp) if resp.status().is_success() => {}
                Ok(resp) => tracing::warn!(status = %resp.status(), "zipkin refused spans"),
                Err(e) => tracing::warn!(error = %e, "exporting spans to zipkin failed"),
            },
            Err(e) => tracing::warn!(error = %e, "bad zipkin endpoint"),
        }
    }
}

/// The tower layer; `kind` is "SERVER" for every listener (each is where a request arrives).
#[derive(Clone)]
pub struct TraceLayer {
    tracer: Arc<Tracer>,
}

impl TraceLayer {
    pub fn new(tracer: Arc<Tracer>) -> Self {
        TraceLayer { tracer }
    }
}

impl<S> tower::Layer<S> for TraceLayer {
    type Service = TraceService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TraceService {
            inner,
            tracer: self.tracer.clone(),
        }
    }
}

#[derive(Clone)]
pub struct TraceService<S> {
    inner: S,
    tracer: Arc<Tracer>,
}

impl<S, B, RB> tower::Service<Request<B>> for TraceService<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<RB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let incoming = req
            .headers()
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        let ctx = incoming.unwrap_or_else(|| TraceParent {
            trace_id: random_hex(16),
            parent_id: None,
            sampled: self.tracer.decide(),
        });
        let span_id = random_hex(8);
        let flags = if ctx.sampled { "01" } else { "00" };
        if let Ok(v) = HeaderValue::from_str(&format!("00-{}-{span_id}-{flags}", ctx.trace_id)) {
            req.headers_mut().insert(TRACEPARENT, v);
        }
        let name = format!("{} {}", req.method(), req.uri().path());
        let (method, path) = (req.method().to_string(), req.uri().path().to_string());
        let tracer = self.tracer.clone();
        let wall = SystemTime::now();
        let start = Instant::now();
        // Call the clone that was made ready; keep a fresh clone for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let result = inner.call(req).await;
            if ctx.sampled {
                let mut tags = std::collections::BTreeMap::new();
                tags.insert("http.method", method);
                tags.insert("http.path", path);
                if let Ok(resp) = &result {
                    tags.insert("http.status_code", resp.status().as_u16().to_string());
                }
                tracer.record(ZipkinSpan {
                    trace_id: ctx.trace_id,
                    id: span_id,
                    parent_id: ctx.parent_id,
                    name,
                    kind: "SERVER",
                    timestamp: wall
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_micros() as u64),
                    duration: start.elapsed().as_micros().max(1) as u64,
                    local_endpoint: Endpoint {
                        service_name: tracer.service.clone(),
                    },
                    tags,
                });
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_traceparent_and_rejects_bad_ones() {
        let t =
            parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        assert_eq!(t.trace_id, "0af7651916cd43dd8448eb211c80319c");
        assert!(t.sampled);
        assert!(
            parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")
                .is_some_and(|t| !t.sampled)
        );
        assert!(
            parse_traceparent("00-00000000000000000000000000000000-b7ad6b7169203331-01").is_none()
        );
        assert!(
            parse_traceparent("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01").is_none()
        );
        assert!(parse_traceparent("garbage").is_none());
    }
}
