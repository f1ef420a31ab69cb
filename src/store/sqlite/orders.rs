//! Orders: accepting them, reading them back, paging through them.

use super::queue::Queue;
use super::recent::Kept;
use super::statements::{Hot, Writer};
use super::{db_err, uuid_text};
use crate::domain::{
    format_millis, key_holds, now_millis, CustomerId, Decision, Event, LineItem, OrderId, Request, Status, TraceParent,
};
use crate::messaging::queue_for;
use crate::store::{
    waiting_messages, NotificationRecord, OrderFilter, OrderPage, OrderTrail, OrderView, Placed, PreparedOrder,
    Requested, StoreError, Transition, WaitingMessage,
};
use rusqlite::{params, Connection, OptionalExtension, Row};

/// The id of a message the writer is about to queue, already written into
/// its order's row (`placed_message`, `outcome_message` or the list
/// `messages`, schema version 9) by the statement that placed or moved the
/// order: an order's trail looks its waiting messages up by those ids.
/// `enqueue` takes nothing else, so every message the writer queues is
/// listed with its order.
pub(super) struct Listed(i64);

/// Queues an event for delivery (the outbox row, and the `db` broker's
/// queue), as the message `listed` with its order.
pub(super) fn enqueue(conn: &Writer<'_>, listed: Listed, event: Event) -> Result<(), StoreError> {
    let body = event.to_json();
    enqueue_json(conn, listed, event, body)
}

/// Queues `event`, written as `body`, and keeps both for this process's
/// consumer of its queue (`recent`).
fn enqueue_json(conn: &Writer<'_>, Listed(id): Listed, event: Event, body: String) -> Result<(), StoreError> {
    let queue = Queue::named(queue_for(&event))?;
    conn.stmt(queue.enqueue())
        .and_then(|mut s| s.execute(params![id, event.event_type.routing_key(), body]))
        .map_err(db_err)?;
    if conn.recent.wanted(queue) {
        conn.recent.keep(queue, Kept { id, body, event });
    }
    Ok(())
}

/// Moves an order from `from` to `to`, recording when, and lists the
/// message that tells of the move with the order. Returns `None`, and
/// changes nothing, when the order is missing or no longer in `from`: the
/// guard that makes a repeated event harmless. A move to `completed` tells
/// no one: it is `complete`.
pub(super) fn transition(
    conn: &Writer<'_>,
    id: OrderId,
    from: Status,
    to: Status,
    reason: Option<&str>,
    now: i64,
) -> Result<Option<Listed>, StoreError> {
    if !from.can_become(to) || to == Status::Completed {
        return Err(StoreError::Other(anyhow::anyhow!("an order cannot go from {from} to {to} with a message")));
    }
    // An id a move that does not happen takes is simply never used.
    let message = conn.next_message_id();
    let mut buf = [0; 36];
    let args = params![uuid_text(id.as_uuid(), &mut buf), reason, now, from.as_str(), message];
    let changed = match to {
        Status::Reserved => conn.stmt(Hot::Reserve).and_then(|mut s| s.execute(args)),
        Status::Rejected => conn.stmt(Hot::Reject).and_then(|mut s| s.execute(args)),
        // Clients' requests: rare enough for the statement cache.
        Status::Cancelled => conn
            .prepare_cached(
                "UPDATE orders SET status = 'cancelled', reason = ?2, updated_at = ?3, cancelled_at = ?3,
                    messages = concat_ws(' ', messages, ?5)
                 WHERE id = ?1 AND status = ?4",
            )
            .and_then(|mut s| s.execute(args)),
        Status::Shipped => conn
            .prepare_cached(
                "UPDATE orders SET status = 'shipped', reason = ?2, updated_at = ?3, shipped_at = ?3,
                    messages = concat_ws(' ', messages, ?5)
                 WHERE id = ?1 AND status = ?4",
            )
            .and_then(|mut s| s.execute(args)),
        Status::Placed | Status::Completed => unreachable!("checked above"),
    }
    .map_err(db_err)?;
    Ok((changed == 1).then_some(Listed(message)))
}

/// Moves a reserved order to `completed`, recording when. Returns false,
/// and changes nothing, when the order is missing or no longer reserved.
pub(super) fn complete(conn: &Writer<'_>, id: OrderId, now: i64) -> Result<bool, StoreError> {
    let mut buf = [0; 36];
    let args = params![uuid_text(id.as_uuid(), &mut buf), None::<&str>, now, Status::Reserved.as_str()];
    let changed = conn.stmt(Hot::Complete).and_then(|mut s| s.execute(args)).map_err(db_err)?;
    Ok(changed == 1)
}

/// Lists a message about an order that does not move it (the inventory's
/// answer to a cancel or a shipment), and, with `release`, records that the
/// order no longer holds its stock. `None` when there is no such order.
pub(super) fn list_message(conn: &Writer<'_>, id: OrderId, release: bool) -> Result<Option<Listed>, StoreError> {
    let message = conn.next_message_id();
    let mut buf = [0; 36];
    let changed = conn
        .prepare_cached(
            "UPDATE orders SET messages = concat_ws(' ', messages, ?2),
                holds_stock = CASE WHEN ?3 THEN 0 ELSE holds_stock END
             WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![uuid_text(id.as_uuid(), &mut buf), message, release]))
        .map_err(db_err)?;
    Ok((changed == 1).then_some(Listed(message)))
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
    let message = conn.next_message_id();
    conn.stmt(Hot::InsertOrder)
        .and_then(|mut s| s.execute(params![id, p.customer_id, p.items, now, p.traceparent, message]))
        .map_err(db_err)?;
    enqueue_json(conn, Listed(message), p.placed, p.event)?;
    Ok(Placed { id: p.id, created_at: now, replayed: false })
}

/// Applies a client's request to an order, as the domain decides it: a move
/// is written with its event, in the writer's one transaction. `None` if
/// there is no such order.
pub(super) fn request(conn: &Writer<'_>, id: OrderId, request: Request) -> Result<Option<Requested>, StoreError> {
    let Some(order) = get(conn, id)? else { return Ok(None) };
    let decision = request.decide(order.status);
    let Decision::Move { from, to } = decision else { return Ok(Some(Requested { decision, order })) };
    let now = now_millis();
    let Some(listed) = transition(conn, id, from, to, None, now)? else {
        return Err(StoreError::Other(anyhow::anyhow!("order {id} moved under the writer")));
    };
    let customer = CustomerId::parse(order.customer_id).map_err(|e| StoreError::Other(anyhow::anyhow!("{e}")))?;
    // The move belongs to the order's trace, like the events it causes.
    let trace: Option<String> = conn
        .prepare_cached("SELECT traceparent FROM orders WHERE id = ?1")
        .and_then(|mut s| s.query_row([id.to_string()], |r| r.get(0)))
        .map_err(db_err)?;
    let event = Event::new(request.event_type(), id, customer, order.items, None);
    enqueue(conn, listed, event.in_trace(trace.as_deref().and_then(TraceParent::parse)))?;
    let order = get(conn, id)?.ok_or_else(|| StoreError::Other(anyhow::anyhow!("order {id} vanished")))?;
    Ok(Some(Requested { decision, order }))
}

const ORDER_COLUMNS: &str = "id, customer_id, status, reason, items, created_at, updated_at, reserved_at, \
     completed_at, rejected_at, cancelled_at, shipped_at, traceparent";

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
        trace_id: crate::store::trace_id_of(r.get(12)?),
    })
}

/// The transitions an order went through, in order, from its state times.
fn history_from_row(r: &Row<'_>) -> rusqlite::Result<Vec<Transition>> {
    let reason: Option<String> = r.get(3)?;
    let mut history = vec![Transition { status: Status::Placed, reason: None, at: format_millis(r.get(5)?) }];
    let states = [
        (7, Status::Reserved),
        (8, Status::Completed),
        (9, Status::Rejected),
        (10, Status::Cancelled),
        (11, Status::Shipped),
    ];
    for (column, status) in states {
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
    let text = id.to_string();
    let mut stmt = conn
        .prepare_cached(
            "SELECT event_id, kind, message, sent_at FROM notifications WHERE order_id = ?1 ORDER BY sent_at",
        )
        .map_err(db_err)?;
    let notifications = stmt
        .query_map([&text], |r| {
            Ok(NotificationRecord {
                event_id: r.get(0)?,
                kind: r.get(1)?,
                message: r.get(2)?,
                sent_at: format_millis(r.get(3)?),
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_err)?;
    // The messages the order's row names, by their ids (unless unnamed
    // since); then the unnamed ones, by their bodies (schema version 9).
    let message = |r: &Row<'_>| {
        Ok(WaitingMessage {
            id: r.get(0)?,
            queue: r.get(1)?,
            routing_key: r.get(2)?,
            attempts: r.get(3)?,
            last_error: r.get(4)?,
        })
    };
    let listed: Option<(Option<i64>, Option<i64>, Option<String>)> = conn
        .prepare_cached("SELECT placed_message, outcome_message, messages FROM orders WHERE id = ?1")
        .and_then(|mut s| s.query_row([&text], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional())
        .map_err(db_err)?;
    let (placed, outcome, more) = listed.unwrap_or_default();
    let more = more.iter().flat_map(|ids| ids.split_ascii_whitespace()).map(|id| {
        id.parse::<i64>().map_err(|e| StoreError::Other(anyhow::anyhow!("order {text} lists message '{id}': {e}")))
    });
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, queue, routing_key, attempts, last_error FROM messages WHERE id = ?1 AND unnamed IS NULL",
        )
        .map_err(db_err)?;
    let mut named = Vec::new();
    for message_id in placed.into_iter().chain(outcome).map(Ok).chain(more) {
        named.extend(stmt.query_row([message_id?], message).optional().map_err(db_err)?);
    }
    let unnamed = conn
        .prepare_cached(
            "SELECT id, queue, routing_key, attempts, last_error, CAST(body AS BLOB) FROM messages
             WHERE id IN (SELECT id FROM unnamed_messages) AND body LIKE ?1 ORDER BY id",
        )
        .and_then(|mut s| {
            s.query_map([format!("%{text}%")], |r| Ok((message(r)?, r.get::<_, Vec<u8>>(5)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db_err)?;
    let waiting = waiting_messages(id, named, unnamed);
    Ok(OrderTrail { notifications, waiting })
}

pub(super) fn list(conn: &Connection, f: OrderFilter) -> Result<OrderPage, StoreError> {
    let mut sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE 1 = 1");
    let mut args: Vec<String> = Vec::new();
    if let Some(status) = f.status {
        args.push(status.as_str().to_owned());
        // Names the partial index (schema version 2) that holds this state.
        let state = match status {
            Status::Placed | Status::Reserved => {
                "completed_at IS NULL AND rejected_at IS NULL AND cancelled_at IS NULL"
            }
            Status::Completed => "completed_at IS NOT NULL AND cancelled_at IS NULL AND shipped_at IS NULL",
            Status::Rejected => "rejected_at IS NOT NULL",
            Status::Cancelled => "cancelled_at IS NOT NULL",
            Status::Shipped => "shipped_at IS NOT NULL",
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
