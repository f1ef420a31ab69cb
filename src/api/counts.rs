//! The pipeline's counts that `/metrics` shows (orders per status, queued
//! messages, dead letters), at a cost that does not grow with the scrapes.
//!
//! Counting reads every order and every queued message, so its cost grows
//! with the tables: cheap on a small database, a second of a core's time on a
//! large one. The dashboard scrapes every two seconds from each open page, and
//! a count per scrape would then keep a core busy and make each scrape as slow
//! as the count. So a process counts at most one at a time, shared by every
//! scrape that arrives meanwhile. A count that took less than `WAIT_UNDER` is
//! done again for the next scrape, so a small database's values are always
//! current. A longer one stays in use for `DUTY` times as long as it took, so
//! counting takes no more than a tenth of a core and the values are at most
//! that old; the next count runs in the background while scrapes get the
//! values it will replace.

use crate::store::{PipelineStats, Store};
use futures::future::{BoxFuture, FutureExt, Shared};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A count stays in use this many times as long as it took.
const DUTY: u32 = 10;
/// A count that took less than this is awaited rather than run in the background.
const WAIT_UNDER: Duration = Duration::from_millis(50);

#[derive(Clone, Default)]
pub(super) struct Counts(Arc<Mutex<Latest>>);

#[derive(Default)]
struct Latest {
    stats: Option<PipelineStats>,
    taken: Option<Instant>,
    took: Duration,
    /// The count under way, which every scrape that needs it awaits.
    running: Option<Shared<BoxFuture<'static, ()>>>,
}

impl Counts {
    /// The latest counts, counted again first when they are older than their
    /// cost allows; `None` only while the store cannot count at all.
    pub(super) async fn get(&self, store: &Arc<dyn Store>) -> Option<PipelineStats> {
        let wait = {
            let mut latest = self.0.lock().unwrap();
            let current = latest.took >= WAIT_UNDER && latest.taken.is_some_and(|t| t.elapsed() < latest.took * DUTY);
            if current {
                return latest.stats.clone();
            }
            // A count that panicked left its future finished but in place.
            if latest.running.as_ref().is_some_and(|r| r.peek().is_some()) {
                latest.running = None;
            }
            let running = latest.running.get_or_insert_with(|| self.count(store.clone())).clone();
            if latest.stats.is_some() && latest.took >= WAIT_UNDER {
                return latest.stats.clone();
            }
            running
        };
        wait.await;
        self.0.lock().unwrap().stats.clone()
    }

    /// Starts a count on a task of its own, so that it finishes (and is
    /// kept) even if the scrape that started it goes away.
    fn count(&self, store: Arc<dyn Store>) -> Shared<BoxFuture<'static, ()>> {
        let latest = self.0.clone();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let stats = store.stats().await;
            let mut latest = latest.lock().unwrap();
            latest.took = start.elapsed();
            latest.taken = Some(Instant::now());
            latest.running = None;
            match stats {
                Ok(stats) => latest.stats = Some(stats),
                Err(e) => tracing::warn!(error = %e, "counting orders and messages for /metrics failed"),
            }
        });
        task.map(|_| ()).boxed().shared()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CustomerId, LineItem, NewOrder, OrderId, Quantity, Sku};
    use crate::store::PlaceOrder;
    use crate::store::SqliteStore;

    fn placed(stats: &PipelineStats) -> i64 {
        stats.orders_by_status.iter().find(|(s, _)| s == "placed").map_or(0, |(_, n)| *n)
    }

    #[tokio::test]
    async fn a_cheap_count_is_always_current() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = SqliteStore::open(dir.path().join("orders.db").to_str().unwrap()).await.unwrap();
        let store: Arc<dyn Store> = Arc::new(sqlite);
        let counts = Counts::default();
        assert_eq!(placed(&counts.get(&store).await.unwrap()), 0);
        let items = vec![LineItem { sku: Sku::parse("tea").unwrap(), quantity: Quantity::parse(1).unwrap() }];
        let order = NewOrder::new(CustomerId::parse("c1").unwrap(), items).unwrap();
        store.place_order(PlaceOrder { id: OrderId::new(), order, idempotency: None, trace: None }).await.unwrap();
        let stats = counts.get(&store).await.unwrap();
        assert_eq!((placed(&stats), stats.queued_messages), (1, 1));
    }
}
