//! Pruning: deleting the inbox entries, notifications and idempotency keys
//! older than their windows, one short statement per batch.
//!
//! Each batch is its own transaction of at most `max` rows, found by the
//! primary key where it sorts by time (event ids are UUIDv7) and by the
//! `idempotency_keys_by_time` index (schema version 4) for the keys. The rows
//! are locked `SKIP LOCKED`, so pruners in several processes take different
//! rows instead of waiting for each other, and a key that an order is taking
//! over at that moment (an expired one) is left for the next pass.

use super::{bounded, db_err, PostgresStore};
use crate::domain::first_uuid_of;
use crate::store::{Prunable, StoreError};

impl PostgresStore {
    pub(super) async fn prune_batch(&self, table: Prunable, cutoff: i64, max: usize) -> Result<u64, StoreError> {
        // Ids made in the cutoff's millisecond or before.
        let below = first_uuid_of(cutoff.saturating_add(1));
        let max = max as i64;
        bounded(async {
            let client = self.client().await?;
            let deleted = match &table {
                Prunable::Inbox(consumer) => {
                    let stmt = client
                        .prepare_cached(
                            "DELETE FROM inbox WHERE consumer = $1 AND event_id IN
                             (SELECT event_id FROM inbox WHERE consumer = $1 AND event_id < $2
                              ORDER BY event_id LIMIT $3 FOR UPDATE SKIP LOCKED)",
                        )
                        .await
                        .map_err(db_err)?;
                    client.execute(&stmt, &[consumer, &below, &max]).await
                }
                Prunable::Notifications => {
                    let stmt = client
                        .prepare_cached(
                            "DELETE FROM notifications WHERE event_id IN
                             (SELECT event_id FROM notifications WHERE event_id < $1
                              ORDER BY event_id LIMIT $2 FOR UPDATE SKIP LOCKED)",
                        )
                        .await
                        .map_err(db_err)?;
                    client.execute(&stmt, &[&below, &max]).await
                }
                Prunable::IdempotencyKeys => {
                    let stmt = client
                        .prepare_cached(
                            "DELETE FROM idempotency_keys WHERE key IN
                             (SELECT key FROM idempotency_keys WHERE created_at <= $1
                              ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
                        )
                        .await
                        .map_err(db_err)?;
                    client.execute(&stmt, &[&cutoff, &max]).await
                }
            };
            deleted.map_err(db_err)
        })
        .await
    }
}
