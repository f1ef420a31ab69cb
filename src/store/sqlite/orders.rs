//! Orders: accepting them, reading them back, paging through them.

use super::queue::Queue;
use super::recent::Kept;
use super::statements::{Hot, Writer};
use super::{db_err, uuid_text};
use crate::domain::{format_millis, key_holds, now_millis, Event, LineItem, OrderId, Status};
use crate::messaging::queue_for;
use crate::store::{
    NotificationRecord, OrderFilter, OrderPage, OrderTrail, OrderView, Placed, PreparedOrder, StoreError, Transition,
    WaitingMessage,
};
use rusqlite::{params, Connection, OptionalExtension, Row};

/// Queues an event for delivery (the outbox row, and the `db` broker's queue).
pub(super) fn enqueue(conn: &Writer<'_>, event: Event) -> Result<(), StoreError> {
    let body = event.to_json();
    enqueue_json(conn, event, body)
}

/// Queues `event`, written as `body`, and keeps both for this process's
/// consumer of its queue (`recent`).
fn enqueue_json(conn: &Writer<'_>, event: Event, body: String) -> Result<(), StoreError> {
    let queue = Queue::named(queue_for(&event))?;
    let id = conn.next_message_id();
    conn.stmt(queue.enqueue())
        .and_then(|mut s| s.execute(params![id, event.event_type.routing_key(), body]))
        .map_err(db_err)?;
    if conn.recent.wanted(queue) {
        conn.recent.keep(queue, Kept { id, body, event });
    }
    Ok(())
}

/// Moves an order from `from` to `to`, recording when. Returns false, and
/// changes nothing, when the order is missing or no longer in `from`: the
/// guard that makes a repeated event harmless.
pub(super) fn transition(
    conn: &Writer<'_>,
    id: OrderId,
    from: Status,
    to: Status,
    reason: Option<&str>,
    now: i64,
) -> Result<bool, StoreError> {
    if !from.can_become(to) {
        return Err(StoreError::Other(anyhow::anyhow!("an order cannot go from {from} to {to}")));
    }
    let stmt = match to {
        Status::Reserved => Hot::Reserve,
        Status::Completed => Hot::Complete,
        _ => Hot::Reject,
    };
    let changed = conn
        .stmt(stmt)
        .and_then(|mut s| s.execute(params![uuid_text(id.as_uuid(), &mut [0; 36]), reason, now, from.as_str()]))
        .map_err(db_err)?;
    Ok(changed == 1)
}

pub(super) fn status_of(conn: &Connection, id: OrderId) -> Result<Option<Status>, StoreError> {
    let status: Option<String> = conn
        .prepare_cached("SELECT status FROM orders WHERE id = ?1")
        .and_then(|mut s| s.query_row([id.to_string()], |r| r.get(0)).optional())
        .map_err(db_err)?;
    status.map(|s| s.parse().map_err(|e| StoreError::Other(anyhow::anyhow!("{e}")))).transpose()
}

pub(super) fn place(conn: &Writer<'_>, p: PreparedOrder) -> Result<Placed, StoreError> {
    let now = now_millis();
    let id = p.id.to_string();
    if let Some((key, hash, ttl)) = &p.idempotency {
        let seen: Option<(String, String, i64)> = conn
            .prepare_cached("SELECT request_hash, order_id, created_at FROM idempotency_keys WHERE key = ?1")
            .and_then(|mut s| s.query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional())
            .map_err(db_err)?;
        // A key past its time to live is unknown, pruned or not: its row is replaced.
        if let Some((seen_hash, order_id, created_at)) = seen.filter(|(_, _, at)| key_holds(*at, now, *ttl)) {
            if seen_hash != *hash {
                return Err(StoreError::IdempotencyConflict);
            }
            let id = order_id.parse().map_err(|e| StoreError::Other(anyhow::anyhow!("{e}")))?;
            return Ok(Placed { id, created_at, replayed: true });
        }
        conn.prepare_cached(
            "INSERT INTO idempotency_keys (key, request_hash, order_id, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (key) DO UPDATE SET request_hash = excluded.request_hash, order_id = excluded.order_id,
                 created_at = excluded.created_at",
        )
        .and_then(|mut s| s.execute(params![key, hash, id, now]))
        .map_err(db_err)?;
    }
    conn.stmt(Hot::InsertOrder)
        .and_then(|mut s| s.execute(params![id, p.customer_id, p.items, now, p.traceparent]))
        .map_err(db_err)?;
    enqueue_json(conn, p.placed, p.event)?;
    Ok(Placed { id: p.id, created_at: now, replayed: false })
}

const ORDER_COLUMNS: &str =
    "id, customer_id, status, reason, items, created_at, updated_at, reserved_at, completed_at, rejected_at, \
     traceparent";

fn order_from_row(r: &Row<'_>) -> rusqlite::Result<OrderView> {
    let bad = |i, e: String| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into());
    let id: String = r.get(0)?;
    let status: String = r.get(2)?;
    let items: String = r.get(4)?;
    Ok(OrderView {
        order_id: id.parse().map_err(|e: crate::domain::ValidationError| bad(0, e.message))?,
        customer_id: r.get(1)?,
        status: status.parse().map_err(|e: crate::domain::ValidationError| bad(2, e.message))?,
        reason: r.get(3)?,
        items: serde_json::from_str::<Vec<LineItem>>(&items).map_err(|e| bad(4, e.to_string()))?,
        created_at: format_millis(r.get(5)?),
        updated_at: format_millis(r.get(6)?),
        history: history_from_row(r)?,
        trace_id: crate::store::trace_id_of(r.get(10)?),
    })
}

/// The transitions an order went through, in order, from its state times.
fn history_from_row(r: &Row<'_>) -> rusqlite::Result<Vec<Transition>> {
    let reason: Option<String> = r.get(3)?;
    let mut history = vec![Transition { status: Status::Placed, reason: None, at: format_millis(r.get(5)?) }];
    for (column, status) in [(7, Status::Reserved), (8, Status::Completed), (9, Status::Rejected)] {
        if let Some(at) = r.get::<_, Option<i64>>(column)? {
            let reason = if status == Status::Rejected { reason.clone() } else { None };
            history.push(Transition { status, reason, at: format_millis(at) });
        }
    }
    Ok(history)
}

pub(super) fn get(conn: &Connection, id: OrderId) -> Result<Option<OrderView>, StoreError> {
    let id = id.to_string();
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1");
    conn.prepare_cached(&sql).and_then(|mut s| s.query_row([&id], order_from_row).optional()).map_err(db_err)
}

pub(super) fn statuses(conn: &Connection, ids: &[OrderId]) -> Result<Vec<(OrderId, Status)>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT status FROM orders WHERE id = ?1").map_err(db_err)?;
    let mut found = Vec::with_capacity(ids.len());
    for &id in ids {
        let status: Option<String> = stmt.query_row([id.to_string()], |r| r.get(0)).optional().map_err(db_err)?;
        if let Some(status) = status {
            let status = status.parse().map_err(|e| StoreError::Other(anyhow::anyhow!("{e}")))?;
            found.push((id, status));
        }
    }
    Ok(found)
}

pub(super) fn trail(conn: &Connection, id: OrderId) -> Result<OrderTrail, StoreError> {
    let id = id.to_string();
    let mut stmt = conn
        .prepare_cached(
            "SELECT event_id, kind, message, sent_at FROM notifications WHERE order_id = ?1 ORDER BY sent_at",
        )
        .map_err(db_err)?;
    let notifications = stmt
        .query_map([&id], |r| {
            Ok(NotificationRecord {
                event_id: r.get(0)?,
                kind: r.get(1)?,
                message: r.get(2)?,
                sent_at: format_millis(r.get(3)?),
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_err)?;
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, queue, routing_key, attempts, last_error FROM messages WHERE body LIKE ?1 ORDER BY id LIMIT 100",
        )
        .map_err(db_err)?;
    let waiting = stmt
        .query_map([format!("%{id}%")], |r| {
            Ok(WaitingMessage {
                id: r.get(0)?,
                queue: r.get(1)?,
                routing_key: r.get(2)?,
                attempts: r.get(3)?,
                last_error: r.get(4)?,
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_err)?;
    Ok(OrderTrail { notifications, waiting })
}

pub(super) fn list(conn: &Connection, f: OrderFilter) -> Result<OrderPage, StoreError> {
    let mut sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE 1 = 1");
    let mut args: Vec<String> = Vec::new();
    if let Some(status) = f.status {
        args.push(status.as_str().to_owned());
        // Names the partial index (schema version 2) that holds this state.
        let state = match status {
            Status::Placed | Status::Reserved => "completed_at IS NULL AND rejected_at IS NULL",
            Status::Completed => "completed_at IS NOT NULL",
            Status::Rejected => "rejected_at IS NOT NULL",
        };
        sql.push_str(&format!(" AND {state} AND status = ?{}", args.len()));
    }
    if let Some(customer) = f.customer_id {
        args.push(customer);
        sql.push_str(&format!(" AND customer_id = ?{}", args.len()));
    }
    if let Some(before) = f.before {
        args.push(before.to_string());
        sql.push_str(&format!(" AND id < ?{}", args.len()));
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", f.limit + 1));
    let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args.iter()), order_from_row)
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_err)?;
    Ok(OrderPage::from_rows(rows, f.limit, None))
}
