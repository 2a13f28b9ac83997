//! The internal listener: peer sidecars send invocations for this sidecar's app here.
//! It has no routes: every request is for the app, path and query as they are.
//! It is not part of the public API, so the public API token does not apply; instead each
//! call must carry the registry's secret, which only sidecars that can read the registry
//! folder have (real daprd uses its internal gRPC port, with mTLS, for the same hop). The
//! caller id the app is told is then one a sidecar of this registry set.
//!
//! Under mTLS (`crate::mtls`) the port speaks only TLS and the caller's certificate, with
//! its SPIFFE id, has been verified before a request arrives: that id gives the caller id
//! and namespace the app is told, whatever the request's headers say, and no secret is
//! needed or looked at.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse as _, Response};

use crate::api::Api;
use crate::errors::ApiError;
use crate::invoke::{CALLEE, CALLER, CALLER_NS, Call, PEER_REFUSED, PEER_SECRET};
use crate::mtls::Peer;

/// Refusals are logged, but a flood of them writes one line a second, not one each.
fn warn_refused(path: &str, why: &str) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    if super::once_a_second(&LAST) {
        tracing::warn!(path, "refused a call on the internal port: {why}");
    }
}

pub fn router(api: Arc<Api>) -> Router {
    Router::new().fallback(deliver).with_state(api)
}

async fn deliver(
    State(api): State<Arc<Api>>,
    mut req: Request<Body>,
) -> Result<Response, ApiError> {
    // Only the mTLS listener knows its peers; there nothing else proves a caller.
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<Peer>>() {
        let identity = peer.identity.clone();
        let headers = [
            (CALLER, identity.app_id.as_str()),
            (CALLER_NS, identity.namespace.as_str()),
            (CALLEE, api.config.app_id.as_str()),
        ];
        for (name, value) in headers {
            let value = HeaderValue::from_str(value).map_err(|_| ApiError::not_a_peer())?;
            req.headers_mut().insert(name, value);
        }
        return Ok(pass_on(&api, req).await);
    }
    let given = req.headers().get(PEER_SECRET).map(HeaderValue::as_bytes);
    let expected = api.invoker.registry().secret().unwrap_or_default();
    if expected.is_empty() || !appkit::token::matches(given, expected) {
        warn_refused(req.uri().path(), "no registry secret");
        // Marked, so that a calling sidecar tells this refusal from an app's own 401.
        return Ok(([(PEER_REFUSED, "1")], ApiError::not_a_peer()).into_response());
    }
    Ok(pass_on(&api, req).await)
}

/// Serves the call; an error of this sidecar's own (the app unreachable or unhealthy, its
/// answer too large) also carries its gRPC status, so that a gRPC caller gets its code, as
/// daprd's callee answers its caller in gRPC.
async fn pass_on(api: &Api, req: Request<Body>) -> Response {
    let path = req.uri().path().to_string();
    let served = async {
        let call = Call::read(&api.invoker, path, req).await?;
        api.invoker.serve(call).await
    };
    served.await.unwrap_or_else(|e| {
        let status = tonic::Status::from(e.clone());
        let mut answer = e.into_response();
        if let Some(v) = crate::appcallback::status_header(&status) {
            answer
                .headers_mut()
                .insert(crate::invoke::APP_GRPC_STATUS, v);
        }
        answer
    })
}
