//! Calls to the backend through Dapr service invocation over HTTP:
//! `http://127.0.0.1:$DAPR_HTTP_PORT/v1.0/invoke/$BACKEND_APP_ID/method/...`, on the
//! apps' pooled keep-alive line to their sidecar (`appkit::origin`), `traceparent`/
//! `tracestate` and `Idempotency-Key` passed along, and the backend's status and body
//! handed back as they are. Each call has the request's deadline: the backend is told the
//! time left (`x-request-timeout-ms`), and a backend that has not answered by then is a
//! 504. Failures of the Dapr path itself become 502/503.

use std::sync::Arc;
use std::time::{Duration, Instant};

use appkit::error::AppError;
use appkit::origin::{Failure, Origin};
use appkit::request::{
    IDEMPOTENCY_KEY, TIMEOUT_HEADER, deadline, deadline_exceeded, idempotency_key,
    timeout_for_next_hop,
};
use appkit::settings::DaprSettings;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::Full;

const PASSED: [&str; 2] = ["traceparent", "tracestate"];

/// Shared by every request: axum hands each handler its own clone of the state, so a
/// clone is one reference count, not a copy of the client and its strings.
#[derive(Clone)]
pub struct Backend(Arc<Line>);

struct Line {
    line: Origin,
    /// `/v1.0/invoke/{backend}/method`.
    base: String,
    token: Option<HeaderValue>,
    /// The most time one request may take, unless its caller gives it less.
    budget: Duration,
}

impl Backend {
    /// Calls through the sidecar's HTTP port, or its Unix domain socket when `settings`
    /// name one (`DAPR_HTTP_ENDPOINT=unix:///path`).
    pub fn new(settings: &DaprSettings, budget: Duration) -> anyhow::Result<Self> {
        let line = Origin::sidecar(settings);
        let base = format!("/v1.0/invoke/{}/method", settings.backend_app_id);
        line.uri(&base).map_err(|e| {
            anyhow::anyhow!(
                "BACKEND_APP_ID {:?} cannot be in a URL: {e}",
                settings.backend_app_id
            )
        })?;
        Ok(Backend(Arc::new(Line {
            line,
            base,
            token: settings
                .api_token
                .as_deref()
                .map(HeaderValue::from_str)
                .transpose()?,
            budget,
        })))
    }

    /// Invokes `path` (with its query) on the backend.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        incoming: &HeaderMap,
        json: Option<Vec<u8>>,
    ) -> Result<Response, AppError> {
        let this = &*self.0;
        let deadline = deadline(incoming, this.budget);
        // A key names a change; a read has none to name, so a read ignores it.
        let key = if method == Method::GET {
            None
        } else {
            idempotency_key(incoming)?
        };
        let uri = this
            .line
            .uri(&format!("{}{path}", this.base))
            .map_err(|e| AppError::bad_request("invalid_path", format!("{path}: {e}")))?;
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(TIMEOUT_HEADER, timeout_for_next_hop(deadline));
        for name in PASSED {
            if let Some(v) = incoming.get(name) {
                req = req.header(name, v);
            }
        }
        if let Some(key) = &key {
            req = req.header(IDEMPOTENCY_KEY, key);
        }
        if let Some(t) = &this.token {
            req = req.header(appkit::token::HEADER, t);
        }
        let body = match json {
            Some(body) => {
                req = req.header(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Bytes::from(body)
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(body)).map_err(|e| {
            AppError::bad_request(
                "invalid_header",
                format!("a header cannot be passed on: {e}"),
            )
        })?;
        let left = deadline.saturating_duration_since(Instant::now());
        let answer = this.line.exchange(req, Some(left)).await;
        let (parts, body) = answer.map_err(|failure| match failure {
            Failure::Late if key.is_some() => deadline_exceeded(
                "the backend did not answer in time; a change may or may not have been made: \
                 retry with the same Idempotency-Key to know",
            ),
            Failure::Late => deadline_exceeded("the backend did not answer in time"),
            Failure::Connecting(e) => AppError::unavailable(
                "sidecar_unavailable",
                format!("the Dapr sidecar is not reachable: {e}"),
            ),
            Failure::Sending(e) => AppError::bad_gateway(
                "sidecar_error",
                format!("calling the Dapr sidecar failed: {e}"),
            ),
            Failure::Reading(e) => AppError::bad_gateway(
                "sidecar_error",
                format!("reading the backend's answer failed: {e}"),
            ),
            // This line has no limit on answers.
            too_large @ Failure::TooLarge(_) => AppError::bad_gateway(
                "sidecar_error",
                format!("reading the backend's answer failed: {too_large}"),
            ),
        })?;
        let status = parts.status;
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
        for name in [header::CONTENT_TYPE, header::RETRY_AFTER] {
            if let Some(v) = parts.headers.get(&name) {
                out.headers_mut().insert(name, v.clone());
            }
        }
        Ok(out)
    }
}

/// A Dapr error body (`{"errorCode": ...}`) means the sidecars failed, not the backend.
fn dapr_error(body: &[u8]) -> Option<AppError> {
    let b = appkit::dapr::ErrorBody::parse(body)?;
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
