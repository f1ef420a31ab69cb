//! Routes older clients already call, answered by the same pipeline.
//!
//! `POST /order` takes the same bodies as `POST /orders`; `POST /order/place`
//! needs no body and places an order with no items for an anonymous customer;
//! `GET /order/get/{id}` answers just the id and status.

use super::orders::{accept, parse_id};
use super::{ApiError, AppState};
use crate::domain::{CustomerId, NewOrder};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

pub(super) async fn place_empty(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let order = NewOrder::new(CustomerId::anonymous(), Vec::new())?;
    accept(&state, &headers, order).await
}

pub(super) async fn get_status(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&raw)?;
    match state.store.get_order(id).await? {
        Some(order) => Ok(Json(json!({ "order_id": order.order_id, "status": order.status })).into_response()),
        None => Err(ApiError::NotFound(format!("order {id} not found"))),
    }
}
