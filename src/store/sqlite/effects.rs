//! The services' effects: moving stock and recording notifications.
//!
//! Each runs as one writer job over a whole batch of events. Stock levels of
//! the SKUs a batch touches are read once, kept in memory while the domain's
//! `Reservation` decides each order in turn (all items or none) and
//! cancelled or shipped orders give back or send out what they hold, and
//! written back once per SKU. The writer runs one job at a time, so an
//! order's status and its `holds_stock` flag cannot change under a job.

use super::orders::{complete, enqueue, list_message, status_of, transition};
use super::statements::{Hot, Writer};
use super::{db_err, uuid_text};
use crate::domain::{
    now_millis, Event, EventType, LineItem, NewOrder, OrderId, Reservation, Status, StockLeft, StockStep,
};
use crate::store::{Handled, StockLevel, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;

/// Records `event` in `consumer`'s inbox; false when it was there already.
fn remember(conn: &Writer<'_>, consumer: &str, event: &Event, now: i64) -> Result<bool, StoreError> {
    let inserted = conn
        .stmt(Hot::Remember)
        .and_then(|mut s| s.execute(params![consumer, uuid_text(event.event_id, &mut [0; 36]), now]))
        .map_err(db_err)?;
    Ok(inserted == 1)
}

fn forget(conn: &Connection, consumer: &str, event: &Event) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM inbox WHERE consumer = ?1 AND event_id = ?2")
        .and_then(|mut s| s.execute(params![consumer, event.event_id.to_string()]))
        .map_err(db_err)?;
    Ok(())
}

/// Applies the inventory's effect of each event: reserves stock for
/// `OrderPlaced`, gives it back for `OrderCancelled`, sends it out for
/// `OrderShipped`, as the domain's `StockStep` says. The inbox insert and the
/// guarded status update come first and decide whether anything happens, so
/// the common path does no extra reads.
pub(super) fn reserve(conn: &Writer<'_>, consumer: &str, events: &[Event]) -> Result<Vec<Handled>, StoreError> {
    let now = now_millis();
    let mut levels: HashMap<String, StockLeft> = HashMap::new();
    let mut outcomes = Vec::with_capacity(events.len());
    for event in events {
        if !remember(conn, consumer, event, now)? {
            outcomes.push(Handled::Duplicate);
            continue;
        }
        let handled = match event.event_type {
            EventType::OrderPlaced => reserve_one(conn, event, &mut levels, now)?,
            _ => follow_stock(conn, event, &mut levels)?,
        };
        if matches!(handled, Handled::Retry(_)) {
            forget(conn, consumer, event)?;
        }
        outcomes.push(handled);
    }
    for (sku, level) in levels.iter().filter(|(_, l)| l.taken != 0 || l.shipped != 0) {
        conn.stmt(Hot::TakeStock)
            .and_then(|mut s| s.execute(params![sku, level.taken, level.shipped, now]))
            .map_err(db_err)?;
    }
    Ok(outcomes)
}

/// Reads the stock of each SKU of `items` not read yet in this batch.
fn load_levels(
    conn: &Writer<'_>,
    items: &[LineItem],
    levels: &mut HashMap<String, StockLeft>,
) -> Result<(), StoreError> {
    for item in items {
        if !levels.contains_key(item.sku.as_str()) {
            let available = conn
                .stmt(Hot::StockLevel)
                .and_then(|mut s| s.query_row([item.sku.as_str()], |r| r.get::<_, i64>(0)).optional())
                .map_err(db_err)?;
            levels.insert(item.sku.as_str().to_owned(), StockLeft { available, ..StockLeft::default() });
        }
    }
    Ok(())
}

fn reserve_one(
    conn: &Writer<'_>,
    event: &Event,
    levels: &mut HashMap<String, StockLeft>,
    now: i64,
) -> Result<Handled, StoreError> {
    load_levels(conn, &event.items, levels)?;
    let decision = Reservation::decide(&event.items, |sku| levels.get(sku.as_str()).and_then(StockLeft::left));
    let reason = decision.reason();
    let reached = decision.status();
    // Moves only a placed order: one cancelled meanwhile is left as it is.
    let Some(listed) = transition(conn, event.order_id, Status::Placed, decision.status(), reason.as_deref(), now)?
    else {
        if status_of(conn, event.order_id)?.is_none() {
            return Ok(Handled::Retry(format!("order {} not found", event.order_id)));
        }
        // Decided by an earlier delivery under another event id, or cancelled.
        return Ok(Handled::Duplicate);
    };
    let next = match decision {
        Reservation::Reserve(wanted) => {
            for (sku, qty) in &wanted {
                levels.get_mut(sku.as_str()).expect("level was loaded").taken += *qty as i64;
            }
            event.follow(EventType::InventoryReserved, None)
        }
        Reservation::Reject(_) => event.follow(EventType::InventoryFailed, reason),
    };
    enqueue(conn, listed, next)?;
    Ok(Handled::Done(Some(reached)))
}

/// Gives back or sends out the stock a cancelled or shipped order holds,
/// and queues the outcome for the notifier.
fn follow_stock(
    conn: &Writer<'_>,
    event: &Event,
    levels: &mut HashMap<String, StockLeft>,
) -> Result<Handled, StoreError> {
    let Some((status, holds_stock)) = stock_state(conn, event.order_id)? else {
        return Ok(Handled::Retry(format!("order {} not found", event.order_id)));
    };
    let step = StockStep::of(event.event_type, status, holds_stock);
    let release = matches!(step, StockStep::Release | StockStep::Ship);
    match step {
        StockStep::Skip | StockStep::Reserve => return Ok(Handled::Duplicate),
        StockStep::Report => {}
        StockStep::Release | StockStep::Ship => {
            load_levels(conn, &event.items, levels)?;
            for (sku, qty) in NewOrder::quantities_by_sku(&event.items) {
                let level = levels.get_mut(sku.as_str()).expect("level was loaded");
                if step == StockStep::Release {
                    level.taken -= qty as i64;
                } else {
                    level.shipped += qty as i64;
                }
            }
        }
    }
    // The outcome's message is listed with the order by the same statement
    // that records that the order no longer holds its stock.
    if let Some(outcome) = StockStep::outcome(event.event_type) {
        let Some(listed) = list_message(conn, event.order_id, release)? else {
            return Err(StoreError::Other(anyhow::anyhow!("order {} vanished", event.order_id)));
        };
        enqueue(conn, listed, event.follow(outcome, None))?;
    } else if release {
        conn.prepare_cached("UPDATE orders SET holds_stock = 0 WHERE id = ?1 AND holds_stock = 1")
            .and_then(|mut s| s.execute([event.order_id.to_string()]))
            .map_err(db_err)?;
    }
    Ok(Handled::Done(None))
}

/// The order's status and whether it holds stock; `None` if there is no such order.
fn stock_state(conn: &Connection, id: OrderId) -> Result<Option<(Status, bool)>, StoreError> {
    let row: Option<(String, bool)> = conn
        .prepare_cached("SELECT status, holds_stock FROM orders WHERE id = ?1")
        .and_then(|mut s| s.query_row([id.to_string()], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(db_err)?;
    row.map(|(status, holds)| {
        let status = status.parse().map_err(|e| StoreError::Other(anyhow::anyhow!("order row: {e}")))?;
        Ok((status, holds))
    })
    .transpose()
}

/// Records a notification for each inventory outcome and completes reserved
/// orders; with `webhooks`, queues a webhook delivery for each notification.
/// The notifications table, keyed by event id, is the inbox; and an
/// order no longer in the status the event applies to (`applies_to`) has had
/// it, so nothing is recorded for it, even once its inbox entry is pruned.
pub(super) fn notify(
    conn: &Writer<'_>,
    consumer: &str,
    events: &[Event],
    webhooks: bool,
) -> Result<Vec<Handled>, StoreError> {
    let now = now_millis();
    let mut outcomes = Vec::with_capacity(events.len());
    for event in events {
        let Some((kind, message)) = event.notification() else {
            outcomes.push(Handled::Retry("the notifier does not handle OrderPlaced".into()));
            continue;
        };
        // The common path (a reserved order completing) moves the order first
        // and reads nothing; a rejection, rarer, reads the order's status.
        let applies = if event.event_type == EventType::InventoryReserved {
            complete(conn, event.order_id, now)?
        } else {
            status_of(conn, event.order_id)? == Some(event.event_type.applies_to())
        };
        if !applies {
            outcomes.push(match status_of(conn, event.order_id)? {
                None => Handled::Retry(format!("order {} not found", event.order_id)),
                Some(_) => Handled::Duplicate,
            });
            continue;
        }
        let (mut event_buf, mut order_buf) = ([0; 36], [0; 36]);
        let event_id = uuid_text(event.event_id, &mut event_buf);
        let order_id = uuid_text(event.order_id.as_uuid(), &mut order_buf);
        let inserted = conn
            .stmt(Hot::InsertNotification)
            .and_then(|mut s| s.execute(params![event_id, order_id, consumer, kind, message, now]))
            .map_err(db_err)?;
        if inserted == 0 {
            outcomes.push(Handled::Duplicate);
            continue;
        }
        // The status the order is in now: the one the event applies to, or
        // for a completion the one it just reached.
        let completes = event.event_type == EventType::InventoryReserved;
        let status = if completes { Status::Completed } else { event.event_type.applies_to() };
        if webhooks {
            super::webhooks::enqueue(conn, event, status, now)?;
        }
        outcomes.push(Handled::Done(completes.then_some(Status::Completed)));
    }
    Ok(outcomes)
}

pub(super) fn set_stock(conn: &Connection, sku: &str, available: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO inventory (sku, available, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (sku) DO UPDATE SET available = excluded.available, updated_at = excluded.updated_at",
    )
    .and_then(|mut s| s.execute(params![sku, available, now_millis()]))
    .map_err(db_err)?;
    Ok(())
}

pub(super) fn list_stock(conn: &Connection) -> Result<Vec<StockLevel>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT sku, available, reserved, shipped FROM inventory ORDER BY sku").map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(StockLevel { sku: r.get(0)?, available: r.get(1)?, reserved: r.get(2)?, shipped: r.get(3)? })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_err)?;
    Ok(rows)
}
