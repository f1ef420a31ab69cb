//! The operator's token: what the `/admin/…` routes ask for.
//!
//! The routes are off unless `ORDERFLOW_OPERATOR_TOKEN` is set (each answers
//! `403` saying how to turn them on), and then need `Authorization: Bearer
//! TOKEN` (`401` otherwise, before anything is read or changed). The token is
//! kept only as its SHA-256 digest and a request's token is compared digest
//! to digest without an early exit, so neither the comparison's time nor a
//! memory dump tells how much of a guess was right.

use super::{ApiError, AppState};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

/// The variable that turns the admin routes on.
pub const TOKEN_VARIABLE: &str = "ORDERFLOW_OPERATOR_TOKEN";

/// The operator token's digest.
#[derive(Clone)]
pub struct OperatorToken([u8; 32]);

impl OperatorToken {
    pub fn new(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// The token from `ORDERFLOW_OPERATOR_TOKEN`; an empty one counts as none.
    pub fn from_env() -> Option<Self> {
        std::env::var(TOKEN_VARIABLE).ok().filter(|t| !t.trim().is_empty()).map(|t| Self::new(t.trim()))
    }

    /// Whether `given` is the token, in time that does not depend on where they differ.
    pub(super) fn matches(&self, given: &str) -> bool {
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        let diff = self.0.iter().zip(given.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

/// Proof that the request carries the operator token: an admin handler
/// takes it first, so nothing runs for a request without it.
pub(super) struct Operator;

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(token) = &state.operator else { return Err(ApiError::AdminDisabled) };
        match bearer(&parts.headers) {
            Some(t) if token.matches(t) => Ok(Operator),
            _ => Err(ApiError::Unauthorized),
        }
    }
}

/// The token of `Authorization: Bearer TOKEN`, if the request has one.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let given = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = given.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_itself_matches() {
        let token = OperatorToken::new("s3cret");
        assert!(token.matches("s3cret"));
        for wrong in ["", "s3cre", "s3cret ", "S3CRET", "s3cretx"] {
            assert!(!token.matches(wrong), "{wrong:?}");
        }
    }
}
