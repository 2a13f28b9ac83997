//! The public API: `POST /book` and the queries, each validated here and invoked on the
//! backend through Dapr.

use appkit::error::AppError;
use appkit::http::{hotel_id, method_not_allowed, not_found, parse_json, reservation_id};
use appkit::openapi::{
    self, Booked, Catalogue, DaprFailures, Found, HotelPath, KeyHeader, KeyReused, Nights,
    NightsQuery, NoHotel, NoReservation, OneHotel, Refused, ReservationPath, SoldOut, TooLarge,
};
use appkit::request::{IDEMPOTENCY_KEY, first_bookable_day};
use appkit::wire::ReservationRequest;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::invoke::Backend;

/// Bodies larger than this are refused with 413 before they are read.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What `/docs` says of the frontend.
const ABOUT: &str = "The public booking API. Each request is checked here, then sent to the \
    `backend` app through Dapr service invocation; its answer comes back as it is. Errors are \
    `{\"error\": code, \"message\": ...}` with a stable code.";

pub fn app(backend: Backend) -> Router {
    let routes = OpenApiRouter::new()
        .routes(routes!(book))
        .routes(routes!(hotels))
        .routes(routes!(hotel))
        .routes(routes!(availability))
        .routes(routes!(reservation, cancel))
        .routes(routes!(appkit::http::healthz));
    openapi::with_docs(routes, "frontend", ABOUT)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(backend)
}

/// Books rooms of a hotel for a stay, through the backend.
#[utoipa::path(post, path = "/book", tag = "bookings",
    params(KeyHeader), request_body = ReservationRequest,
    responses(Booked, Refused, NoHotel, SoldOut, TooLarge, KeyReused, DaprFailures))]
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

/// The catalogue.
#[utoipa::path(
    get,
    path = "/hotels",
    tag = "hotels",
    responses(Catalogue, DaprFailures)
)]
async fn hotels(State(b): State<Backend>, headers: HeaderMap) -> Result<Response, AppError> {
    pass_on(&b, Method::GET, "/hotels", &headers).await
}

/// One hotel of the catalogue.
#[utoipa::path(
    get,
    path = "/hotels/{hotel_id}",
    tag = "hotels",
    params(HotelPath),
    responses(OneHotel, Refused, NoHotel, DaprFailures)
)]
async fn hotel(
    State(b): State<Backend>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let id = hotel_id(&raw)?;
    pass_on(&b, Method::GET, &format!("/hotels/{id}"), &headers).await
}

/// Rooms booked and left for each night. Its query (the dates) goes on as it came; the
/// backend checks it.
#[utoipa::path(
    get,
    path = "/hotels/{hotel_id}/availability",
    tag = "hotels",
    params(HotelPath, NightsQuery),
    responses(Nights, Refused, NoHotel, DaprFailures)
)]
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

/// A reservation, as booked.
#[utoipa::path(
    get,
    path = "/reservations/{id}",
    tag = "bookings",
    params(ReservationPath),
    responses(Found, NoReservation, DaprFailures)
)]
async fn reservation(
    State(b): State<Backend>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    of_reservation(&b, Method::GET, &raw, &headers).await
}

/// Cancels a reservation and frees its nights.
#[utoipa::path(
    delete,
    path = "/reservations/{id}",
    tag = "bookings",
    params(ReservationPath, KeyHeader),
    responses(Found, Refused, NoReservation, KeyReused, DaprFailures)
)]
async fn cancel(
    State(b): State<Backend>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    of_reservation(&b, Method::DELETE, &raw, &headers).await
}

/// The reservation routes go on to the backend's, by the canonical id.
async fn of_reservation(
    b: &Backend,
    method: Method,
    raw: &str,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    let id = reservation_id(raw)?;
    pass_on(b, method, &format!("/reservations/{id}"), headers).await
}
