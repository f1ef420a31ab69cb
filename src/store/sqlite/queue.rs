//! The `messages` table as a durable queue (the `db` broker's storage).
//!
//! A consumer takes a batch, applies it and settles every message in one
//! transaction: applied messages are deleted, failed ones get a later
//! `available_at` (exponential backoff) or move to `dead_letters`. Because it
//! is one transaction, a consumer killed mid-batch changes nothing and the
//! batch is taken again at once by the next consumer: no leases, no timeouts.

use super::db_err;
use super::orders::QUEUED;
use super::pipeline;
use crate::broker::{Reject, RetryPolicy};
use crate::domain::{format_millis, now_millis, Event};
use crate::store::{Consumed, DeadLetter, Effect, Handled, OutboxMessage, StoreError};
use rusqlite::{params, Connection};

struct Message {
    id: i64,
    body: Vec<u8>,
    /// Failed deliveries before this one.
    attempts: u32,
}

pub(super) fn consume(
    conn: &Connection,
    consumer: &str,
    queue: &str,
    effect: Effect,
    max: usize,
    policy: RetryPolicy,
) -> Result<Consumed, StoreError> {
    let now = now_millis();
    let messages = conn
        .prepare_cached(
            "SELECT id, CAST(body AS BLOB), attempts FROM messages
             WHERE queue = ?1 AND available_at <= ?2 ORDER BY id LIMIT ?3",
        )
        .and_then(|mut s| {
            s.query_map(params![queue, now, max as i64], |r| {
                Ok(Message { id: r.get(0)?, body: r.get(1)?, attempts: r.get(2)? })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db_err)?;
    let mut consumed = Consumed { taken: messages.len(), ..Consumed::default() };
    let mut events = Vec::with_capacity(messages.len());
    let mut ids = Vec::with_capacity(messages.len());
    for m in messages {
        match Event::from_json(&m.body) {
            Ok(event) => {
                events.push(event);
                ids.push((m.id, m.attempts));
            }
            Err(e) => {
                tracing::warn!(consumer, message_id = m.id, error = %e, "poison message dead-lettered");
                dead_letter(conn, m.id, m.attempts + 1, &format!("invalid event: {e}"), now)?;
                consumed.dead_lettered += 1;
            }
        }
    }
    if events.is_empty() {
        return Ok(consumed);
    }
    let results = match effect {
        Effect::Reserve => pipeline::reserve(conn, consumer, events.clone())?,
        Effect::Notify => pipeline::notify(conn, consumer, events.clone())?,
    };
    let mut delete = conn.prepare_cached("DELETE FROM messages WHERE id = ?1").map_err(db_err)?;
    for (((id, attempts), event), result) in ids.into_iter().zip(events).zip(results) {
        match result {
            Handled::Done => {
                delete.execute([id]).map_err(db_err)?;
                consumed.applied.push(event);
            }
            Handled::Duplicate => {
                delete.execute([id]).map_err(db_err)?;
            }
            Handled::Retry(reason) => {
                let attempts = attempts + 1;
                tracing::warn!(consumer, message_id = id, attempts, %reason, "event not applied");
                match policy.after_failure(attempts) {
                    Reject::RetryAfter(delay) => {
                        conn.prepare_cached(
                            "UPDATE messages SET attempts = ?2, available_at = ?3, last_error = ?4 WHERE id = ?1",
                        )
                        .and_then(|mut s| s.execute(params![id, attempts, now + delay.as_millis() as i64, reason]))
                        .map_err(db_err)?;
                        consumed.retried += 1;
                    }
                    Reject::DeadLetter => {
                        dead_letter(conn, id, attempts, &reason, now)?;
                        consumed.dead_lettered += 1;
                    }
                }
            }
        }
    }
    Ok(consumed)
}

fn dead_letter(conn: &Connection, id: i64, attempts: u32, error: &str, now: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO dead_letters (queue, routing_key, body, attempts, error, failed_at)
         SELECT queue, routing_key, body, ?2, ?3, ?4 FROM messages WHERE id = ?1",
    )
    .and_then(|mut s| s.execute(params![id, attempts, error, now]))
    .map_err(db_err)?;
    conn.prepare_cached("DELETE FROM messages WHERE id = ?1").and_then(|mut s| s.execute([id])).map_err(db_err)?;
    Ok(())
}

/// The oldest outbox rows, for the relay.
pub(super) fn outbox(conn: &Connection, max: usize) -> Result<Vec<OutboxMessage>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT id, routing_key, body FROM messages ORDER BY id LIMIT ?1").map_err(db_err)?;
    let rows = stmt
        .query_map([max as i64], |r| {
            let id: i64 = r.get(0)?;
            Ok(OutboxMessage { id, routing_key: r.get(1)?, body: r.get(2)?, message_id: id.to_string() })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_err)?;
    Ok(rows)
}

/// Deletes outbox rows the broker has confirmed.
pub(super) fn forget(conn: &Connection, ids: &[i64]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached("DELETE FROM messages WHERE id = ?1").map_err(db_err)?;
    for id in ids {
        stmt.execute([id]).map_err(db_err)?;
    }
    Ok(())
}

pub(super) fn dead_letters(conn: &Connection, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, queue, routing_key, attempts, error, failed_at, CAST(body AS BLOB) FROM dead_letters ORDER BY id LIMIT ?1",
        )
        .map_err(db_err)?;
    let rows = stmt
        .query_map([limit as i64], |r| {
            let body: Vec<u8> = r.get(6)?;
            Ok(DeadLetter {
                id: r.get::<_, i64>(0)?.to_string(),
                queue: r.get(1)?,
                routing_key: r.get(2)?,
                attempts: r.get(3)?,
                error: r.get(4)?,
                failed_at: format_millis(r.get(5)?),
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_err)?;
    Ok(rows)
}

pub(super) fn replay(conn: &Connection, id: Option<i64>) -> Result<u64, StoreError> {
    let filter = if id.is_some() { "WHERE id = ?1" } else { "WHERE ?1 IS NULL" };
    conn.execute(
        &format!(
            "INSERT INTO messages (queue, routing_key, body)
             SELECT queue, routing_key, body FROM dead_letters {filter} ORDER BY id"
        ),
        [id],
    )
    .map_err(db_err)?;
    let moved = conn.execute(&format!("DELETE FROM dead_letters {filter}"), [id]).map_err(db_err)?;
    QUEUED.set(true);
    Ok(moved as u64)
}

pub(super) fn counts(conn: &Connection) -> Result<(i64, i64), StoreError> {
    conn.query_row("SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM dead_letters)", [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .map_err(db_err)
}
