//! The services' effects: reserving stock and recording notifications.
//!
//! Each runs as one writer job over a whole batch of events. Stock levels of
//! the SKUs a batch touches are read once, kept in memory while the domain's
//! `Reservation` decides each order in turn (all items or none), and written
//! back once per SKU.

use super::orders::{enqueue, status_of, transition};
use super::statements::{Hot, Writer};
use super::{db_err, uuid_text};
use crate::domain::{now_millis, Event, EventType, Reservation, Status, StockLeft};
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

/// Reserves stock for each `OrderPlaced` event. The inbox insert and the
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
        for item in &event.items {
            if !levels.contains_key(item.sku.as_str()) {
                let available = conn
                    .stmt(Hot::StockLevel)
                    .and_then(|mut s| s.query_row([item.sku.as_str()], |r| r.get::<_, i64>(0)).optional())
                    .map_err(db_err)?;
                levels.insert(item.sku.as_str().to_owned(), StockLeft { available, taken: 0 });
            }
        }
        let decision = Reservation::decide(&event.items, |sku| levels.get(sku.as_str()).and_then(StockLeft::left));
        let reason = decision.reason();
        if !transition(conn, event.order_id, Status::Placed, decision.status(), reason.as_deref(), now)? {
            if status_of(conn, event.order_id)?.is_none() {
                forget(conn, consumer, event)?;
                outcomes.push(Handled::Retry(format!("order {} not found", event.order_id)));
            } else {
                // Already decided by an earlier delivery under another event id.
                outcomes.push(Handled::Duplicate);
            }
            continue;
        }
        let next = match decision {
            Reservation::Reserve(wanted) => {
                for (sku, qty) in &wanted {
                    levels.get_mut(sku.as_str()).expect("level was loaded").taken += *qty as i64;
                }
                event.follow(EventType::InventoryReserved, None)
            }
            Reservation::Reject(_) => event.follow(EventType::InventoryFailed, reason),
        };
        enqueue(conn, next)?;
        outcomes.push(Handled::Done);
    }
    for (sku, level) in levels.iter().filter(|(_, l)| l.taken > 0) {
        conn.stmt(Hot::TakeStock).and_then(|mut s| s.execute(params![sku, level.taken, now])).map_err(db_err)?;
    }
    Ok(outcomes)
}

/// Records a notification for each inventory outcome and completes reserved
/// orders. The notifications table, keyed by event id, is the inbox; and an
/// order no longer in the status the event applies to (`applies_to`) has had
/// it, so nothing is recorded for it, even once its inbox entry is pruned.
pub(super) fn notify(conn: &Writer<'_>, consumer: &str, events: &[Event]) -> Result<Vec<Handled>, StoreError> {
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
            transition(conn, event.order_id, Status::Reserved, Status::Completed, None, now)?
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
        // A completion always records a new notification (the order was
        // `reserved` until now), so only a rejection can be a duplicate here.
        outcomes.push(if inserted == 0 { Handled::Duplicate } else { Handled::Done });
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
        conn.prepare_cached("SELECT sku, available, reserved FROM inventory ORDER BY sku").map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| Ok(StockLevel { sku: r.get(0)?, available: r.get(1)?, reserved: r.get(2)? }))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_err)?;
    Ok(rows)
}
