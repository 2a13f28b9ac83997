//! The internal listener: peer sidecars send invocations for this sidecar's app here.
//! It has no routes: every request is for the app, path and query as they are.
//! It is not part of the public API, so the public API token does not apply; instead each
//! call must carry the registry's secret, which only sidecars that can read the registry
//! folder have (real daprd uses its internal gRPC port, with mTLS, for the same hop). The
//! caller id the app is told is then one a sidecar of this registry set.
//!
//! Under mTLS (`crate::mtls`) the port speaks only TLS and the caller's certificate has
//! been verified before a request arrives: its SPIFFE id is the caller id the app is told,
//! whatever the request's headers say, and no secret is needed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse as _, Response};

use crate::api::Api;
use crate::errors::ApiError;
use crate::invoke::{CALLER, Call, PEER_REFUSED, PEER_SECRET};
use crate::mtls::Peer;

/// Refusals are logged, but a flood of them writes one line a second, not one each.
fn warn_at_most_each_second(path: &str) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST.swap(now, Ordering::Relaxed) != now {
        tracing::warn!(
            path,
            "refused a call on the internal port without the registry's secret"
        );
    }
}

pub fn router(api: Arc<Api>) -> Router {
    Router::new().fallback(deliver).with_state(api)
}

async fn deliver(
    State(api): State<Arc<Api>>,
    mut req: Request<Body>,
) -> Result<Response, ApiError> {
    let verified = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .and_then(|ConnectInfo(peer)| peer.identity.clone());
    if let Some(identity) = verified {
        let caller = HeaderValue::from_str(&identity.app_id).map_err(|_| ApiError::not_a_peer())?;
        req.headers_mut().insert(CALLER, caller);
        return pass_on(&api, req).await;
    }
    let given = req.headers().get(PEER_SECRET).map(HeaderValue::as_bytes);
    let expected = api.invoker.registry().secret().unwrap_or_default();
    if expected.is_empty() || !appkit::token::matches(given, expected) {
        warn_at_most_each_second(req.uri().path());
        // Marked, so that a calling sidecar tells this refusal from an app's own 401.
        return Ok(([(PEER_REFUSED, "1")], ApiError::not_a_peer()).into_response());
    }
    pass_on(&api, req).await
}

async fn pass_on(api: &Api, req: Request<Body>) -> Result<Response, ApiError> {
    let path = req.uri().path().to_string();
    let call = Call::read(&api.invoker, path, req).await?;
    api.invoker.deliver(call).await
}
