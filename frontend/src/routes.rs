//! The public API: `POST /book` and the queries, each validated here and invoked on the
//! backend through Dapr.

use appkit::error::AppError;
use appkit::http::{healthz, hotel_id, method_not_allowed, not_found, parse_json, reservation_id};
use appkit::request::{IDEMPOTENCY_KEY, first_bookable_day};
use appkit::wire::ReservationRequest;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::routing::{get, post};

use crate::invoke::Backend;

/// Bodies larger than this are refused with 413 before they are read.
pub const BODY_LIMIT: usize = 64 * 1024;

pub fn app(backend: Backend) -> Router {
    Router::new()
        .route("/book", post(book))
        .route("/hotels", get(hotels))
        .route("/hotels/{hotel_id}", get(hotel))
        .route("/hotels/{hotel_id}/availability", get(availability))
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

/// The queries and the cancel go on to the backend's route for the same thing. The path
/// is rebuilt from the parsed ids (canonical, and nothing a client typed besides them);
/// only availability passes its query on.
async fn pass_on(
    b: &Backend,
    method: Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    b.call(method, path, headers, None).await
}

async fn hotels(State(b): State<Backend>, headers: HeaderMap) -> Result<Response, AppError> {
    pass_on(&b, Method::GET, "/hotels", &headers).await
}

async fn hotel(
    State(b): State<Backend>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let id = hotel_id(&raw)?;
    pass_on(&b, Method::GET, &format!("/hotels/{id}"), &headers).await
}

/// Its query (the dates) goes on as it came; the backend checks it.
async fn availability(
    State(b): State<Backend>,
    Path(raw): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let id = hotel_id(&raw)?;
    let mut path = format!("/hotels/{id}/availability");
    if let Some(q) = query {
        path.push('?');
        path.push_str(&q);
    }
    pass_on(&b, Method::GET, &path, &headers).await
}

/// `GET` and `DELETE /reservations/{id}`.
async fn of_reservation(
    State(b): State<Backend>,
    Path(raw): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let id = reservation_id(&raw)?;
    pass_on(&b, method, &format!("/reservations/{id}"), &headers).await
}
