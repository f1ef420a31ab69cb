//! The `messages` table as a durable queue (the `db` broker's storage).
//!
//! A claim leases messages by pushing `locked_until` forward and counting the
//! delivery; an ack deletes them. A consumer that dies leaves its lease to
//! expire, and the message is delivered again. A message that fails is made
//! visible again after a backoff, or moved to `dead_letters` for good.

use super::db_err;
use super::orders::QUEUED;
use crate::domain::{format_millis, now_millis};
use crate::store::{DeadLetter, QueuedMessage, StoreError};
use rusqlite::{params, Connection};

pub(super) fn claim(conn: &Connection, queue: &str, max: usize, lease_ms: i64) -> Result<Vec<QueuedMessage>, StoreError> {
    let now = now_millis();
    let mut stmt = conn
        .prepare_cached(
            "UPDATE messages SET attempts = attempts + 1, locked_until = ?3
             WHERE id IN (SELECT id FROM messages
                          WHERE queue = ?1 AND available_at <= ?2 AND locked_until <= ?2
                          ORDER BY id LIMIT ?4)
             RETURNING id, CAST(body AS BLOB), attempts",
        )
        .map_err(db_err)?;
    let mut claimed = stmt
        .query_map(params![queue, now, now + lease_ms, max as i64], |r| {
            Ok(QueuedMessage { id: r.get(0)?, body: r.get(1)?, attempts: r.get(2)? })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_err)?;
    claimed.sort_by_key(|m| m.id);
    Ok(claimed)
}

pub(super) fn ack(conn: &Connection, ids: &[i64]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached("DELETE FROM messages WHERE id = ?1").map_err(db_err)?;
    for id in ids {
        stmt.execute([id]).map_err(db_err)?;
    }
    Ok(())
}

pub(super) fn fail(conn: &Connection, id: i64, error: &str, retry_after_ms: Option<i64>) -> Result<(), StoreError> {
    let now = now_millis();
    match retry_after_ms {
        Some(delay) => {
            conn.prepare_cached("UPDATE messages SET available_at = ?2, locked_until = 0, last_error = ?3 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![id, now + delay, error]))
                .map_err(db_err)?;
        }
        None => {
            conn.prepare_cached(
                "INSERT INTO dead_letters (queue, routing_key, body, attempts, error, failed_at)
                 SELECT queue, routing_key, body, attempts, ?2, ?3 FROM messages WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![id, error, now]))
            .map_err(db_err)?;
            conn.prepare_cached("DELETE FROM messages WHERE id = ?1")
                .and_then(|mut s| s.execute([id]))
                .map_err(db_err)?;
        }
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
                id: r.get(0)?,
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
