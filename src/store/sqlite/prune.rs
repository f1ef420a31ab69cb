//! Pruning: deleting the inbox entries, notifications and idempotency keys
//! older than their windows, a bounded batch per writer job.
//!
//! Every write goes through the one writer, so a delete of many rows would
//! hold every order placed behind it. A batch is a background job (orders in
//! the same round run first) of at most the caller's `max` rows, found by the
//! primary key where it sorts by time (event ids are UUIDv7) and by the
//! `idempotency_keys_by_time` index (schema version 6) for the keys, whose
//! primary key is the client's.

use super::{db_err, SqliteStore};
use crate::domain::first_uuid_of;
use crate::store::{Prunable, StoreError};
use rusqlite::params;

impl SqliteStore {
    pub(super) async fn prune_batch(&self, table: Prunable, cutoff: i64, max: usize) -> Result<u64, StoreError> {
        // Ids made in the cutoff's millisecond or before.
        let below = first_uuid_of(cutoff.saturating_add(1)).hyphenated().to_string();
        let max = max as i64;
        self.write_in_background(move |c| {
            let deleted = match &table {
                Prunable::Inbox(consumer) => c
                    .prepare_cached(
                        "DELETE FROM inbox WHERE consumer = ?1 AND event_id IN
                         (SELECT event_id FROM inbox WHERE consumer = ?1 AND event_id < ?2 ORDER BY event_id LIMIT ?3)",
                    )
                    .and_then(|mut s| s.execute(params![consumer, below, max])),
                Prunable::Notifications => c
                    .prepare_cached(
                        "DELETE FROM notifications WHERE event_id IN
                         (SELECT event_id FROM notifications WHERE event_id < ?1 ORDER BY event_id LIMIT ?2)",
                    )
                    .and_then(|mut s| s.execute(params![below, max])),
                Prunable::IdempotencyKeys => c
                    .prepare_cached(
                        "DELETE FROM idempotency_keys WHERE key IN
                         (SELECT key FROM idempotency_keys WHERE created_at <= ?1 ORDER BY created_at LIMIT ?2)",
                    )
                    .and_then(|mut s| s.execute(params![cutoff, max])),
            };
            deleted.map(|n| n as u64).map_err(db_err)
        })
        .await
    }
}
