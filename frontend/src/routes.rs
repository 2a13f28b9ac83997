//! The public API: `POST /book` and the queries, each validated here and invoked on the
//! backend through Dapr.

use appkit::error::AppError;
use appkit::http::{healthz, method_not_allowed, not_found, parse_json};
use appkit::request::{IDEMPOTENCY_KEY, first_bookable_day};
use appkit::wire::{HotelId, ReservationId, ReservationRequest};
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
        .route("/reservations/{id}", get(reservation).delete(cancel))
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

fn hotel_id(raw: &str) -> Result<u32, AppError> {
    Ok(HotelId::parse(raw)?.0)
}

fn reservation_id(raw: &str) -> Result<ReservationId, AppError> {
    ReservationId::parse(raw).ok_or_else(|| AppError::no_reservation(raw))
}

async fn hotels(State(b): State<Backend>, headers: HeaderMap) -> Result<Response, AppError> {
    b.call(Method::GET, "/hotels", &headers, None).await
}

async fn hotel(
    State(b): State<Backend>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    b.call(
        Method::GET,
        &format!("/hotels/{}", hotel_id(&raw)?),
        &headers,
        None,
    )
    .await
}

async fn availability(
    State(b): State<Backend>,
    Path(raw): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let mut path = format!("/hotels/{}/availability", hotel_id(&raw)?);
    if let Some(q) = q {
        path.push('?');
        path.push_str(&q);
    }
    b.call(Method::GET, &path, &headers, None).await
}

async fn reservation(
    State(b): State<Backend>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    b.call(
        Method::GET,
        &format!("/reservations/{}", reservation_id(&raw)?),
        &headers,
        None,
    )
    .await
}

async fn cancel(
    State(b): State<Backend>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    b.call(
        Method::DELETE,
        &format!("/reservations/{}", reservation_id(&raw)?),
        &headers,
        None,
    )
    .await
}
