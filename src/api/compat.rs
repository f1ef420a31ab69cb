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

pub(super) async fn place_empty(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let order = NewOrder::new(CustomerId::anonymous(), Vec::new())?;
    accept(&state, &headers, order).await
}

/// What `GET /order/get/{id}` answers, taken from the order's JSON.
#[derive(serde::Deserialize, serde::Serialize)]
struct IdAndStatus {
    order_id: String,
    status: String,
}

pub(super) async fn get_status(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&raw)?;
    match super::read::order_json(&state, id).await? {
        Some(json) => {
            let order: IdAndStatus =
                serde_json::from_str(&json).map_err(|e| ApiError::Internal(anyhow::anyhow!("an order's JSON: {e}")))?;
            Ok(Json(order).into_response())
        }
        None => Err(ApiError::NotFound(format!("order {id} not found"))),
    }
}
