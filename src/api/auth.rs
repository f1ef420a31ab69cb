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
    fn matches(&self, given: &str) -> bool {
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
        let given = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        let bearer = given.split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"));
        match bearer {
            Some((_, t)) if token.matches(t.trim()) => Ok(Operator),
            _ => Err(ApiError::Unauthorized),
        }
    }
}

/// Who asks to act on an order, as far as the API can tell. Without client
/// authentication every caller is `Anyone` and may cancel any order; once
/// callers are authenticated, a customer may cancel only their own orders
/// and the operator anyone's. The cancel handler asks `only_customer` and
/// checks the order's owner before it requests anything.
pub(super) enum Caller {
    Anyone,
}

impl Caller {
    /// The customer whose orders alone this caller may act on; `None` when
    /// it may act on every order.
    pub(super) fn only_customer(&self) -> Option<&str> {
        match self {
            Caller::Anyone => None,
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        Ok(Caller::Anyone)
    }
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
