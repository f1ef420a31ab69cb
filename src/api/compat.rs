//! Routes older clients already call, answered by the same pipeline.
//!
//! `POST /order` takes the same bodies as `POST /orders`; `POST /order/place`
//! needs no body and places an order with no items for an anonymous customer
//! (for the token's customer, with `--auth jwt`); `GET /order/get/{id}`
//! answers just the id and status. Who may do what is as on the main routes
//! (`caller.rs`).

use super::orders::{accept, parse_id};
use super::responses::{Accepted, PlaceEmptyErrors, PlaceErrors, ReadErrors};
use super::schema::{IdempotencyKeyHeader, OrderRequest, OrderStatus};
use super::{ApiError, AppState};
use crate::domain::{Caller, CustomerId, NewOrder, OrderId};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Place an order (the older clients' route; same as `POST /orders`).
#[utoipa::path(
    post,
    path = "/order",
    tag = "compatible",
    operation_id = "place_order_compat",
    security((), ("customer" = []), ("operator" = [])),
    params(IdempotencyKeyHeader),
    request_body(content = OrderRequest, content_type = "application/json"),
    responses(Accepted, PlaceErrors)
)]
pub(super) async fn create(
    caller: Caller,
    state: State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    super::orders::create(caller, state, headers, body).await
}

/// Place an order with no items (no body), for the customer `anonymous`, or
/// the token's customer when the server checks tokens.
#[utoipa::path(
    post,
    path = "/order/place",
    tag = "compatible",
    operation_id = "place_empty_order",
    security((), ("customer" = []), ("operator" = [])),
    params(IdempotencyKeyHeader),
    responses(Accepted, PlaceEmptyErrors)
)]
pub(super) async fn place_empty(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let customer = caller.customer().cloned().unwrap_or_else(CustomerId::anonymous);
    let order = NewOrder::new(customer, Vec::new())?;
    accept(&state, &caller, &headers, order).await
}

/// Read an order's id and status.
#[utoipa::path(
    get,
    path = "/order/get/{id}",
    tag = "compatible",
    operation_id = "get_order_status",
    security((), ("customer" = []), ("operator" = [])),
    params(("id" = OrderId, Path, description = "The order's id.")),
    responses((status = 200, description = "The order's status.", body = OrderStatus), ReadErrors)
)]
pub(super) async fn get_status(
    caller: Caller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&raw)?;
    // The order's JSON (from the cache, or the store), whose id and status are the answer.
    match super::read::order_json(&state, &caller, id).await? {
        Some(json) => {
            let order: OrderStatus =
                serde_json::from_str(&json).map_err(|e| ApiError::Internal(anyhow::anyhow!("an order's JSON: {e}")))?;
            Ok(Json(order).into_response())
        }
        None => Err(ApiError::NotFound(format!("order {id} not found"))),
    }
}
