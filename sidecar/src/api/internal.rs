//! The internal listener: peer sidecars send invocations for this sidecar's app here.
//! It has no routes: every request is for the app, path and query as they are.
//! It listens on loopback only and is not part of the public API, so the public API token
//! does not apply (real daprd uses its internal gRPC port, with mTLS, for the same hop).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};

use crate::invoke::Call;
use crate::runtime::Runtime;

pub fn router(rt: Arc<Runtime>) -> Router {
    Router::new().fallback(deliver).with_state(rt)
}

async fn deliver(State(rt): State<Arc<Runtime>>, req: Request<Body>) -> Response {
    let (parts, body) = req.into_parts();
    let body = match rt.invoker.read_body(body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let call = Call {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
    };
    match rt.invoker.deliver(call).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}
