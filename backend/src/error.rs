//! One error type for every handler: a stable JSON message for clients, the cause in the log.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// What went wrong, as the client is told.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The path's call SID is not `CA` + 32 hex digits.
    #[error("Invalid call SID")]
    BadCallSid,
    /// Bad request input other than the SID.
    #[error("{0}")]
    BadRequest(&'static str),
    /// `/api/` needs a bearer token and none (or a wrong one) was given.
    #[error("Unauthorized")]
    Unauthorized,
    /// A webhook without a valid `X-Twilio-Signature`.
    #[error("Invalid Twilio signature")]
    BadSignature,
    /// The call has no recording (none stored, none at Twilio).
    #[error("Recording URL not available")]
    NoRecording,
    /// Twilio says the recording's media does not exist.
    #[error("Recording file not found")]
    FileNotFound,
    /// Twilio failed (timeout, reset, 5xx, 429 past the budget); retry later.
    #[error("Failed to fetch recording")]
    Upstream {
        /// What happened, for the log only.
        cause: String,
    },
    /// A failure of ours (disk, database).
    #[error("Internal error")]
    Internal {
        /// What happened, for the log only.
        cause: String,
    },
}

/// Seconds a client is told to wait after a Twilio failure.
pub const RETRY_AFTER_SECS: u64 = 5;

impl AppError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadCallSid | AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::BadSignature => StatusCode::FORBIDDEN,
            AppError::NoRecording | AppError::FileNotFound => StatusCode::NOT_FOUND,
            AppError::Upstream { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            AppError::Upstream { cause } => {
                tracing::warn!(status = status.as_u16(), cause = %cause, "error response: {self}")
            }
            AppError::Internal { cause } => {
                tracing::error!(status = status.as_u16(), cause = %cause, "error response: {self}")
            }
            _ => tracing::info!(status = status.as_u16(), error = %self, "request refused"),
        }
        let mut response =
            (status, axum::Json(json!({ "error": self.to_string() }))).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if matches!(self, AppError::Upstream { .. }) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if matches!(self, AppError::Unauthorized) {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
