//! The services' OpenAPI 3.1 documents. Each router is built with `utoipa-axum` from the
//! handlers' `#[utoipa::path]` annotations, so a route and its entry in the spec are one
//! thing and cannot drift apart. Served at `/openapi.json`, and as a page at `/docs` (Scalar,
//! where the FastAPI original served Swagger UI).

use axum::Router;
use axum::http::header;
use axum::routing::get;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_scalar::{Scalar, Servable as _};

use crate::error::ErrorBody;

/// The router, with `/openapi.json` and `/docs` for the spec its routes make.
pub fn with_docs<S>(routes: OpenApiRouter<S>, title: &str, description: &str) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let (router, mut spec) = routes.split_for_parts();
    spec.info.title = title.to_string();
    spec.info.description = Some(description.to_string());
    spec.info.version = env!("CARGO_PKG_VERSION").to_string();
    spec.info.license = None;
    spec.merge(Shared::openapi());
    let json = spec.to_pretty_json().unwrap_or_default();
    router
        .route(
            "/openapi.json",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], json) }),
        )
        .merge(Router::from(Scalar::with_url("/docs", spec)))
}

/// The refusal of a request that breaks a rule, before any work is done.
#[derive(utoipa::IntoResponses)]
pub enum Refused {
    /// A field, date, room count, id or `Idempotency-Key` that breaks a rule (`invalid_json`,
    /// `invalid_field`, `invalid_dates`, `invalid_rooms`, `invalid_hotel_id`, ...).
    #[response(status = 400)]
    Invalid(ErrorBody),
}

/// How a request through Dapr ends when a sidecar, the other service or the store fails.
#[derive(utoipa::IntoResponses)]
pub enum DaprFailures {
    /// The store or the backend failed (`store_error`, `backend_unavailable`, ...).
    #[response(status = 502)]
    BadGateway(ErrorBody),
    /// Busy (`busy`, with `Retry-After`) or the sidecar unreachable (`dapr_unavailable`).
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// The request's time ran out (`deadline_exceeded`), or a change's outcome could not be
    /// read back in time (`outcome_unknown`: retry under the same `Idempotency-Key`).
    #[response(status = 504)]
    Timeout(ErrorBody),
}

/// The `ErrorBody` schema every error response refers to.
#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(ErrorBody)))]
struct Shared;
