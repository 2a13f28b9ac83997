//! Prometheus metrics for the HTTP API, when the Configuration enables them: request counts
//! by method and status, and a latency histogram, in Dapr's metric names. With metrics
//! disabled none of this is installed: no layer on the request path, no listener.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;

/// Bucket bounds in milliseconds, Dapr's defaults.
const BUCKETS_MS: [f64; 12] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 13.0, 16.0, 20.0, 50.0,
];

#[derive(Default)]
struct Series {
    count: u64,
    sum_ms: f64,
    buckets: [u64; BUCKETS_MS.len()],
}

pub struct Metrics {
    app_id: String,
    http: Mutex<HashMap<(String, u16), Series>>,
}

impl Metrics {
    pub fn new(app_id: &str) -> Arc<Self> {
        Arc::new(Metrics {
            app_id: app_id.to_string(),
            http: Mutex::new(HashMap::new()),
        })
    }

    fn record(&self, method: &str, status: u16, ms: f64) {
        let mut map = self
            .http
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let s = map.entry((method.to_string(), status)).or_default();
        s.count += 1;
        s.sum_ms += ms;
        for (i, b) in BUCKETS_MS.iter().enumerate() {
            if ms <= *b {
                s.buckets[i] += 1;
            }
        }
    }

    /// The Prometheus text exposition of everything recorded so far.
    pub fn render(&self) -> String {
        let map = self
            .http
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::new();
        out.push_str(
            "# HELP dapr_http_server_request_count Number of HTTP requests started in server.\n",
        );
        out.push_str("# TYPE dapr_http_server_request_count counter\n");
        for ((method, status), s) in map.iter() {
            let _ = writeln!(
                out,
                "dapr_http_server_request_count{{app_id=\"{}\",method=\"{method}\",status=\"{status}\"}} {}",
                self.app_id, s.count
            );
        }
        out.push_str(
            "# HELP dapr_http_server_latency HTTP request end-to-end latency in server (ms).\n",
        );
        out.push_str("# TYPE dapr_http_server_latency histogram\n");
        for ((method, status), s) in map.iter() {
            let labels = format!(
                "app_id=\"{}\",method=\"{method}\",status=\"{status}\"",
                self.app_id
            );
            for (i, b) in BUCKETS_MS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "dapr_http_server_latency_bucket{{{labels},le=\"{b}\"}} {}",
                    s.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "dapr_http_server_latency_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(out, "dapr_http_server_latency_sum{{{labels}}} {}", s.sum_ms);
            let _ = writeln!(
                out,
                "dapr_http_server_latency_count{{{labels}}} {}",
                s.count
            );
        }
        out
    }

    /// Adds the recording layer to the API router.
    pub fn layer(self: &Arc<Self>, router: Router) -> Router {
        router.layer(middleware::from_fn_with_state(self.clone(), observe))
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/", get(render))
            .route("/metrics", get(render))
            .with_state(self.clone())
    }
}

async fn observe(State(m): State<Arc<Metrics>>, req: Request<Body>, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_string();
    let resp = next.run(req).await;
    m.record(
        &method,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64() * 1e3,
    );
    resp
}

async fn render(
    State(m): State<Arc<Metrics>>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        m.render(),
    )
}
