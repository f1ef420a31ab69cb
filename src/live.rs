//! The orders this process's live streams watch, and one task that reads
//! their statuses when they may have moved.
//!
//! A stream registers its order here and waits on a `watch` channel, which
//! holds only the latest status: the hub never waits for a stream, so a slow
//! client cannot hold up anyone else, and what it missed it reads from the
//! order's history when it wakes. The task reads every watched order's status
//! in one call when the store signals that a commit moved statuses (in this
//! process, or through PostgreSQL's NOTIFY in another), and every second
//! anyway, for changes made where no signal reaches (another process on the
//! same SQLite file).

use crate::domain::{OrderId, Status};
use crate::store::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Longest a change goes unread when no signal tells of it.
const POLL: Duration = Duration::from_secs(1);
/// How long the task lets a burst of commits gather before it reads.
const GATHER: Duration = Duration::from_millis(20);
/// Most orders read in one call.
const CHUNK: usize = 1000;

pub struct Hub {
    store: Arc<dyn Store>,
    /// The latest status read of each watched order. A std mutex: it is held
    /// for map operations only, never across an await.
    watched: Mutex<HashMap<OrderId, watch::Sender<Status>>>,
    streams: Arc<Semaphore>,
    /// Every order's changes, for `GET /events`.
    pub changes: Arc<crate::changes::Changes>,
}

impl Hub {
    /// A hub over `store` admitting at most `max_streams` streams at once.
    pub fn new(store: Arc<dyn Store>, max_streams: usize) -> Arc<Self> {
        let changes = crate::changes::Changes::new(store.clone());
        Arc::new(Self { store, watched: Mutex::default(), streams: Arc::new(Semaphore::new(max_streams)), changes })
    }

    /// A place for one more stream, held until it ends; `None` at the limit.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        self.streams.clone().try_acquire_owned().ok()
    }

    /// Watches `id`, whose status was just read as `current`.
    pub fn watch(&self, id: OrderId, current: Status) -> watch::Receiver<Status> {
        let mut watched = self.watched.lock().expect("hub lock");
        let sender = watched.entry(id).or_insert_with(|| watch::Sender::new(current));
        sender.send_if_modified(|known| advance(known, current));
        sender.subscribe()
    }

    /// Reads the watched orders whenever statuses may have moved, until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        tokio::join!(self.changes.clone().run(stop.clone()), self.watch_statuses(stop));
    }

    async fn watch_statuses(&self, stop: CancellationToken) {
        let mut signal = self.store.status_signal();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = signal.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(POLL) => {}
            }
            tokio::time::sleep(GATHER).await;
            signal.borrow_and_update();
            self.refresh().await;
        }
    }

    async fn refresh(&self) {
        let ids: Vec<OrderId> = {
            let mut watched = self.watched.lock().expect("hub lock");
            watched.retain(|_, sender| sender.receiver_count() > 0);
            watched.keys().copied().collect()
        };
        for chunk in ids.chunks(CHUNK) {
            match self.store.statuses(chunk).await {
                Ok(found) => {
                    let watched = self.watched.lock().expect("hub lock");
                    for (id, status) in found {
                        if let Some(sender) = watched.get(&id) {
                            sender.send_if_modified(|known| advance(known, status));
                        }
                    }
                }
                // The next signal or poll tries again; streams keep what they have.
                Err(e) => tracing::warn!(error = %e, "reading watched orders' statuses failed"),
            }
        }
    }

    /// Orders watched now (for tests and metrics).
    pub fn watched(&self) -> usize {
        self.watched.lock().expect("hub lock").len()
    }
}

/// Moves `known` to `next` when `next` is later; says whether it moved.
fn advance(known: &mut Status, next: Status) -> bool {
    let moved = later(*known, next);
    if moved {
        *known = next;
    }
    moved
}

/// Whether `next` comes after `known` in an order's life: statuses only move
/// forward, so an older read never replaces a newer one.
fn later(known: Status, next: Status) -> bool {
    fn rank(s: Status) -> u8 {
        match s {
            Status::Placed => 0,
            Status::Reserved => 1,
            Status::Completed | Status::Rejected => 2,
        }
    }
    rank(next) > rank(known)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messaging::{QUEUE_INVENTORY_EVENTS, QUEUE_ORDER_EVENTS};
    use crate::store::contract::{drain, order};
    use crate::store::{Database, Effect, SqliteStore};

    /// A watcher hears each move its order makes, an older read never
    /// replaces a newer status, and orders nobody watches are dropped.
    #[tokio::test]
    async fn watchers_hear_their_orders_move_forward_only() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Database> =
            Arc::new(SqliteStore::open(dir.path().join("live.db").to_str().unwrap()).await.unwrap());
        store.set_stock("tea", 5).await.unwrap();
        let id = store.place_order(order("c", &[("tea", 1)], None)).await.unwrap().id;
        let hub = Hub::new(store.clone(), 10);
        let stop = CancellationToken::new();
        tokio::spawn(hub.clone().run(stop.clone()));

        let mut rx = hub.watch(id, Status::Placed);
        drain(&*store, "inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 10).await;
        tokio::time::timeout(Duration::from_secs(5), rx.changed()).await.unwrap().unwrap();
        assert_eq!(*rx.borrow_and_update(), Status::Reserved);
        drain(&*store, "notifier", QUEUE_INVENTORY_EVENTS, Effect::Notify, 10).await;
        tokio::time::timeout(Duration::from_secs(5), rx.changed()).await.unwrap().unwrap();
        assert_eq!(*rx.borrow_and_update(), Status::Completed);

        // A stream that read the order before it moved does not set it back.
        let late = hub.watch(id, Status::Placed);
        assert_eq!(*late.borrow(), Status::Completed);
        assert!(!later(Status::Completed, Status::Reserved) && later(Status::Placed, Status::Rejected));

        drop((rx, late));
        hub.refresh().await;
        assert_eq!(hub.watched(), 0, "an order nobody watches is forgotten");
        stop.cancel();
    }

    #[test]
    fn streams_past_the_limit_are_refused() {
        let hub = Hub::new(Arc::new(NoStore), 2);
        let (a, _b) = (hub.admit().unwrap(), hub.admit().unwrap());
        assert!(hub.admit().is_none());
        drop(a);
        assert!(hub.admit().is_some(), "an ended stream frees its place");
    }

    /// A store the limit test never calls.
    struct NoStore;

    #[async_trait::async_trait]
    impl Store for NoStore {
        async fn place_order(
            &self,
            _: crate::store::PlaceOrder,
        ) -> Result<crate::store::Placed, crate::store::StoreError> {
            unreachable!()
        }
        async fn get_order(&self, _: OrderId) -> Result<Option<crate::store::OrderView>, crate::store::StoreError> {
            unreachable!()
        }
        async fn list_orders(
            &self,
            _: crate::store::OrderFilter,
        ) -> Result<crate::store::OrderPage, crate::store::StoreError> {
            unreachable!()
        }
        async fn reserve(
            &self,
            _: &str,
            _: Vec<crate::domain::Event>,
        ) -> Result<Vec<crate::store::Handled>, crate::store::StoreError> {
            unreachable!()
        }
        async fn notify(
            &self,
            _: &str,
            _: Vec<crate::domain::Event>,
        ) -> Result<Vec<crate::store::Handled>, crate::store::StoreError> {
            unreachable!()
        }
        async fn set_stock(&self, _: &str, _: i64) -> Result<(), crate::store::StoreError> {
            unreachable!()
        }
        async fn list_stock(&self) -> Result<Vec<crate::store::StockLevel>, crate::store::StoreError> {
            unreachable!()
        }
        async fn stats(&self) -> Result<crate::store::PipelineStats, crate::store::StoreError> {
            unreachable!()
        }
        async fn ping(&self) -> Result<(), crate::store::StoreError> {
            unreachable!()
        }
        async fn statuses(&self, _: &[OrderId]) -> Result<Vec<(OrderId, Status)>, crate::store::StoreError> {
            unreachable!()
        }
        fn status_signal(&self) -> watch::Receiver<u64> {
            unreachable!()
        }
        async fn get_orders(&self, _: &[OrderId]) -> Result<Vec<crate::store::OrderView>, crate::store::StoreError> {
            unreachable!()
        }
        fn moved_orders(&self) -> tokio::sync::broadcast::Receiver<crate::store::MovedOrders> {
            unreachable!()
        }
        async fn order_trail(&self, _: OrderId) -> Result<crate::store::OrderTrail, crate::store::StoreError> {
            unreachable!()
        }
        async fn prune(&self, _: crate::store::Prunable, _: i64, _: usize) -> Result<u64, crate::store::StoreError> {
            unreachable!()
        }
    }
}
