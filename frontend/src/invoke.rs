//! Calls to the backend through Dapr service invocation over HTTP:
//! `http://127.0.0.1:$DAPR_HTTP_PORT/v1.0/invoke/$BACKEND_APP_ID/method/...`, one pooled
//! keep-alive client, `traceparent`/`tracestate` and `Idempotency-Key` passed along, and
//! the backend's status and body handed back as they are. Each call has the request's
//! deadline: the backend is told the time left (`x-request-timeout-ms`), and a backend
//! that has not answered by then is a 504. Failures of the Dapr path itself become 502/503.

use std::time::{Duration, Instant};

use appkit::error::AppError;
use appkit::request::{
    IDEMPOTENCY_KEY, TIMEOUT_HEADER, deadline, deadline_exceeded, idempotency_key,
    timeout_for_next_hop,
};
use appkit::settings::DaprSettings;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

const PASSED: [&str; 2] = ["traceparent", "tracestate"];

#[derive(Clone)]
pub struct Backend {
    client: reqwest::Client,
    base: String,
    token: Option<HeaderValue>,
    /// The most time one request may take, unless its caller gives it less.
    budget: Duration,
}

impl Backend {
    /// Calls through the sidecar's HTTP port, or its Unix domain socket when `settings`
    /// name one (`DAPR_HTTP_ENDPOINT=unix:///path`).
    pub fn new(settings: &DaprSettings, budget: Duration) -> anyhow::Result<Self> {
        let mut client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1024)
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(Duration::from_secs(2))
            .no_proxy();
        let origin = match &settings.http_socket {
            Some(path) => {
                client = client.unix_socket(path.clone());
                "http://localhost".to_string()
            }
            None => format!("http://127.0.0.1:{}", settings.http_port),
        };
        let backend_app_id = &settings.backend_app_id;
        Ok(Backend {
            client: client.build()?,
            base: format!("{origin}/v1.0/invoke/{backend_app_id}/method"),
            token: settings
                .api_token
                .as_deref()
                .map(HeaderValue::from_str)
                .transpose()?,
            budget,
        })
    }

    /// Invokes `path` (with its query) on the backend.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        incoming: &HeaderMap,
        json: Option<Vec<u8>>,
    ) -> Result<Response, AppError> {
        let deadline = deadline(incoming, self.budget);
        // A key names a change; a read has none to name, so a read ignores it.
        let key = if method == Method::GET {
            None
        } else {
            idempotency_key(incoming)?
        };
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .timeout(deadline.saturating_duration_since(Instant::now()))
            .header(TIMEOUT_HEADER, timeout_for_next_hop(deadline));
        for name in PASSED {
            if let Some(v) = incoming.get(name) {
                req = req.header(name, v);
            }
        }
        if let Some(key) = &key {
            req = req.header(IDEMPOTENCY_KEY, key);
        }
        if let Some(t) = &self.token {
            req = req.header(appkit::token::HEADER, t);
        }
        if let Some(body) = json {
            req = req
                .header(header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let keyed = key.is_some();
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                deadline_exceeded(if keyed {
                    format!(
                        "the backend did not answer in time; a change may or may not have \
                         been made: retry with the same Idempotency-Key to know ({e})"
                    )
                } else {
                    format!("the backend did not answer in time ({e})")
                })
            } else if e.is_connect() {
                AppError::unavailable(
                    "sidecar_unavailable",
                    format!("the Dapr sidecar is not reachable: {e}"),
                )
            } else {
                AppError::bad_gateway(
                    "sidecar_error",
                    format!("calling the Dapr sidecar failed: {e}"),
                )
            }
        })?;
        let status = resp.status();
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
        let retry_after = resp.headers().get(header::RETRY_AFTER).cloned();
        let body: Bytes = resp.bytes().await.map_err(|e| {
            if e.is_timeout() {
                return deadline_exceeded(format!("the backend's answer came too late: {e}"));
            }
            AppError::bad_gateway(
                "sidecar_error",
                format!("reading the backend's answer failed: {e}"),
            )
        })?;
        if status.is_server_error()
            && let Some(err) = dapr_error(&body)
        {
            // A sidecar that gave up on the backend at our deadline.
            if status == StatusCode::GATEWAY_TIMEOUT {
                return Err(deadline_exceeded(format!(
                    "the backend did not answer in time ({})",
                    err.message
                )));
            }
            return Err(err);
        }
        let mut out = (status, body).into_response();
        if let Some(ct) = content_type {
            out.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        if let Some(ra) = retry_after {
            out.headers_mut().insert(header::RETRY_AFTER, ra);
        }
        Ok(out)
    }
}

/// A Dapr error body (`{"errorCode": ...}`) means the sidecars failed, not the backend.
fn dapr_error(body: &[u8]) -> Option<AppError> {
    #[derive(serde::Deserialize)]
    struct DaprBody {
        #[serde(rename = "errorCode")]
        error_code: String,
        #[serde(default)]
        message: String,
    }
    let b: DaprBody = serde_json::from_slice(body).ok()?;
    Some(if b.error_code == "ERR_DIRECT_INVOKE" {
        AppError::bad_gateway(
            "backend_unavailable",
            format!(
                "the backend could not be reached through Dapr: {}",
                b.message
            ),
        )
    } else {
        AppError::new(
            StatusCode::BAD_GATEWAY,
            "dapr_error",
            format!("{}: {}", b.error_code, b.message),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dapr_errors_are_recognised() {
        let e = dapr_error(br#"{"errorCode":"ERR_DIRECT_INVOKE","message":"failed to invoke"}"#)
            .unwrap();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_GATEWAY, "backend_unavailable")
        );
        assert!(dapr_error(br#"{"error":"store_error","message":"x"}"#).is_none());
    }
}
