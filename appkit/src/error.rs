//! The services' one error type: a status, a stable code and a message, answered as
//! `{"error": code, "message": ...}`. Client mistakes are 4xx; a sidecar or store that
//! fails is 502/503; nothing is ever a panic.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct AppError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (503 when busy).
    pub retry_after: Option<u32>,
}

/// Every error the services answer: a stable code (e.g. `sold_out`) and a message.
#[derive(Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
pub struct ErrorBody {
    #[schema(example = "sold_out")]
    pub error: String,
    pub message: String,
}

/// A request that breaks a rule of the API is a 400 with the rule's code.
impl From<crate::wire::Invalid> for AppError {
    fn from(i: crate::wire::Invalid) -> Self {
        AppError::bad_request(i.code, i.message)
    }
}

impl AppError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AppError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn busy(message: impl Into<String>, retry_after: u32) -> Self {
        Self::unavailable("busy", message).retry_after(retry_after)
    }

    /// The same error with a `Retry-After` of `seconds`.
    pub fn retry_after(self, seconds: u32) -> Self {
        AppError {
            retry_after: Some(seconds),
            ..self
        }
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    pub fn bad_gateway(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, code, message)
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for AppError {}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code.to_string(),
            message: self.message,
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
