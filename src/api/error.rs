//! The API's one error type and how each variant becomes a response.
//!
//! Client mistakes are 4xx with a stable `code`. An unreachable or overloaded
//! store or broker is a 503 with `Retry-After`, so clients and proxies back off instead of
//! hammering. Anything else is logged with its cause and shown as a plain 500.

use super::jwt::TokenError;
use crate::domain::ValidationError;
use crate::messaging::BrokerError;
use crate::store::StoreError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// Every `code` an error body can carry: the API's own and the domain's
/// validation codes. The description lists them as an enum; debug builds
/// (the tests, schema fuzzing) assert that every error answered is here.
pub const ERROR_CODES: &[&str] = &[
    // 400: a bad path, query, header or body encoding.
    "malformed_json",
    "unreadable_body",
    "invalid_order_id",
    "invalid_limit",
    "invalid_status",
    "invalid_cursor",
    "invalid_query",
    "invalid_idempotency_key",
    "invalid_last_event_id",
    // 401, 403: the admin routes' token.
    "unauthorized",
    "admin_disabled",
    // 401, 403: a customer's token (`--auth jwt`).
    "missing_token",
    "invalid_token",
    "token_expired",
    "customer_mismatch",
    // 404, 405, 408, 409, 413, 415.
    "not_found",
    "method_not_allowed",
    "request_timeout",
    "idempotency_key_reused",
    "invalid_transition",
    "body_too_large",
    "unsupported_media_type",
    // 422: the order breaks a rule.
    "missing_field",
    "empty_items",
    "too_many_items",
    "ambiguous_items",
    "invalid_sku",
    "invalid_quantity",
    "invalid_customer_id",
    "invalid_field",
    // 500, 503.
    "internal",
    "unavailable",
    "outcome_unknown",
    "overloaded",
    "too_many_streams",
];

/// The body of every error: `{"error":{"code","message"}}`.
#[derive(Serialize, ToSchema)]
pub(super) struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct ErrorDetail<'a> {
    /// Stable and machine readable.
    #[schema(value_type = ErrorCode)]
    code: &'a str,
    /// For people; its wording may change.
    message: String,
}

/// The `code` of an error body, as a schema.
pub(super) struct ErrorCode;

impl PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new().schema_type(Type::String).enum_values(Some(ERROR_CODES.iter().copied())).into()
    }
}
impl ToSchema for ErrorCode {}

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
    #[error("this route needs the operator token: send Authorization: Bearer TOKEN")]
    Unauthorized,
    #[error("the admin routes are off: start the server with ORDERFLOW_OPERATOR_TOKEN set to a secret, and send it as Authorization: Bearer TOKEN")]
    AdminDisabled,
    #[error(transparent)]
    Unauthenticated(TokenError),
    #[error(
        "the token names customer '{token}' but the body names '{body}': leave customer_id out, or send the token's"
    )]
    CustomerMismatch { token: String, body: String },
    #[error("{0}")]
    NotFound(String),
    #[error("this route does not answer this method; the Allow header lists those it does")]
    MethodNotAllowed,
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyConflict,
    /// The order's status does not allow the request; nothing changed.
    #[error("{0}")]
    InvalidTransition(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    OutcomeUnknown(String),
    #[error("too many requests in flight; retry later")]
    Overloaded,
    #[error("this process serves as many live streams as it may; retry later, or on another replica")]
    TooManyStreams,
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
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::AdminDisabled => (StatusCode::FORBIDDEN, "admin_disabled"),
            ApiError::Unauthenticated(TokenError::Missing) => (StatusCode::UNAUTHORIZED, "missing_token"),
            ApiError::Unauthenticated(TokenError::Expired) => (StatusCode::UNAUTHORIZED, "token_expired"),
            ApiError::Unauthenticated(TokenError::Invalid(_)) => (StatusCode::UNAUTHORIZED, "invalid_token"),
            ApiError::CustomerMismatch { .. } => (StatusCode::FORBIDDEN, "customer_mismatch"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::IdempotencyConflict => (StatusCode::CONFLICT, "idempotency_key_reused"),
            ApiError::InvalidTransition(_) => (StatusCode::CONFLICT, "invalid_transition"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::OutcomeUnknown(_) => (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown"),
            ApiError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ApiError::TooManyStreams => (StatusCode::SERVICE_UNAVAILABLE, "too_many_streams"),
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
        debug_assert!(ERROR_CODES.contains(&code), "error code {code} is missing from ERROR_CODES");
        let mut response = (status, Json(ErrorBody { error: ErrorDetail { code, message } })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
