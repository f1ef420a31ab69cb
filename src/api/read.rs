//! Reading one order, through the cache when there is one.
//!
//! A hit answers the cached JSON as it is. A miss, or a cache that failed or
//! is skipped, reads the store and answers that; the copy is written to the
//! cache in the background, so a miss costs the client no extra round trip
//! and a cache that is down costs it nothing. Why a late copy can never put
//! an older status back is told in `crate::cache`. An order the caller may
//! not see is read as no order at all.

use super::{ApiError, AppState};
use crate::domain::{Caller, OrderId};
use std::time::Instant;

/// The order's JSON, as `GET /orders/{id}` answers it; `None` if there is no
/// such order, or the caller may not see it.
pub(super) async fn order_json(state: &AppState, caller: &Caller, id: OrderId) -> Result<Option<String>, ApiError> {
    let Some(cache) = &state.cache else {
        let order = state.store.get_order(id).await?;
        return Ok(order.filter(|o| caller.may_see(&o.customer_id)).map(|order| to_json(&order)));
    };
    if let Some(json) = cache.get(id).await {
        return Ok(Some(json).filter(|json| caller.customer().is_none() || caller.may_see(&owner(json))));
    }
    // Taken before the read: the copy is at least this old.
    let read_at = Instant::now();
    let Some(order) = state.store.get_order(id).await? else { return Ok(None) };
    let json = to_json(&order);
    let (cache, status, copy) = (cache.clone(), order.status, json.clone());
    tokio::spawn(async move { cache.fill(id, status, &copy, read_at).await });
    Ok(Some(json).filter(|_| caller.may_see(&order.customer_id)))
}

/// The customer of a cached order; none (so no customer's) if the copy is unreadable.
fn owner(json: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Owner {
        customer_id: String,
    }
    serde_json::from_str::<Owner>(json).map(|o| o.customer_id).unwrap_or_default()
}

fn to_json(order: &crate::store::OrderView) -> String {
    serde_json::to_string(order).expect("an order serializes")
}
