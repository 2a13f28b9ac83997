//! The backend's HTTP API (what the frontend reaches through Dapr service invocation).

use std::sync::Arc;
use std::time::Duration;

use appkit::error::AppError;
use appkit::http::{
    hotel_id, method_not_allowed, not_found, parse_json, reservation_id, with_app_token,
};
use appkit::openapi::{
    self, Booked, Catalogue, DaprFailures, Found, HotelPath, KeyHeader, KeyReused, Nights,
    NightsQuery, NoHotel, NoReservation, OneHotel, Refused, ReservationPath, SoldOut, TooLarge,
};
use appkit::request::{deadline, idempotency_key};
use appkit::wire::{BookingRequest, Day, Hotel};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::booking::{Booker, BookingError, Call};

/// Bodies larger than this are refused with 413 before they are read.
pub const BODY_LIMIT: usize = 64 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub booker: Arc<Booker>,
    pub app_token: Option<Arc<str>>,
    /// The most time a request may take, unless its caller gives it less.
    pub budget: Duration,
}

impl AppState {
    /// The request's deadline, and for a change its `Idempotency-Key`.
    fn call(&self, headers: &HeaderMap) -> Result<Call, AppError> {
        Ok(Call {
            key: idempotency_key(headers)?,
            ..self.read(headers)
        })
    }

    /// A read has no change for a key to name: it ignores one.
    fn read(&self, headers: &HeaderMap) -> Call {
        Call {
            deadline: deadline(headers, self.budget),
            key: None,
        }
    }
}

/// What `/docs` says of the backend.
const ABOUT: &str = "Books hotel rooms: the service that Dapr service invocation reaches as \
    app id `backend`. Reservations and nights live in the Dapr state store; a Dapr lock (or \
    ETags) keeps a room from being sold twice. With `APP_API_TOKEN` set, every route but \
    `/healthz`, `/openapi.json` and `/docs` needs it in `dapr-api-token` (401 otherwise).";

pub fn app(state: AppState) -> Router {
    let routes = OpenApiRouter::new()
        .routes(routes!(book))
        .routes(routes!(hotels))
        .routes(routes!(hotel))
        .routes(routes!(availability))
        .routes(routes!(reservation, cancel))
        .routes(routes!(appkit::http::healthz));
    let r = openapi::with_docs(routes, "backend", ABOUT)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    with_app_token(r, state.app_token.clone()).with_state(state)
}

/// Books `rooms` rooms of a hotel for every night of the stay, or none.
#[utoipa::path(post, path = "/book_hotel/{hotel_id}", tag = "bookings",
    params(HotelPath, KeyHeader),
    request_body = BookingRequest,
    responses(Booked, Refused, NoHotel, SoldOut, TooLarge, KeyReused, DaprFailures))]
async fn book(
    State(s): State<AppState>,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let id = hotel_id(&raw_id)?;
    s.booker.hotel_exists(id)?;
    let call = s.call(&headers)?;
    let req: BookingRequest = parse_json(body)?;
    let booker = s.booker.clone();
    let reservation = finish(async move { booker.book(id, req, &call).await }).await?;
    Ok((StatusCode::CREATED, Json(reservation)).into_response())
}

/// The catalogue.
#[utoipa::path(get, path = "/hotels", tag = "hotels", responses(Catalogue))]
async fn hotels(State(s): State<AppState>) -> Json<Vec<Hotel>> {
    Json(s.booker.catalogue.all().cloned().collect())
}

/// One hotel of the catalogue.
#[utoipa::path(
    get,
    path = "/hotels/{hotel_id}",
    tag = "hotels",
    params(HotelPath),
    responses(OneHotel, Refused, NoHotel)
)]
async fn hotel(
    State(s): State<AppState>,
    Path(raw_id): Path<String>,
) -> Result<Json<Hotel>, AppError> {
    let id = hotel_id(&raw_id)?;
    s.booker
        .catalogue
        .get(id)
        .cloned()
        .map(Json)
        .ok_or_else(|| AppError::not_found("hotel_not_found", format!("no hotel with id {id}")))
}

#[derive(Deserialize)]
struct Range {
    check_in: Option<String>,
    check_out: Option<String>,
}

fn day(name: &str, v: Option<String>) -> Result<Day, AppError> {
    let v = v.ok_or_else(|| {
        AppError::bad_request(
            "invalid_field",
            format!("query parameter {name} is required"),
        )
    })?;
    Day::parse(&v).ok_or_else(|| {
        AppError::bad_request(
            "invalid_field",
            format!("{name} {v:?} is not a date like 2026-12-01"),
        )
    })
}

/// Rooms booked and left for each night from `check_in` up to `check_out`.
#[utoipa::path(
    get,
    path = "/hotels/{hotel_id}/availability",
    tag = "hotels",
    params(HotelPath, NightsQuery),
    responses(Nights, Refused, NoHotel, DaprFailures)
)]
async fn availability(
    State(s): State<AppState>,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<Range>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    let id = hotel_id(&raw_id)?;
    let Query(range) = query.map_err(|e| AppError::bad_request("invalid_field", e.body_text()))?;
    let (from, to) = (
        day("check_in", range.check_in)?,
        day("check_out", range.check_out)?,
    );
    let call = s.read(&headers);
    Ok(Json(s.booker.availability(id, from, to, &call).await?).into_response())
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
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let call = s.read(&headers);
    Ok(Json(s.booker.reservation(&reservation_id(&id)?, &call).await?).into_response())
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
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let id = reservation_id(&id)?;
    let call = s.call(&headers)?;
    let booker = s.booker.clone();
    Ok(Json(finish(async move { booker.cancel(&id, &call).await }).await?).into_response())
}

/// Runs a change to completion in its own task: a client that hangs up mid-request must not
/// cancel it between taking the lock and releasing it.
async fn finish<T: Send + 'static>(
    work: impl Future<Output = Result<T, BookingError>> + Send + 'static,
) -> Result<T, AppError> {
    match tokio::spawn(work).await {
        Ok(done) => Ok(done?),
        Err(e) => Err(AppError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("booking task failed: {e}"),
        )),
    }
}

/// Where the booking's errors become HTTP: each its status and code, the message as is.
impl From<BookingError> for AppError {
    fn from(e: BookingError) -> Self {
        let message = e.to_string();
        let (status, code) = match e {
            BookingError::Invalid { code, .. } => (StatusCode::BAD_REQUEST, code),
            BookingError::HotelNotFound(_) => (StatusCode::NOT_FOUND, "hotel_not_found"),
            BookingError::ReservationNotFound(_) => {
                (StatusCode::NOT_FOUND, "reservation_not_found")
            }
            BookingError::SoldOut(_) => (StatusCode::CONFLICT, "sold_out"),
            BookingError::KeyReused => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
            BookingError::Busy(_) => return AppError::busy(message, 1),
            BookingError::DeadlineExceeded(_) => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
            BookingError::OutcomeUnknown(_) => (StatusCode::GATEWAY_TIMEOUT, "outcome_unknown"),
            BookingError::DaprUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "dapr_unavailable")
            }
            BookingError::StoreUnavailable(_) => {
                return AppError::unavailable("store_unavailable", message).retry_after(1);
            }
            BookingError::Store(_) => (StatusCode::BAD_GATEWAY, "store_error"),
            BookingError::DaprDisabled => (StatusCode::SERVICE_UNAVAILABLE, "dapr_disabled"),
        };
        AppError::new(status, code, message)
    }
}
