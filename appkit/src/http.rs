//! The HTTP pieces both services' routers share: the fallbacks and health route that
//! answer like every other route, the ids a path carries, and reading a JSON body, each
//! with the API's error codes.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::AppError;
use crate::wire::{HotelId, ReservationId};

/// Fallback for unknown routes: JSON like every other error.
pub async fn not_found() -> AppError {
    AppError::not_found("not_found", "no such route")
}

/// Fallback for a known route called with the wrong method.
pub async fn method_not_allowed() -> AppError {
    AppError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// `GET /healthz`.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 204, description = "Serving")))]
pub async fn healthz() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// A hotel id from a path: not a number is a 400 `invalid_hotel_id`.
pub fn hotel_id(raw: &str) -> Result<u32, AppError> {
    Ok(HotelId::parse(raw)?.0)
}

/// A reservation id from a path: one that is not a UUID names nothing, so it is the same
/// 404 as an unknown reservation, and never reaches the store.
pub fn reservation_id(raw: &str) -> Result<ReservationId, AppError> {
    ReservationId::parse(raw).ok_or_else(|| {
        AppError::not_found("reservation_not_found", format!("no reservation {raw}"))
    })
}

/// Parses a JSON body read with a size limit: too large is 413, not JSON is 400
/// `invalid_json`, the wrong shape is 400 `invalid_field`.
pub fn parse_json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, AppError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body is too large",
            )
        } else {
            AppError::bad_request("invalid_body", rejection.body_text())
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => AppError::bad_request("invalid_field", e.to_string()),
        _ => AppError::bad_request("invalid_json", format!("the body is not valid JSON: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct T {
        a: u32,
    }

    #[test]
    fn syntax_and_shape_errors_have_their_own_codes() {
        let e = parse_json::<T>(Ok(Bytes::from_static(b"{nope"))).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "invalid_json")
        );
        let e = parse_json::<T>(Ok(Bytes::from_static(b"{\"a\":\"x\"}"))).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "invalid_field")
        );
        assert_eq!(
            parse_json::<T>(Ok(Bytes::from_static(b"{\"a\":1}")))
                .unwrap()
                .a,
            1
        );
    }
}
