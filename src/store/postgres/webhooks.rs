//! The webhook delivery queue on PostgreSQL (`crate::store::WebhookStore`).
//!
//! Claims take due rows with `FOR UPDATE SKIP LOCKED` and lease them in the
//! same statement, so notifier processes claiming at once take different
//! deliveries and never wait on each other.

use super::{bounded, db_err, PostgresStore};
use crate::domain::{format_millis, now_millis, Event, Status};
use crate::store::webhooks::stored_body;
use crate::store::{StoreError, WebhookDeadLetter, WebhookDelivery, WebhookOutcome, WebhookStore};
use async_trait::async_trait;
use deadpool_postgres::Transaction;
use std::time::Duration;

/// Queues a delivery for each notification just recorded, with the status
/// it left its order in; runs in the notifier's transaction.
pub(super) async fn enqueue(tx: &Transaction<'_>, notified: &[(&Event, Status)], now: i64) -> Result<(), StoreError> {
    let (ids, bodies): (Vec<String>, Vec<String>) = notified
        .iter()
        .filter_map(|(event, status)| {
            crate::domain::webhook_body(event, *status, now).map(|body| (event.event_id.to_string(), body))
        })
        .unzip();
    if ids.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO webhook_deliveries (id, body, created_at, available_at)
             SELECT i, b, $3, $3 FROM unnest($1::text[], $2::text[]) AS t(i, b) ON CONFLICT (id) DO NOTHING",
        )
        .await
        .map_err(db_err)?;
    tx.execute(&stmt, &[&ids, &bodies, &now]).await.map_err(db_err)?;
    Ok(())
}

#[async_trait]
impl WebhookStore for PostgresStore {
    async fn claim_webhooks(&self, max: usize, lease: Duration) -> Result<Vec<WebhookDelivery>, StoreError> {
        let now = now_millis();
        let until = now + lease.as_millis() as i64;
        bounded(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "UPDATE webhook_deliveries AS d SET available_at = $2
                     FROM (SELECT id FROM webhook_deliveries WHERE available_at <= $1
                           ORDER BY available_at LIMIT $3 FOR UPDATE SKIP LOCKED) AS due
                     WHERE d.id = due.id
                     RETURNING d.id, d.body, d.attempts, d.created_at",
                )
                .await
                .map_err(db_err)?;
            let rows = client.query(&stmt, &[&now, &until, &(max as i64)]).await.map_err(db_err)?;
            Ok(rows
                .iter()
                .map(|r| WebhookDelivery {
                    id: r.get(0),
                    body: r.get(1),
                    attempts: r.get::<_, i32>(2).into(),
                    created_at: r.get(3),
                })
                .collect())
        })
        .await
    }

    async fn settle_webhook(&self, id: &str, outcome: WebhookOutcome) -> Result<(), StoreError> {
        bounded(async {
            let client = self.client().await?;
            match outcome {
                WebhookOutcome::Delivered => {
                    let stmt =
                        client.prepare_cached("DELETE FROM webhook_deliveries WHERE id = $1").await.map_err(db_err)?;
                    client.execute(&stmt, &[&id]).await.map_err(db_err)?;
                }
                WebhookOutcome::Retry { at, error } => {
                    let stmt = client
                        .prepare_cached(
                            "UPDATE webhook_deliveries SET attempts = attempts + 1, available_at = $2, last_error = $3
                             WHERE id = $1",
                        )
                        .await
                        .map_err(db_err)?;
                    client.execute(&stmt, &[&id, &at, &error]).await.map_err(db_err)?;
                }
                WebhookOutcome::Dead { error } => {
                    // One statement: the row moves whole or not at all.
                    let stmt = client
                        .prepare_cached(
                            "WITH gone AS (DELETE FROM webhook_deliveries WHERE id = $1
                                           RETURNING id, body, attempts, created_at)
                             INSERT INTO webhook_dead_letters (id, body, attempts, created_at, failed_at, error)
                             SELECT id, body, attempts + 1, created_at, $2, $3 FROM gone
                             ON CONFLICT (id) DO UPDATE SET body = excluded.body, attempts = excluded.attempts,
                                 created_at = excluded.created_at, failed_at = excluded.failed_at,
                                 error = excluded.error",
                        )
                        .await
                        .map_err(db_err)?;
                    client.execute(&stmt, &[&id, &now_millis(), &error]).await.map_err(db_err)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn webhooks_waiting(&self) -> Result<i64, StoreError> {
        bounded(async {
            let client = self.client().await?;
            let row = client.query_one("SELECT count(*) FROM webhook_deliveries", &[]).await.map_err(db_err)?;
            Ok(row.get(0))
        })
        .await
    }

    async fn webhook_dead_letters(&self, limit: usize) -> Result<Vec<WebhookDeadLetter>, StoreError> {
        bounded(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT id, body, attempts, error, created_at, failed_at FROM webhook_dead_letters
                     ORDER BY failed_at, id LIMIT $1",
                    &[&(limit as i64)],
                )
                .await
                .map_err(db_err)?;
            Ok(rows
                .iter()
                .map(|r| WebhookDeadLetter {
                    id: r.get(0),
                    body: stored_body(r.get(1)),
                    attempts: r.get::<_, i32>(2).into(),
                    error: r.get(3),
                    created_at: format_millis(r.get(4)),
                    failed_at: format_millis(r.get(5)),
                })
                .collect())
        })
        .await
    }

    async fn replay_webhooks(&self, id: Option<String>) -> Result<u64, StoreError> {
        bounded(async {
            let client = self.client().await?;
            let moved = client
                .execute(
                    "WITH gone AS (DELETE FROM webhook_dead_letters WHERE $1::text IS NULL OR id = $1
                                   RETURNING id, body)
                     INSERT INTO webhook_deliveries (id, body, created_at, available_at)
                     SELECT id, body, $2, $2 FROM gone ON CONFLICT (id) DO NOTHING",
                    &[&id, &now_millis()],
                )
                .await
                .map_err(db_err)?;
            Ok(moved)
        })
        .await
    }
}
