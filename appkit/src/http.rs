//! The HTTP pieces both services' routers share: the fallbacks and health route that
//! answer like every other route, the ids a path carries, and reading a JSON body, each
//! with the API's error codes.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
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

/// With `APP_API_TOKEN` set (`token`), only the sidecar, which sends it in
/// `dapr-api-token`, may call the app: every route but health and the API's own
/// description answers 401 without it.
pub fn with_app_token<S>(router: Router<S>, token: Option<Arc<str>>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    match token {
        Some(token) => router.layer(middleware::from_fn_with_state(token, require_app_token)),
        None => router,
    }
}

/// Open without the app token: health, and the API's own description.
fn is_open(req: &Request) -> bool {
    matches!(*req.method(), Method::GET | Method::HEAD)
        && matches!(req.uri().path(), "/healthz" | "/openapi.json" | "/docs")
}

async fn require_app_token(State(expected): State<Arc<str>>, req: Request, next: Next) -> Response {
    let given = req.headers().get(crate::token::HEADER_NAME);
    if is_open(&req) || crate::token::matches(given.map(HeaderValue::as_bytes), &expected) {
        return next.run(req).await;
    }
    AppError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong dapr-api-token",
    )
    .into_response()
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
