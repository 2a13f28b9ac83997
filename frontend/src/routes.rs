//! The public API: `POST /book` and the queries, each validated here and invoked on the
//! backend through Dapr.

use appkit::error::AppError;
use appkit::http::{healthz, method_not_allowed, not_found, parse_json};
use appkit::request::{IDEMPOTENCY_KEY, first_bookable_day};
use appkit::wire::{HotelId, ReservationId, ReservationRequest};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::routing::{get, post};

use crate::invoke::Backend;

/// Bodies larger than this are refused with 413 before they are read.
pub const BODY_LIMIT: usize = 64 * 1024;

pub fn app(backend: Backend) -> Router {
    Router::new()
        .route("/book", post(book))
        .route("/hotels", get(hotels))
        .route("/hotels/{hotel_id}", get(of_hotel))
        .route("/hotels/{hotel_id}/availability", get(of_hotel))
        .route(
            "/reservations/{id}",
            get(of_reservation).delete(of_reservation),
        )
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(backend)
}

async fn book(
    State(b): State<Backend>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let req: ReservationRequest = parse_json(body)?;
    let keyed = headers.contains_key(IDEMPOTENCY_KEY);
    req.user.validate(first_bookable_day(keyed))?;
    let user = serde_json::to_vec(&req.user)
        .map_err(|e| AppError::bad_request("invalid_field", e.to_string()))?;
    b.call(
        Method::POST,
        &format!("/book_hotel/{}", req.hotel_id),
        &headers,
        Some(user),
    )
    .await
}

/// The queries and the cancel go on to the backend's route of the same path and query,
/// once the ids in it are known to be well-formed (so nothing else can reach the backend).
async fn pass_on(
    b: &Backend,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    b.call(method, path, headers, None).await
}

async fn hotels(
    State(b): State<Backend>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    pass_on(&b, Method::GET, &uri, &headers).await
}

/// `GET /hotels/{id}` and `GET /hotels/{id}/availability`.
async fn of_hotel(
    State(b): State<Backend>,
    Path(raw): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    HotelId::parse(&raw)?;
    pass_on(&b, Method::GET, &uri, &headers).await
}

/// `GET` and `DELETE /reservations/{id}`.
async fn of_reservation(
    State(b): State<Backend>,
    Path(raw): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    ReservationId::parse(&raw).ok_or_else(|| AppError::no_reservation(&raw))?;
    pass_on(&b, method, &uri, &headers).await
}
