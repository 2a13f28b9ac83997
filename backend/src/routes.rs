//! The backend's HTTP API (what the frontend reaches through Dapr service invocation).

use std::sync::Arc;
use std::time::Duration;

use appkit::error::AppError;
use appkit::http::{healthz, hotel_id, method_not_allowed, not_found, parse_json, reservation_id};
use appkit::request::{deadline, idempotency_key};
use appkit::wire::{BookingRequest, Day, Hotel};
use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

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
    fn call(&self, headers: &HeaderMap) -> Result<Call, AppError> {
        Ok(Call {
            deadline: deadline(headers, self.budget),
            key: idempotency_key(headers)?,
        })
    }
}

pub fn app(state: AppState) -> Router {
    let mut r = Router::new()
        .route("/book_hotel/{hotel_id}", post(book))
        .route("/hotels", get(hotels))
        .route("/hotels/{hotel_id}", get(hotel))
        .route("/hotels/{hotel_id}/availability", get(availability))
        .route("/reservations/{id}", get(reservation).delete(cancel))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    if state.app_token.is_some() {
        r = r.layer(middleware::from_fn_with_state(
            state.clone(),
            require_app_token,
        ));
    }
    r.route("/healthz", get(healthz)).with_state(state)
}

/// With `APP_API_TOKEN` set, only the sidecar (which sends it) may call the app.
async fn require_app_token(State(s): State<AppState>, req: Request<Body>, next: Next) -> Response {
    let expected = s.app_token.as_deref().unwrap_or_default();
    let given = req.headers().get(appkit::token::HEADER);
    let ok = appkit::token::matches(given.map(HeaderValue::as_bytes), expected);
    if !ok {
        return AppError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong dapr-api-token",
        )
        .into_response();
    }
    next.run(req).await
}

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

async fn hotels(State(s): State<AppState>) -> Json<Vec<Hotel>> {
    Json(s.booker.catalogue.all().cloned().collect())
}

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
    let call = s.call(&headers)?;
    Ok(Json(s.booker.availability(id, from, to, &call).await?).into_response())
}

async fn reservation(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let call = s.call(&headers)?;
    Ok(Json(s.booker.reservation(&reservation_id(&id)?, &call).await?).into_response())
}

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
            BookingError::Store(_) => (StatusCode::BAD_GATEWAY, "store_error"),
            BookingError::DaprDisabled => (StatusCode::SERVICE_UNAVAILABLE, "dapr_disabled"),
        };
        AppError::new(status, code, message)
    }
}
