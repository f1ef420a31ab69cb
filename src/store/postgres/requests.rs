//! Clients' requests about a placed order: cancel it, ship it.
//!
//! The order's row is locked (`FOR UPDATE`) while the domain decides from its
//! status, so a request and the inventory service's reservation of the same
//! order take turns: a reservation that commits first is seen here (and its
//! stock given back later by the `OrderCancelled` event), and one that comes
//! second finds the order no longer placed and takes nothing.

use super::{db_err, effects, orders};
use crate::domain::{now_millis, CustomerId, Decision, Event, OrderId, Request, Status, TraceParent};
use crate::store::{Requested, StoreError};
use deadpool_postgres::{GenericClient, Transaction};

pub(super) async fn request(
    tx: &Transaction<'_>,
    id: OrderId,
    request: Request,
) -> Result<Option<Requested>, StoreError> {
    let stmt = tx.prepare_cached("SELECT status FROM orders WHERE id = $1 FOR UPDATE").await.map_err(db_err)?;
    let Some(row) = tx.query_opt(&stmt, &[&id.as_uuid()]).await.map_err(db_err)? else { return Ok(None) };
    let status: String = row.get(0);
    let status: Status = status.parse().map_err(|e| StoreError::Other(anyhow::anyhow!("order row: {e}")))?;
    let decision = request.decide(status);
    if let Decision::Move { from, to } = decision {
        // The column is named after a status of the domain's, never after input.
        let sql = format!(
            "UPDATE orders SET status = $2, updated_at = $3, {to}_at = $3 WHERE id = $1 AND status = $4
             RETURNING customer_id, items::text, traceparent"
        );
        let stmt = tx.prepare_cached(&sql).await.map_err(db_err)?;
        let row = tx.query_one(&stmt, &[&id.as_uuid(), &to.as_str(), &now_millis(), &from.as_str()]).await;
        let row = row.map_err(db_err)?;
        let bad = |e: String| StoreError::Other(anyhow::anyhow!("order row: {e}"));
        let customer = CustomerId::parse(row.get::<_, String>(0)).map_err(|e| bad(e.message))?;
        let items = serde_json::from_str(row.get(1)).map_err(|e| bad(e.to_string()))?;
        // The move belongs to the order's trace, like the events it causes.
        let trace = row.get::<_, Option<String>>(2).as_deref().and_then(TraceParent::parse);
        let event = Event::new(request.event_type(), id, customer, items, None).in_trace(trace);
        effects::enqueue(tx, &[event]).await?;
    }
    let order = orders::get(tx, id).await?;
    let order = order.ok_or_else(|| StoreError::Other(anyhow::anyhow!("order {id} vanished")))?;
    Ok(Some(Requested { decision, order }))
}
