//! Cancelling and shipping an order: `POST /orders/{id}/cancel` (its
//! customer; anyone while the API authenticates no one) and
//! `POST /admin/orders/{id}/ship` (the operator).
//!
//! The store applies the request under the order's row lock as the domain
//! decides it (`domain::Request`), and commits a move with its event, which
//! the inventory service turns into stock given back or sent out. Both
//! answer the order as it then stands, so a repeated request, which changes
//! nothing, answers the same status and body; a move the lifecycle does not
//! allow is `409 invalid_transition`.

use super::auth::Operator;
use super::orders::parse_id;
use super::responses::{CancelErrors, ShipErrors};
use super::{ApiError, AppState};
use crate::domain::{Caller, Decision, OrderId, Request};
use crate::store::OrderView;
use crate::telemetry::catalog::ORDER_DURATION;
use axum::extract::{Path, State};
use axum::Json;

/// Cancel an order.
///
/// Allowed until the order ships: a placed order is never reserved, and the
/// stock of a reserved or completed one goes back to `available` once the
/// inventory service has handled the cancel. Repeating it changes nothing.
#[utoipa::path(
    post,
    path = "/orders/{id}/cancel",
    tag = "orders",
    operation_id = "cancel_order",
    security((), ("customer" = []), ("operator" = [])),
    params(("id" = OrderId, Path, description = "The order's id, as `POST /orders` answered it.")),
    responses((status = 200, description = "The order, cancelled.", body = OrderView), CancelErrors)
)]
pub(super) async fn cancel(
    caller: Caller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    let id = parse_id(&raw)?;
    if caller.customer().is_some() {
        // An order's customer never changes, so checking it before the
        // request is as good as checking it under the lock. Another's order
        // is answered as missing: its existence is not this caller's to know.
        let order = state.store.get_order(id).await?;
        if order.is_none_or(|o| !caller.may_see(&o.customer_id)) {
            return Err(not_found(id));
        }
    }
    apply(&state, id, Request::Cancel).await
}

/// Ship a completed order.
///
/// Its reserved stock leaves the inventory for good (`shipped`) once the
/// inventory service has handled it. Repeating it changes nothing.
#[utoipa::path(
    post,
    path = "/admin/orders/{id}/ship",
    tag = "admin",
    operation_id = "admin_ship_order",
    security(("operator" = [])),
    params(("id" = OrderId, Path, description = "The order's id.")),
    responses((status = 200, description = "The order, shipped.", body = OrderView), ShipErrors)
)]
pub(super) async fn ship(
    _: Operator,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    let id = parse_id(&raw)?;
    apply(&state, id, Request::Ship).await
}

async fn apply(state: &AppState, id: OrderId, request: Request) -> Result<Json<OrderView>, ApiError> {
    let Some(requested) = state.store.request(id, request).await? else { return Err(not_found(id)) };
    match requested.decision {
        Decision::Move { from, to } => {
            if let Some(placed) = id.placed_millis() {
                let seconds = crate::telemetry::seconds_since(placed);
                metrics::histogram!(ORDER_DURATION, "status" => to.as_str()).record(seconds);
            }
            if let Some(cache) = &state.cache {
                cache.moved_past([(id, from)]).await;
            }
        }
        Decision::Already => {}
        refused @ Decision::Refuse { .. } => {
            let why = refused.refusal().unwrap_or_default();
            return Err(ApiError::InvalidTransition(format!("order {id} is {}: {why}", requested.order.status)));
        }
    }
    Ok(Json(requested.order))
}

fn not_found(id: OrderId) -> ApiError {
    ApiError::NotFound(format!("order {id} not found"))
}
