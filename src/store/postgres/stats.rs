//! The pipeline's counts for `/metrics`: orders per status, queued messages
//! and dead letters, and the front of each queue.
//!
//! Counting reads every row: a second or more of a core's time at a million
//! orders, however it is done. Each table is read in one sequential scan
//! without parallel workers, so a count never takes every core from the
//! commits of new orders, and a sequential scan reads a large table through
//! a small ring of buffers instead of evicting the pages they need. The scan
//! of `messages` also finds each queue's smallest id, from which its front
//! row is read through `messages_by_queue`: a walk of that index from the
//! start would first pass the entries of every consumed row VACUUM has not
//! yet removed. `src/api/counts.rs` decides how often this runs.

use super::db_err;
use crate::messaging::written_millis;
use crate::store::{PipelineStats, StoreError};
use deadpool_postgres::{GenericClient, Object};

pub(super) async fn count(client: &mut Object) -> Result<PipelineStats, StoreError> {
    let tx = client.transaction().await.map_err(db_err)?;
    tx.batch_execute("SET LOCAL max_parallel_workers_per_gather = 0").await.map_err(db_err)?;
    let rows = tx.query("SELECT status, count(*) FROM orders GROUP BY status", &[]).await.map_err(db_err)?;
    let orders_by_status = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    // Each queue's row count and smallest id.
    let rows = tx.query("SELECT queue, count(*), min(id) FROM messages GROUP BY queue", &[]).await.map_err(db_err)?;
    let queues: Vec<(String, i64, i64)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    let dead_letters = tx.query_one("SELECT count(*) FROM dead_letters", &[]).await.map_err(db_err)?.get(0);
    let oldest_messages = fronts(&tx, &queues).await?;
    tx.commit().await.map_err(db_err)?;
    Ok(PipelineStats {
        orders_by_status,
        queued_messages: queues.iter().map(|(_, n, _)| n).sum(),
        dead_letters,
        oldest_messages,
    })
}

/// When the event at the front of each queue was written, for the queues
/// whose front row is an event: the first row from the smallest id the count
/// saw (it may have been consumed since).
async fn fronts(client: &impl GenericClient, queues: &[(String, i64, i64)]) -> Result<Vec<(String, i64)>, StoreError> {
    let first = client
        .prepare_cached("SELECT body FROM messages WHERE queue = $1 AND id >= $2 ORDER BY queue, id LIMIT 1")
        .await
        .map_err(db_err)?;
    let mut fronts = Vec::new();
    for (queue, _, from) in queues {
        if let Some(row) = client.query_opt(&first, &[queue, from]).await.map_err(db_err)? {
            if let Some(at) = written_millis(row.get(0)) {
                fronts.push((queue.clone(), at));
            }
        }
    }
    Ok(fronts)
}
