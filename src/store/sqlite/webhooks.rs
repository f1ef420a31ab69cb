//! The webhook delivery queue on SQLite (`crate::store::WebhookStore`).
//!
//! Every claim and settlement is a job of the one writer, so two claims
//! never overlap, even from two processes (SQLite's write lock); they run
//! as background jobs, after the orders waiting in the same round.

use super::{db_err, uuid_text, SqliteStore};
use crate::domain::{format_millis, now_millis, Event, Status};
use crate::store::webhooks::stored_body;
use crate::store::{StoreError, WebhookDeadLetter, WebhookDelivery, WebhookOutcome, WebhookStore};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use std::time::Duration;

/// Queues a delivery for the notification `event` just made, with its order
/// now in `status`; runs in the notifier's transaction.
pub(super) fn enqueue(conn: &Connection, event: &Event, status: Status, now: i64) -> Result<(), StoreError> {
    let Some(body) = crate::domain::webhook_body(event, status, now) else { return Ok(()) };
    conn.prepare_cached(
        "INSERT OR IGNORE INTO webhook_deliveries (id, body, created_at, available_at) VALUES (?1, ?2, ?3, ?3)",
    )
    .and_then(|mut s| s.execute(params![uuid_text(event.event_id, &mut [0; 36]), body, now]))
    .map_err(db_err)?;
    Ok(())
}

fn claim(conn: &Connection, max: usize, lease: Duration) -> Result<Vec<WebhookDelivery>, StoreError> {
    let now = now_millis();
    let until = now + lease.as_millis() as i64;
    conn.prepare_cached(
        "UPDATE webhook_deliveries SET available_at = ?2
         WHERE id IN (SELECT id FROM webhook_deliveries WHERE available_at <= ?1 ORDER BY available_at LIMIT ?3)
         RETURNING id, body, attempts, created_at",
    )
    .and_then(|mut s| {
        s.query_map(params![now, until, max as i64], |r| {
            Ok(WebhookDelivery { id: r.get(0)?, body: r.get(1)?, attempts: r.get(2)?, created_at: r.get(3)? })
        })?
        .collect()
    })
    .map_err(db_err)
}

fn settle(conn: &Connection, id: &str, outcome: WebhookOutcome) -> Result<(), StoreError> {
    let done = match outcome {
        WebhookOutcome::Delivered => {
            conn.prepare_cached("DELETE FROM webhook_deliveries WHERE id = ?1").and_then(|mut s| s.execute([id]))
        }
        WebhookOutcome::Retry { at, error } => conn
            .prepare_cached(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, available_at = ?2, last_error = ?3
                 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![id, at, error])),
        WebhookOutcome::Dead { error } => conn
            .prepare_cached(
                "INSERT OR REPLACE INTO webhook_dead_letters (id, body, attempts, created_at, failed_at, error)
                 SELECT id, body, attempts + 1, created_at, ?2, ?3 FROM webhook_deliveries WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![id, now_millis(), error]))
            .and_then(|_| conn.prepare_cached("DELETE FROM webhook_deliveries WHERE id = ?1")?.execute([id])),
    };
    done.map(drop).map_err(db_err)
}

fn dead_letters(conn: &Connection, limit: usize) -> Result<Vec<WebhookDeadLetter>, StoreError> {
    conn.prepare_cached(
        "SELECT id, body, attempts, error, created_at, failed_at FROM webhook_dead_letters
         ORDER BY failed_at, id LIMIT ?1",
    )
    .and_then(|mut s| {
        s.query_map([limit as i64], |r| {
            Ok(WebhookDeadLetter {
                id: r.get(0)?,
                body: stored_body(r.get(1)?),
                attempts: r.get(2)?,
                error: r.get(3)?,
                created_at: format_millis(r.get(4)?),
                failed_at: format_millis(r.get(5)?),
            })
        })?
        .collect()
    })
    .map_err(db_err)
}

fn replay(conn: &Connection, id: Option<&str>) -> Result<u64, StoreError> {
    let now = now_millis();
    let moved = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO webhook_deliveries (id, body, created_at, available_at)
             SELECT id, body, ?2, ?2 FROM webhook_dead_letters WHERE ?1 IS NULL OR id = ?1",
        )
        .and_then(|mut s| s.execute(params![id, now]))
        .map_err(db_err)?;
    conn.prepare_cached("DELETE FROM webhook_dead_letters WHERE ?1 IS NULL OR id = ?1")
        .and_then(|mut s| s.execute(params![id]))
        .map_err(db_err)?;
    Ok(moved as u64)
}

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn claim_webhooks(&self, max: usize, lease: Duration) -> Result<Vec<WebhookDelivery>, StoreError> {
        // Most polls find nothing due: a read says so without a writer job.
        let due = self
            .read(|c| {
                c.prepare_cached("SELECT 1 FROM webhook_deliveries WHERE available_at <= ?1 LIMIT 1")
                    .and_then(|mut s| s.query_row([now_millis()], |_| Ok(())).optional())
                    .map_err(db_err)
            })
            .await?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        self.write_in_background(move |c| claim(c, max, lease)).await
    }

    async fn settle_webhook(&self, id: &str, outcome: WebhookOutcome) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.write_in_background(move |c| settle(c, &id, outcome)).await
    }

    async fn webhooks_waiting(&self) -> Result<i64, StoreError> {
        self.read(|c| c.query_row("SELECT count(*) FROM webhook_deliveries", [], |r| r.get(0)).map_err(db_err)).await
    }

    async fn webhook_dead_letters(&self, limit: usize) -> Result<Vec<WebhookDeadLetter>, StoreError> {
        self.read(move |c| dead_letters(c, limit)).await
    }

    async fn replay_webhooks(&self, id: Option<String>) -> Result<u64, StoreError> {
        self.write(move |c| replay(c, id.as_deref())).await
    }
}
