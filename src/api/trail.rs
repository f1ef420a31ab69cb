//! `GET /orders/{id}/trail`: what happened to an order besides its statuses
//! (the notifications recorded about it, and its messages still waiting to
//! be delivered, with their failed attempts), for the dashboard's order page.

use super::orders::parse_id;
use super::responses::ReadErrors;
use super::{ApiError, AppState};
use crate::domain::{Caller, OrderId};
use crate::store::OrderTrail;
use axum::extract::{Path, State};
use axum::Json;

/// Read an order's trail: notifications about it, and its waiting messages.
#[utoipa::path(
    get,
    path = "/orders/{id}/trail",
    tag = "orders",
    operation_id = "get_order_trail",
    security((), ("customer" = []), ("operator" = [])),
    params(("id" = OrderId, Path, description = "The order's id, as `POST /orders` answered it.")),
    responses((status = 200, description = "The order's notifications and waiting messages.", body = OrderTrail), ReadErrors)
)]
pub(super) async fn get(
    caller: Caller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<OrderTrail>, ApiError> {
    let id = parse_id(&raw)?;
    if !state.store.get_order(id).await?.is_some_and(|order| caller.may_see(&order.customer_id)) {
        return Err(super::caller::not_found(id));
    }
    Ok(Json(state.store.order_trail(id).await?))
}
