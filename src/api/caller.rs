//! Who sent a request, as the customer routes need to know it: the
//! `domain::Caller` taken from the request's `Authorization` header.
//!
//! The operator token names the operator on every route. Otherwise, with
//! authentication off the caller is anyone, whatever the header says (as
//! before there was authentication); with `--auth jwt` the request needs a
//! customer's token, and one that is missing or not valid is answered `401`
//! before the handler runs, so nothing is read or changed. A handler takes
//! the caller first among its extractors for that reason.
//!
//! The rule a handler then applies is `Caller::may_see`: an order the caller
//! may not see is answered `404`, as if it did not exist.

use super::auth::bearer;
use super::jwt::TokenError;
use super::{ApiError, AppState};
use crate::domain::Caller;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers);
        if let (Some(operator), Some(token)) = (&state.operator, token) {
            if operator.matches(token) {
                return Ok(Caller::Operator);
            }
        }
        let Some(key) = &state.tokens else { return Ok(Caller::Anyone) };
        let token = token.ok_or(ApiError::Unauthenticated(TokenError::Missing))?;
        key.verify(token).map(Caller::Customer).map_err(ApiError::Unauthenticated)
    }
}

/// The answer for an order the caller may not see: the one a missing order gets.
pub(super) fn not_found(id: crate::domain::OrderId) -> ApiError {
    ApiError::NotFound(format!("order {id} not found"))
}
