//! The services' effects: moving stock and recording notifications.
//!
//! Each runs over a whole batch of events inside the caller's transaction, and
//! several workers (threads or processes) may run them at once. A second
//! delivery of an event waits on its inbox claim (the inbox's key, or the
//! notifications table's) until the first one's transaction ends, and then
//! sees the claim taken: so duplicates of one event never act twice. Stock is
//! locked by SKU, in SKU order, read once per SKU, kept in memory while the
//! domain's `Reservation` decides each order in turn (all items or none, the
//! same rule the SQLite store applies) and written back with one aggregated
//! update.
//!
//! Orders are read without a lock, and each update says what it moves the
//! order from: a status (`placed` for a reservation) or the stock it holds
//! (`holds_stock` for a release or a shipment). An order that is no longer
//! where the read left it (a client cancelled it between the read and the
//! update, or a hand-made event about it was handled at once) makes the
//! update change fewer rows than it should, and the whole batch fails and
//! is tried again, when the read sees the new status: a cancelled order is
//! never reserved, so it never holds stock it will not give back. Locking
//! every order up front instead cost a statement and a WAL record per order.

use super::{db_err, NOTIFY_MESSAGES};
use crate::domain::{now_millis, Event, EventType, NewOrder, Reservation, Status, StockLeft, StockStep};
use crate::messaging::queue_for;
use crate::store::{Handled, StockLevel, StoreError};
use deadpool_postgres::{GenericClient, Transaction};
use std::collections::{BTreeSet, HashMap, HashSet};
use uuid::Uuid;

/// The orders the events are about: each one's status and whether it holds
/// stock (see the module doc).
async fn read_orders(tx: &Transaction<'_>, events: &[Event]) -> Result<HashMap<Uuid, (Status, bool)>, StoreError> {
    let ids: Vec<Uuid> = events.iter().map(|e| e.order_id.as_uuid()).collect::<BTreeSet<_>>().into_iter().collect();
    let stmt =
        tx.prepare_cached("SELECT id, status, holds_stock FROM orders WHERE id = ANY($1)").await.map_err(db_err)?;
    let mut orders = HashMap::with_capacity(ids.len());
    for row in tx.query(&stmt, &[&ids]).await.map_err(db_err)? {
        let status: String = row.get(1);
        let status = status.parse().map_err(|e| StoreError::Other(anyhow::anyhow!("order row: {e}")))?;
        orders.insert(row.get(0), (status, row.get(2)));
    }
    Ok(orders)
}

/// Checks that a status update moved every order it was meant to.
fn moved_all(updated: u64, meant: usize) -> Result<(), StoreError> {
    if updated == meant as u64 {
        return Ok(());
    }
    Err(StoreError::Other(anyhow::anyhow!(
        "{} of {meant} orders changed status while their batch was applied; the batch is tried again",
        meant as u64 - updated.min(meant as u64)
    )))
}

pub(super) async fn reserve(
    tx: &Transaction<'_>,
    consumer: &str,
    events: &[Event],
) -> Result<Vec<Handled>, StoreError> {
    let now = now_millis();
    let mut orders = read_orders(tx, events).await?;

    // Claim the events whose order exists; a claim that does not come back
    // was made before, by an earlier delivery.
    let candidates: Vec<Uuid> = events
        .iter()
        .filter(|e| orders.contains_key(&e.order_id.as_uuid()))
        .map(|e| e.event_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut claimed: HashSet<Uuid> = HashSet::new();
    if !candidates.is_empty() {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO inbox (consumer, event_id, processed_at) SELECT $1, e, $3 FROM unnest($2::uuid[]) AS t(e)
                 ON CONFLICT DO NOTHING RETURNING event_id",
            )
            .await
            .map_err(db_err)?;
        let rows = tx.query(&stmt, &[&consumer, &candidates, &now]).await.map_err(db_err)?;
        claimed = rows.iter().map(|r| r.get(0)).collect();
    }

    // Lock the stock of every order whose event may move some, sorted by SKU.
    let moves_stock = |e: &Event| {
        let Some(&(status, holds)) = orders.get(&e.order_id.as_uuid()) else { return false };
        let step = StockStep::of(e.event_type, status, holds);
        matches!(step, StockStep::Reserve | StockStep::Release | StockStep::Ship)
    };
    let skus: Vec<&str> = events
        .iter()
        .filter(|e| claimed.contains(&e.event_id) && moves_stock(e))
        .flat_map(|e| e.items.iter().map(|item| item.sku.as_str()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut levels: HashMap<String, StockLeft> =
        skus.iter().map(|sku| (sku.to_string(), StockLeft::default())).collect();
    if !skus.is_empty() {
        let stmt = tx
            .prepare_cached("SELECT sku, available FROM inventory WHERE sku = ANY($1) ORDER BY sku FOR UPDATE")
            .await
            .map_err(db_err)?;
        for row in tx.query(&stmt, &[&skus]).await.map_err(db_err)? {
            levels.insert(row.get(0), StockLeft { available: Some(row.get(1)), ..StockLeft::default() });
        }
    }

    let mut outcomes = Vec::with_capacity(events.len());
    let (mut reserved, mut rejected, mut reasons, mut freed, mut next) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for event in events {
        let id = event.order_id.as_uuid();
        let Some((status, holds)) = orders.get(&id).copied() else {
            outcomes.push(Handled::Retry(format!("order {} not found", event.order_id)));
            continue;
        };
        // `remove`: a second copy of the event in this batch is a duplicate too.
        if !claimed.remove(&event.event_id) {
            outcomes.push(Handled::Duplicate);
            continue;
        }
        let step = StockStep::of(event.event_type, status, holds);
        let mut reached = None;
        match step {
            StockStep::Skip => {
                outcomes.push(Handled::Duplicate);
                continue;
            }
            StockStep::Reserve => {
                let decision =
                    Reservation::decide(&event.items, |sku| levels.get(sku.as_str()).and_then(StockLeft::left));
                match decision {
                    Reservation::Reserve(wanted) => {
                        for (sku, qty) in &wanted {
                            levels.get_mut(sku.as_str()).expect("level was loaded").taken += *qty as i64;
                        }
                        orders.insert(id, (Status::Reserved, true));
                        reached = Some(Status::Reserved);
                        reserved.push(id);
                        next.push(event.follow(EventType::InventoryReserved, None));
                    }
                    Reservation::Reject(rejection) => {
                        let reason = rejection.to_string();
                        orders.insert(id, (Status::Rejected, false));
                        reached = Some(Status::Rejected);
                        rejected.push(id);
                        next.push(event.follow(EventType::InventoryFailed, Some(reason.clone())));
                        reasons.push(reason);
                    }
                }
            }
            StockStep::Release | StockStep::Ship | StockStep::Report => {
                if step != StockStep::Report {
                    for (sku, qty) in NewOrder::quantities_by_sku(&event.items) {
                        let level = levels.get_mut(sku.as_str()).expect("level was loaded");
                        if step == StockStep::Release {
                            level.taken -= qty as i64;
                        } else {
                            level.shipped += qty as i64;
                        }
                    }
                    orders.insert(id, (status, false));
                    freed.push(id);
                }
                if let Some(outcome) = StockStep::outcome(event.event_type) {
                    next.push(event.follow(outcome, None));
                }
            }
        }
        outcomes.push(Handled::Done(reached));
    }

    let moved: Vec<(&str, i64, i64)> = levels
        .iter()
        .filter(|(_, l)| l.taken != 0 || l.shipped != 0)
        .map(|(sku, l)| (sku.as_str(), l.taken, l.shipped))
        .collect();
    if !moved.is_empty() {
        let skus: Vec<&str> = moved.iter().map(|m| m.0).collect();
        let taken: Vec<i64> = moved.iter().map(|m| m.1).collect();
        let shipped: Vec<i64> = moved.iter().map(|m| m.2).collect();
        // `n` is what reservations took less what cancels gave back, `s` what shipped.
        let stmt = tx
            .prepare_cached(
                "UPDATE inventory AS i SET available = i.available - t.n, reserved = i.reserved + t.n - t.s,
                    shipped = i.shipped + t.s, updated_at = $4
                 FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS t(sku, n, s) WHERE i.sku = t.sku",
            )
            .await
            .map_err(db_err)?;
        tx.execute(&stmt, &[&skus, &taken, &shipped, &now]).await.map_err(db_err)?;
    }
    if !reserved.is_empty() {
        let stmt = tx
            .prepare_cached(
                "UPDATE orders SET status = 'reserved', reason = NULL, updated_at = $2, reserved_at = $2,
                    holds_stock = true
                 WHERE id = ANY($1) AND status = 'placed'",
            )
            .await
            .map_err(db_err)?;
        moved_all(tx.execute(&stmt, &[&reserved, &now]).await.map_err(db_err)?, reserved.len())?;
    }
    if !rejected.is_empty() {
        let stmt = tx
            .prepare_cached(
                "UPDATE orders AS o SET status = 'rejected', reason = t.reason, updated_at = $3, rejected_at = $3
                 FROM unnest($1::uuid[], $2::text[]) AS t(id, reason) WHERE o.id = t.id AND o.status = 'placed'",
            )
            .await
            .map_err(db_err)?;
        moved_all(tx.execute(&stmt, &[&rejected, &reasons, &now]).await.map_err(db_err)?, rejected.len())?;
    }
    if !freed.is_empty() {
        let stmt = tx
            .prepare_cached("UPDATE orders SET holds_stock = false WHERE id = ANY($1) AND holds_stock")
            .await
            .map_err(db_err)?;
        moved_all(tx.execute(&stmt, &[&freed]).await.map_err(db_err)?, freed.len())?;
    }
    enqueue(tx, &next).await?;
    Ok(outcomes)
}

/// Queues events for delivery (the outbox rows, and the `db` broker's queue)
/// and wakes the consumers of every process once the transaction commits.
pub(super) async fn enqueue(tx: &Transaction<'_>, events: &[Event]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let queues: Vec<&str> = events.iter().map(queue_for).collect();
    let keys: Vec<&str> = events.iter().map(|e| e.event_type.routing_key()).collect();
    let bodies: Vec<String> = events.iter().map(Event::to_json).collect();
    // Each message names its order (schema version 7), for the order's trail.
    let orders: Vec<Uuid> = events.iter().map(|e| e.order_id.as_uuid()).collect();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO messages (queue, routing_key, body, order_id)
             SELECT q, k, b, o FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[]) AS t(q, k, b, o)",
        )
        .await
        .map_err(db_err)?;
    tx.execute(&stmt, &[&queues, &keys, &bodies, &orders]).await.map_err(db_err)?;
    tx.batch_execute(NOTIFY_MESSAGES).await.map_err(db_err)?;
    Ok(())
}

pub(super) async fn notify(
    tx: &Transaction<'_>,
    consumer: &str,
    events: &[Event],
    webhooks: bool,
) -> Result<Vec<Handled>, StoreError> {
    let now = now_millis();
    let mut statuses: HashMap<Uuid, Status> =
        read_orders(tx, events).await?.into_iter().map(|(id, (status, _))| (id, status)).collect();

    // The notifications table, keyed by event id, is the notifier's inbox.
    let mut seen = HashSet::new();
    let (mut ids, mut orders, mut kinds, mut messages) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for event in events {
        let Some((kind, message)) = event.notification() else { continue };
        // An order no longer in the status the event applies to has had it:
        // nothing is recorded, even once the event's inbox entry is pruned.
        let applies = statuses.get(&event.order_id.as_uuid()) == Some(&event.event_type.applies_to());
        if applies && seen.insert(event.event_id) {
            ids.push(event.event_id);
            orders.push(event.order_id.as_uuid());
            kinds.push(kind);
            messages.push(message);
        }
    }
    let mut inserted: HashSet<Uuid> = HashSet::new();
    if !ids.is_empty() {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO notifications (event_id, order_id, consumer, kind, message, sent_at)
                 SELECT e, o, $5, k, m, $6 FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[]) AS t(e, o, k, m)
                 ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
            )
            .await
            .map_err(db_err)?;
        let rows = tx.query(&stmt, &[&ids, &orders, &kinds, &messages, &consumer, &now]).await.map_err(db_err)?;
        inserted = rows.iter().map(|r| r.get(0)).collect();
    }

    let mut outcomes = Vec::with_capacity(events.len());
    let mut completed = Vec::new();
    let mut notified = Vec::new();
    for event in events {
        let id = event.order_id.as_uuid();
        if !statuses.contains_key(&id) {
            outcomes.push(Handled::Retry(format!("order {} not found", event.order_id)));
            continue;
        }
        if event.notification().is_none() {
            outcomes.push(Handled::Retry("the notifier does not handle OrderPlaced".into()));
            continue;
        }
        if !inserted.remove(&event.event_id) {
            outcomes.push(Handled::Duplicate);
            continue;
        }
        let completes = event.event_type == EventType::InventoryReserved;
        if completes {
            statuses.insert(id, Status::Completed);
            completed.push(id);
        }
        notified.push((event, statuses[&id]));
        outcomes.push(Handled::Done(completes.then_some(Status::Completed)));
    }
    if !completed.is_empty() {
        let stmt = tx
            .prepare_cached(
                "UPDATE orders SET status = 'completed', reason = NULL, updated_at = $2, completed_at = $2
                 WHERE id = ANY($1) AND status = 'reserved'",
            )
            .await
            .map_err(db_err)?;
        moved_all(tx.execute(&stmt, &[&completed, &now]).await.map_err(db_err)?, completed.len())?;
    }
    if webhooks {
        super::webhooks::enqueue(tx, &notified, now).await?;
    }
    Ok(outcomes)
}

pub(super) async fn set_stock(client: &impl GenericClient, sku: &str, available: i64) -> Result<(), StoreError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO inventory (sku, available, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (sku) DO UPDATE SET available = excluded.available, updated_at = excluded.updated_at",
        )
        .await
        .map_err(db_err)?;
    client.execute(&stmt, &[&sku, &available, &now_millis()]).await.map_err(db_err)?;
    Ok(())
}

pub(super) async fn list_stock(client: &impl GenericClient) -> Result<Vec<StockLevel>, StoreError> {
    let stmt = client
        .prepare_cached("SELECT sku, available, reserved, shipped FROM inventory ORDER BY sku")
        .await
        .map_err(db_err)?;
    let rows = client.query(&stmt, &[]).await.map_err(db_err)?;
    Ok(rows
        .iter()
        .map(|r| StockLevel { sku: r.get(0), available: r.get(1), reserved: r.get(2), shipped: r.get(3) })
        .collect())
}
