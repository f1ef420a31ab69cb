//! The `Store` and `QueueStore` traits for SQLite: each method hands its work
//! to the writer (group commit) or to a read connection.

use super::{db_err, effects, orders, outcome, queue, Guard, Job, SqliteStore};
use crate::domain::{now_millis, Event, OrderId, Status};
use crate::messaging::{DeadLetter, Publisher, RetryPolicy};
use crate::store::{
    Consumed, Effect, Handled, OrderFilter, OrderPage, OrderView, PipelineStats, PlaceOrder, Placed, PreparedOrder,
    Prunable, QueueStore, StockLevel, Store, StoreError,
};
use async_trait::async_trait;
use tokio::sync::watch;

/// Messages of a consumer's batch settled by one writer job: a part takes
/// the writer about 0.2 ms, the longest an order placed meanwhile waits for it.
pub(super) const SETTLE_PART: usize = 32;

/// How long the relay holds the outbox rows it publishes from other relays.
const RELAY_LEASE_MS: i64 = 5_000;

#[async_trait]
impl Store for SqliteStore {
    async fn place_order(&self, order: PlaceOrder) -> Result<Placed, StoreError> {
        let order = PreparedOrder::new(order);
        self.write_checked_first(move |c| orders::place(c, order)).await
    }

    async fn get_order(&self, id: OrderId) -> Result<Option<OrderView>, StoreError> {
        self.read(move |c| orders::get(c, id)).await
    }

    async fn list_orders(&self, filter: OrderFilter) -> Result<OrderPage, StoreError> {
        self.read(move |c| orders::list(c, filter)).await
    }

    async fn reserve(&self, consumer: &str, events: Vec<Event>) -> Result<Vec<Handled>, StoreError> {
        let consumer = consumer.to_owned();
        let ids: Vec<OrderId> = events.iter().map(|e| e.order_id).collect();
        let handled = self.write_in_background(move |c| effects::reserve(c, &consumer, &events)).await?;
        self.statuses_moved(moved_ids(&ids, &handled));
        Ok(handled)
    }

    async fn notify(&self, consumer: &str, events: Vec<Event>) -> Result<Vec<Handled>, StoreError> {
        let consumer = consumer.to_owned();
        let ids: Vec<OrderId> = events.iter().map(|e| e.order_id).collect();
        let handled = self.write_in_background(move |c| effects::notify(c, &consumer, &events)).await?;
        self.statuses_moved(moved_ids(&ids, &handled));
        Ok(handled)
    }

    async fn set_stock(&self, sku: &str, available: i64) -> Result<(), StoreError> {
        let sku = sku.to_owned();
        self.write(move |c| effects::set_stock(c, &sku, available)).await
    }

    async fn list_stock(&self) -> Result<Vec<StockLevel>, StoreError> {
        self.read(effects::list_stock).await
    }

    async fn stats(&self) -> Result<PipelineStats, StoreError> {
        self.read(|c| {
            // Each state counted from its partial index, not from the table.
            let mut stmt = c
                .prepare_cached(
                    "SELECT status, count(*) FROM orders WHERE completed_at IS NULL AND rejected_at IS NULL GROUP BY status
                     UNION ALL SELECT 'completed', count(*) FROM orders WHERE completed_at IS NOT NULL
                     UNION ALL SELECT 'rejected', count(*) FROM orders WHERE rejected_at IS NOT NULL",
                )
                .map_err(db_err)?;
            let orders_by_status = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(db_err)?;
            let (queued_messages, dead_letters) = queue::counts(c)?;
            Ok(PipelineStats { orders_by_status, queued_messages, dead_letters })
        })
        .await
    }

    async fn statuses(&self, ids: &[OrderId]) -> Result<Vec<(OrderId, Status)>, StoreError> {
        let ids = ids.to_vec();
        self.read(move |c| orders::statuses(c, &ids)).await
    }

    fn status_signal(&self) -> watch::Receiver<u64> {
        self.statuses.subscribe()
    }

    async fn get_orders(&self, ids: &[OrderId]) -> Result<Vec<OrderView>, StoreError> {
        let ids = ids.to_vec();
        self.read(move |c| ids.iter().filter_map(|id| orders::get(c, *id).transpose()).collect()).await
    }

    fn moved_orders(&self) -> tokio::sync::broadcast::Receiver<crate::store::MovedOrders> {
        self.moved.subscribe()
    }

    async fn order_trail(&self, id: OrderId) -> Result<crate::store::OrderTrail, StoreError> {
        self.read(move |c| orders::trail(c, id)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self.writer.is_closed() {
            return Err(StoreError::Unavailable("writer has stopped".into()));
        }
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(db_err)).await
    }

    async fn prune(&self, table: Prunable, cutoff: i64, max: usize) -> Result<u64, StoreError> {
        self.prune_batch(table, cutoff, max).await
    }
}

#[async_trait]
impl QueueStore for SqliteStore {
    async fn consume(
        &self,
        consumer: &str,
        queue: &str,
        effect: Effect,
        max: usize,
        policy: RetryPolicy,
    ) -> Result<Consumed, StoreError> {
        let (consumer, from, now) = (consumer.to_owned(), queue::Queue::named(queue)?, now_millis());
        let batch = self.read_here(|c| queue::take(c, &self.recent, from, now, max))?;
        if batch.is_empty() {
            return Ok(Consumed::default());
        }
        metrics::counter!("orderflow_store_events_reused_total").increment(batch.reused as u64);
        // No statement of a batch fails on its input: message ids are new,
        // inbox and notification inserts ignore repeats, and stock is taken
        // only as far as the levels read in the same transaction allow.
        // The batch goes to the writer in parts, each a background job that
        // settles its own messages, so that orders placed meanwhile are
        // committed between two parts rather than after the whole batch.
        let parts = batch
            .split(SETTLE_PART)
            .map(|part| {
                let consumer = consumer.clone();
                self.send(Guard::AbortOnError, Job::Background, move |c| {
                    queue::settle(c, &consumer, part, effect, policy)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut consumed = Consumed::default();
        for part in parts {
            let part = outcome(part).await?;
            self.statuses_moved(part.applied.iter().map(|e| e.order_id).collect());
            consumed.add(part);
        }
        Ok(consumed)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.read(move |c| queue::dead_letters(c, limit)).await
    }

    async fn replay(&self, id: Option<i64>) -> Result<u64, StoreError> {
        self.write(move |c| queue::replay(c, id)).await
    }

    fn message_signal(&self) -> watch::Receiver<u64> {
        self.messages.clone()
    }

    /// SQLite has one writer but no row locks to share the outbox between
    /// relays: run one relay per database (the consumers' inboxes absorb the
    /// duplicates two would publish).
    async fn relay(&self, max: usize, publisher: &dyn Publisher) -> Result<usize, StoreError> {
        // Claimed in a commit of its own, which SQLite has synced before the
        // rows leave the process.
        let batch = self.write(move |c| queue::claim_outbox(c, max, RELAY_LEASE_MS)).await?;
        if batch.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = batch.iter().map(|m| m.id).collect();
        if let Err(e) = publisher.publish(&batch).await {
            // Handed back for the next attempt; if that fails too, the lease ends.
            let _ = self.write(move |c| queue::release_outbox(c, &ids)).await;
            return Err(e.into());
        }
        self.write(move |c| queue::forget(c, &ids)).await?;
        Ok(batch.len())
    }
}

impl SqliteStore {
    /// Wakes the live streams after a commit that moved these orders.
    fn statuses_moved(&self, ids: Vec<OrderId>) {
        if !ids.is_empty() {
            self.statuses.send_modify(|n| *n = n.wrapping_add(1));
            // Nobody following `GET /events`: nothing to send.
            if self.moved.receiver_count() > 0 {
                let _ = self.moved.send(ids.into());
            }
        }
    }
}

/// The orders of `ids` whose event was applied.
fn moved_ids(ids: &[OrderId], handled: &[Handled]) -> Vec<OrderId> {
    ids.iter().zip(handled).filter(|(_, h)| **h == Handled::Done).map(|(id, _)| *id).collect()
}
