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
use crate::wire::{Availability, Hotel, NightAvailability, Reservation};

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

// What the two services' operations share, named once, so that the frontend and the
// backend describe the same operation the same way.

/// `{hotel_id}`: a hotel of the catalogue (a number).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct HotelPath {
    pub hotel_id: u32,
}

/// `{id}`: a reservation's id (a UUID; anything else names no reservation: 404).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ReservationPath {
    #[param(format = Uuid)]
    pub id: String,
}

/// The nights asked about: from `check_in` up to, not including, `check_out`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NightsQuery {
    #[param(format = Date, example = "2027-01-10")]
    pub check_in: String,
    #[param(format = Date, example = "2027-01-12")]
    pub check_out: String,
}

/// A change's key: a retry under the same key is answered from the first, never made
/// twice; the same key with another request is a 422.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct KeyHeader {
    /// 1 to 128 letters, digits or `-_.:` (a UUID fits).
    #[param(rename = "Idempotency-Key", pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    pub idempotency_key: Option<String>,
}

/// Declares response types for `responses(...)`: each one status and body, its doc
/// comment the description.
macro_rules! responses {
    ($($(#[$doc:meta])* $name:ident: $status:literal $body:ty;)*) => {
        $(
            $(#[$doc])*
            #[derive(utoipa::IntoResponses)]
            #[response(status = $status)]
            pub struct $name(pub $body);
        )*
    };
}

responses! {
    /// A request that breaks a rule, refused before any work is done: `invalid_json`,
    /// `invalid_field`, `invalid_dates`, `invalid_rooms`, `invalid_hotel_id`,
    /// `invalid_idempotency_key`.
    Refused: 400 ErrorBody;
    /// No such hotel (`hotel_not_found`).
    NoHotel: 404 ErrorBody;
    /// No reservation with this id (`reservation_not_found`).
    NoReservation: 404 ErrorBody;
    /// A night of the stay has too few rooms left (`sold_out`; the message names it).
    SoldOut: 409 ErrorBody;
    /// A body over 64 KiB (`body_too_large`).
    TooLarge: 413 ErrorBody;
    /// The `Idempotency-Key` was used with another request (`idempotency_key_reused`).
    KeyReused: 422 ErrorBody;
    /// Booked: the reservation.
    Booked: 201 Reservation;
    /// The reservation: as booked (GET), or as it was when cancelled (DELETE).
    Found: 200 Reservation;
    /// The hotel.
    OneHotel: 200 Hotel;
    /// Every hotel of the catalogue.
    Catalogue: 200 Vec<Hotel>;
    /// Rooms booked and left for each night asked about.
    Nights: 200 Availability;
}

/// How a request through Dapr ends when a sidecar, the other service or the store fails.
#[derive(utoipa::IntoResponses)]
pub enum DaprFailures {
    /// The store or the backend failed (`store_error`, `backend_unavailable`, ...).
    #[response(status = 502)]
    BadGateway(ErrorBody),
    /// Busy (`busy`, with `Retry-After`), the store failing (`store_unavailable`, with
    /// `Retry-After`), or the sidecar unreachable (`dapr_unavailable`).
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// The request's time ran out (`deadline_exceeded`), or a change's outcome could not be
    /// read back in time (`outcome_unknown`: retry under the same `Idempotency-Key`).
    #[response(status = 504)]
    Timeout(ErrorBody),
}

/// The schemas the shared responses refer to.
#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(ErrorBody, Reservation, Hotel, Availability, NightAvailability)))]
struct Shared;
