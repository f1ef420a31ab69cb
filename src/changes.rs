//! Every order's status changes, for `GET /events`: one reader per process
//! that turns the ids the store says moved into changes, keeps the latest
//! ones for resuming streams, and fans them out to the streams.
//!
//! The store names the orders each commit of the services moved
//! (`Store::moved_orders`: this process's commits on SQLite, every
//! process's through NOTIFY on PostgreSQL). The reader reads those orders
//! in one call and emits each transition of their history it has not emitted
//! yet, so an order placed on another replica shows its `placed` before its
//! `reserved`; orders this process places are announced at once
//! (`placed`), without a read. A change is known by its id,
//! `AT-STATUS-ORDER` (the transition's time in milliseconds, its status,
//! the order), the same on every replica.
//!
//! Streams take changes from a bounded `broadcast` channel: the reader never
//! waits for them, and a stream that falls behind is told to reload
//! (`Item::Reset`). The last `KEPT` changes are kept in arrival order, so a
//! stream that resumes (`Last-Event-ID`) gets what came after its last
//! change. Reading costs nothing while no stream is open: the reader skips
//! the batch, and forgets what it kept, since it would now have a gap.

use crate::domain::{format_millis, CustomerId, OrderId, Status};
use crate::store::{OrderView, Store};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Changes kept for resuming streams.
pub const KEPT: usize = 10_000;
/// Items a stream may fall behind by before it is told to reload.
const BACKLOG: usize = 1024;
/// Most orders read in one call.
const CHUNK: usize = 500;

/// One order entering one status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Change {
    #[serde(skip)]
    pub id: String,
    #[serde(skip)]
    pub at_ms: i64,
    pub order_id: OrderId,
    /// Whose order it is: a customer's stream shows only theirs.
    #[serde(skip)]
    pub customer_id: String,
    pub status: Status,
    pub at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Change {
    fn new(order_id: OrderId, customer_id: String, status: Status, at_ms: i64, reason: Option<String>) -> Self {
        let id = format!("{at_ms}-{}-{order_id}", status.as_str());
        Self { id, at_ms, order_id, customer_id, status, at: format_millis(at_ms), reason }
    }
}

/// What a stream receives.
#[derive(Debug, Clone)]
pub enum Item {
    Change(Arc<Change>),
    /// Changes were missed (the reader lagged behind the store): reload.
    Reset,
}

/// Where a stream starts: what to send first, then the live items.
pub struct Start {
    pub backlog: Vec<Arc<Change>>,
    /// The resumed-from change is no longer kept: the client should reload.
    pub reset: bool,
    pub live: broadcast::Receiver<Item>,
}

struct Kept {
    changes: VecDeque<Arc<Change>>,
    ids: HashSet<String>,
    /// Changes from this time on are all kept (none skipped since).
    whole_since_ms: i64,
}

pub struct Changes {
    store: Arc<dyn Store>,
    /// Held while a change is kept and sent, and while a stream subscribes,
    /// so a stream gets each change once: in its backlog or live.
    kept: Mutex<Kept>,
    sender: broadcast::Sender<Item>,
    /// Set when a change went unkept because no stream was open; the next
    /// stream to start forgets what is kept (it has a gap).
    skipped: AtomicBool,
}

impl Changes {
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        let kept = Kept { changes: VecDeque::new(), ids: HashSet::new(), whole_since_ms: crate::domain::now_millis() };
        let sender = broadcast::Sender::new(BACKLOG);
        Arc::new(Self { store, kept: Mutex::new(kept), sender, skipped: AtomicBool::new(false) })
    }

    /// Starts a stream after the change `last` (a `Last-Event-ID`), or now.
    pub fn start(&self, last: Option<&str>) -> Start {
        let mut kept = self.kept.lock().expect("changes lock");
        if self.skipped.swap(false, Ordering::Relaxed) {
            forget(&mut kept);
        }
        let live = self.sender.subscribe();
        let Some(last) = last else { return Start { backlog: Vec::new(), reset: false, live } };
        if let Some(at) = kept.changes.iter().position(|c| c.id == last) {
            return Start { backlog: kept.changes.iter().skip(at + 1).cloned().collect(), reset: false, live };
        }
        // Another replica's id (they arrive in a slightly different order):
        // every kept change after it in time, when nothing since was skipped.
        match last.split('-').next().and_then(|ms| ms.parse::<i64>().ok()) {
            Some(ms) if ms >= kept.whole_since_ms => {
                let backlog = kept.changes.iter().filter(|c| c.at_ms > ms).cloned().collect();
                Start { backlog, reset: false, live }
            }
            _ => Start { backlog: Vec::new(), reset: true, live },
        }
    }

    /// Announces an order this process just placed.
    pub fn placed(&self, id: OrderId, customer: &CustomerId, created_at_ms: i64) {
        if self.sender.receiver_count() > 0 {
            let customer = customer.as_str().to_owned();
            self.keep(vec![Change::new(id, customer, Status::Placed, created_at_ms, None)]);
        } else {
            self.skipped.store(true, Ordering::Relaxed);
        }
    }

    /// Reads the moved orders the store names, until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut moved = self.store.moved_orders();
        loop {
            let first = tokio::select! {
                _ = stop.cancelled() => return,
                next = moved.recv() => next,
            };
            let mut ids: Vec<OrderId> = match first {
                Ok(ids) => ids.to_vec(),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.forget();
                    let _ = self.sender.send(Item::Reset);
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            // Whatever else is already waiting goes into the same reads.
            while let Ok(more) = moved.try_recv() {
                ids.extend(more.iter());
            }
            if self.sender.receiver_count() == 0 {
                self.skipped.store(true, Ordering::Relaxed);
                continue;
            }
            for chunk in ids.chunks(CHUNK) {
                match self.store.get_orders(chunk).await {
                    Ok(orders) => self.keep(orders.iter().flat_map(transitions).collect()),
                    Err(e) => {
                        tracing::warn!(error = %e, "reading moved orders failed; streams are told to reload");
                        self.forget();
                        let _ = self.sender.send(Item::Reset);
                    }
                }
            }
        }
    }

    /// Keeps and sends the changes not seen before.
    fn keep(&self, mut changes: Vec<Change>) {
        changes.sort_by_key(|c| c.at_ms);
        let mut kept = self.kept.lock().expect("changes lock");
        for change in changes {
            if !kept.ids.insert(change.id.clone()) {
                continue;
            }
            let change = Arc::new(change);
            kept.changes.push_back(change.clone());
            if kept.changes.len() > KEPT {
                let old = kept.changes.pop_front().expect("not empty");
                kept.ids.remove(&old.id);
            }
            let _ = self.sender.send(Item::Change(change));
        }
    }

    /// Drops what is kept: changes were skipped, so resuming from before
    /// now would have a gap.
    fn forget(&self) {
        forget(&mut self.kept.lock().expect("changes lock"));
    }
}

fn forget(kept: &mut Kept) {
    kept.changes.clear();
    kept.ids.clear();
    kept.whole_since_ms = crate::domain::now_millis();
}

/// Each transition in an order's history, as a change.
fn transitions(order: &OrderView) -> Vec<Change> {
    order
        .history
        .iter()
        .filter_map(|t| {
            let at = chrono::DateTime::parse_from_rfc3339(&t.at).ok()?.timestamp_millis();
            Some(Change::new(order.order_id, order.customer_id.clone(), t.status, at, t.reason.clone()))
        })
        .collect()
}
