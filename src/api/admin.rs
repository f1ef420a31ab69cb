//! `/admin/…`: the operator's stock and dead-letter tools over HTTP, the
//! same the CLI offers (`orderflow stock`, `orderflow dlq`), for the
//! dashboard and for scripts.
//!
//! Every handler takes `Operator` first (`auth.rs`), so a request without
//! the token is refused before anything is read or changed. Replaying in
//! bulk is `replay.rs`.

use super::auth::Operator;
use super::orders::read_json;
use super::responses::{AdminReadErrors, AdminWriteErrors};
use super::{ApiError, AppState};
use crate::domain::{Sku, ValidationError};
use crate::messaging::DeadLetter;
use crate::store::StockLevel;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Most stock a SKU may hold: the CLI's bound.
const MAX_AVAILABLE: i64 = 1_000_000_000;
/// Most dead letters one listing shows.
pub(super) const MAX_LETTERS: usize = 10_000;

/// Every SKU's stock.
#[derive(Serialize, ToSchema)]
pub(super) struct StockList {
    stock: Vec<StockLevel>,
}

/// The body of `PUT /admin/stock/{sku}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SetStock {
    /// Units available to reserve from now on (reserved units are not counted).
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    #[serde(deserialize_with = "super::orders::whole_number")]
    available: i64,
}

/// Dead letters, oldest first.
#[derive(Serialize, ToSchema)]
pub(super) struct DeadLetterList {
    dead_letters: Vec<DeadLetter>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct LetterParams {
    /// Most dead letters to list (1 to 10000; 100 when absent).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
}

/// Every SKU's stock: available, reserved and shipped units.
#[utoipa::path(
    get,
    path = "/admin/stock",
    tag = "admin",
    operation_id = "admin_list_stock",
    security(("operator" = [])),
    responses((status = 200, description = "Every SKU, by name.", body = StockList), AdminReadErrors)
)]
pub(super) async fn list_stock(_: Operator, State(state): State<AppState>) -> Result<Json<StockList>, ApiError> {
    Ok(Json(StockList { stock: state.store.list_stock().await? }))
}

/// Sets a SKU's available stock, creating the SKU if it is new.
#[utoipa::path(
    put,
    path = "/admin/stock/{sku}",
    tag = "admin",
    operation_id = "admin_set_stock",
    security(("operator" = [])),
    params(("sku" = Sku, Path, description = "The SKU to set.")),
    request_body = SetStock,
    responses((status = 200, description = "The SKU's stock as now stored.", body = StockLevel), AdminWriteErrors)
)]
pub(super) async fn set_stock(
    _: Operator,
    State(state): State<AppState>,
    Path(sku): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<StockLevel>, ApiError> {
    let sku = Sku::parse(sku)?;
    let SetStock { available } = read_json(&headers, body)?;
    if !(0..=MAX_AVAILABLE).contains(&available) {
        let why = format!("available must be a whole number from 0 to {MAX_AVAILABLE}, got {available}");
        return Err(ValidationError::new("invalid_field", why).into());
    }
    state.store.set_stock(sku.as_str(), available).await?;
    let level = state.store.list_stock().await?.into_iter().find(|l| l.sku == sku.as_str());
    Ok(Json(level.unwrap_or(StockLevel { sku: sku.as_str().to_owned(), available, reserved: 0, shipped: 0 })))
}

/// Dead-lettered messages, oldest first: from the dead-letter table, the
/// RabbitMQ DLQs or the Redis `*-dlq` streams.
#[utoipa::path(
    get,
    path = "/admin/dead-letters",
    tag = "admin",
    operation_id = "admin_dead_letters",
    security(("operator" = [])),
    params(LetterParams),
    responses((status = 200, description = "The dead letters.", body = DeadLetterList), AdminReadErrors)
)]
pub(super) async fn dead_letters(
    _: Operator,
    State(state): State<AppState>,
    params: Result<Query<LetterParams>, QueryRejection>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::BadRequest("invalid_query", e.body_text()))?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=MAX_LETTERS).contains(&limit) {
        let why = format!("limit must be a whole number from 1 to {MAX_LETTERS}, got {limit}");
        return Err(ApiError::BadRequest("invalid_limit", why));
    }
    Ok(Json(DeadLetterList { dead_letters: state.broker.dead_letters(limit).await? }))
}
