//! The internal listener: peer sidecars send invocations for this sidecar's app here.
//! It has no routes: every request is for the app, path and query as they are.
//! It listens on loopback only and is not part of the public API, so the public API token
//! does not apply (real daprd uses its internal gRPC port, with mTLS, for the same hop).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;

use crate::api::Api;
use crate::errors::ApiError;
use crate::invoke::Call;

pub fn router(api: Arc<Api>) -> Router {
    Router::new().fallback(deliver).with_state(api)
}

async fn deliver(State(api): State<Arc<Api>>, req: Request<Body>) -> Result<Response, ApiError> {
    let path = req.uri().path().to_string();
    let call = Call::read(&api.invoker, path, req).await?;
    api.invoker.deliver(call).await
}
