//! The API's one error type and how each variant becomes a response.
//!
//! Client mistakes are 4xx with a stable `code`. An unreachable or overloaded
//! store or broker is a 503 with `Retry-After`, so clients and proxies back off instead of
//! hammering. Anything else is logged with its cause and shown as a plain 500.

use crate::domain::ValidationError;
use crate::messaging::BrokerError;
use crate::store::StoreError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{1}")]
    BadRequest(&'static str, String),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the request body stopped arriving before it was complete")]
    BodyTimeout,
    #[error("{0}")]
    NotFound(String),
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyConflict,
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    OutcomeUnknown(String),
    #[error("too many requests in flight; retry later")]
    Overloaded,
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::IdempotencyConflict => ApiError::IdempotencyConflict,
            StoreError::Unavailable(why) => ApiError::Unavailable(why),
            StoreError::OutcomeUnknown(why) => ApiError::OutcomeUnknown(why),
            StoreError::Other(e) => ApiError::Internal(e),
        }
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        match e {
            // A broker refused for its settings is not ready either.
            BrokerError::Unavailable(why) | BrokerError::Refused(why) => ApiError::Unavailable(why),
            BrokerError::Other(e) => ApiError::Internal(e),
        }
    }
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(code, _) => (StatusCode::BAD_REQUEST, code),
            ApiError::Invalid(e) => (StatusCode::UNPROCESSABLE_ENTITY, e.code),
            ApiError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ApiError::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::IdempotencyConflict => (StatusCode::CONFLICT, "idempotency_key_reused"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::OutcomeUnknown(_) => (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown"),
            ApiError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let message = match &self {
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "request failed");
                "internal error".to_owned()
            }
            ApiError::Unavailable(why) => {
                tracing::warn!(reason = %why, "answering 503");
                "the service is temporarily unavailable; retry later".to_owned()
            }
            ApiError::OutcomeUnknown(why) => {
                tracing::error!(reason = %why, "answering 503: the write may or may not be stored");
                "the order may or may not have been stored; retry with the same Idempotency-Key to find out".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = (status, Json(json!({ "error": { "code": code, "message": message } }))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
