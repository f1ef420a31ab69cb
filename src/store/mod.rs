//! The Store trait: everything the services keep, behind one seam.
//!
//! The API, the inventory service and the notifier depend only on this trait,
//! so the embedded mode (SQLite) and the distributed mode use the same service
//! code. Each effect and the events it causes are written in one transaction:
//! an order with its `OrderPlaced` event, a cancel with its `OrderCancelled`
//! event, a reservation with its inbox record and its `InventoryReserved` event. Outgoing events go to the `messages`
//! table, which is both the outbox and, with the `db` broker, the queue itself.
//! The types it shares with brokers (queue names, outbox rows, dead letters,
//! the retry policy, `Publisher`) are in [`crate::messaging`]; the store never
//! imports `broker`.

#[cfg(test)]
pub(crate) mod contract;
mod postgres;
mod sqlite;
mod webhooks;

pub use postgres::PostgresStore;
pub use sqlite::{SqliteOptions, SqliteStore};
pub use webhooks::{WebhookDeadLetter, WebhookDelivery, WebhookOutcome, WebhookStore};

use crate::domain::{
    Decision, Event, EventType, IdempotencyKey, LineItem, NewOrder, OrderId, Request, Status, TraceParent,
};
use crate::messaging::{BrokerError, DeadLetter, Publisher, RetryPolicy};
use async_trait::async_trait;
use serde::Serialize;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The same idempotency key was used before with a different request.
    #[error("idempotency key was already used with a different request")]
    IdempotencyConflict,
    /// The store is overloaded or cannot be reached; the caller may retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The write may or may not have been stored (its commit failed): the
    /// caller retries with the same idempotency key to find out.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// What the relay reports when its publisher failed: an unreachable broker
/// is a passing outage here too.
impl From<BrokerError> for StoreError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::Unavailable(why) => StoreError::Unavailable(why),
            BrokerError::Refused(why) => StoreError::Other(anyhow::anyhow!(why)),
            BrokerError::Other(e) => StoreError::Other(e),
        }
    }
}

/// An order to store, with the client's idempotency key if it sent one.
#[derive(Debug, Clone)]
pub struct PlaceOrder {
    pub id: OrderId,
    pub order: NewOrder,
    pub idempotency: Option<Keyed>,
    /// The request's trace, kept with the order and carried by its events.
    pub trace: Option<TraceParent>,
}

/// A client's idempotency key, with a hash of the request it came with.
#[derive(Debug, Clone)]
pub struct Keyed {
    pub key: IdempotencyKey,
    pub request_hash: String,
    /// How long an earlier use of the key holds (`domain::key_holds`): past
    /// it, the key is unknown and this request places a new order, whether
    /// or not the old record has been pruned yet.
    pub ttl: std::time::Duration,
}

/// An order rendered for storage. The JSON is built on the caller's task,
/// before the order reaches the writer that every order shares.
#[derive(Debug)]
pub(crate) struct PreparedOrder {
    pub id: OrderId,
    pub customer_id: String,
    /// The items as a JSON array.
    pub items: String,
    /// The `OrderPlaced` event, and the JSON it is queued as.
    pub placed: Event,
    pub event: String,
    /// The idempotency key, the request's hash and the key's time to live.
    pub idempotency: Option<(String, String, std::time::Duration)>,
    /// The order's `traceparent`, as stored in its row.
    pub traceparent: Option<String>,
}

impl PreparedOrder {
    pub fn new(p: PlaceOrder) -> Self {
        let items = serde_json::to_string(&p.order.items).expect("items serialize");
        let customer_id = p.order.customer_id.as_str().to_owned();
        let placed =
            Event::new(EventType::OrderPlaced, p.id, p.order.customer_id, p.order.items, None).in_trace(p.trace);
        let event = placed.to_json();
        Self {
            id: p.id,
            customer_id,
            items,
            placed,
            event,
            idempotency: p.idempotency.map(|k| (k.key.as_str().to_owned(), k.request_hash, k.ttl)),
            traceparent: p.trace.map(|t| t.to_string()),
        }
    }
}

/// What storing an order did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub id: OrderId,
    pub created_at: i64,
    /// True when the idempotency key was seen before and this is the first order.
    pub replayed: bool,
}

/// One step of an order's history: the status it entered, and when.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Transition {
    pub status: Status,
    /// Why the order was rejected (`unknown_sku:SKU`, `out_of_stock:SKU`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub reason: Option<String>,
    #[schema(format = DateTime)]
    pub at: String,
}

/// An order: who placed it, its items, where it is and how it got there.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Order)]
pub struct OrderView {
    pub order_id: OrderId,
    pub customer_id: String,
    pub status: Status,
    /// Why the order was rejected (`unknown_sku:SKU`, `out_of_stock:SKU`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub reason: Option<String>,
    pub items: Vec<LineItem>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// Every status the order has had, oldest first, each with its time.
    pub history: Vec<Transition>,
    /// The W3C trace the order was placed in: every log line and span about
    /// it carries this id. Absent for orders placed before traces were kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false, pattern = "^[0-9a-f]{32}$")]
    pub trace_id: Option<String>,
}

/// The trace id of a stored `traceparent`.
pub(crate) fn trace_id_of(traceparent: Option<String>) -> Option<String> {
    TraceParent::parse(&traceparent?).map(|t| t.trace_id().to_string())
}

#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub status: Option<Status>,
    pub customer_id: Option<String>,
    /// Only orders older than this one (the page cursor).
    pub before: Option<OrderId>,
    /// Most orders in the page.
    pub limit: usize,
}

/// One page of a listing, newest first.
#[derive(Debug, Clone, Default)]
pub struct OrderPage {
    pub orders: Vec<OrderView>,
    /// Where the next page starts (older orders only); `None` at the end. A
    /// page may hold fewer than `limit` orders and still have a next one, when
    /// a store bounds how far one page looks.
    pub next: Option<OrderId>,
}

impl OrderPage {
    /// A page from up to `limit + 1` matching rows, newest first: the extra
    /// row only says that more follow. `looked_to` is the oldest order the
    /// store examined when it stopped looking before the end.
    pub fn from_rows(mut rows: Vec<OrderView>, limit: usize, looked_to: Option<OrderId>) -> OrderPage {
        if rows.len() > limit {
            rows.truncate(limit);
            let next = rows.last().map(|o| o.order_id);
            return OrderPage { orders: rows, next };
        }
        OrderPage { orders: rows, next: looked_to }
    }
}

/// A SKU's stock: units free to reserve, units reserved by orders, and
/// units shipped with them (gone for good).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct StockLevel {
    pub sku: String,
    pub available: i64,
    pub reserved: i64,
    pub shipped: i64,
}

/// What `Store::request` did: the domain's decision, and the order as it
/// stands after it (moved, or as it was).
#[derive(Debug, Clone)]
pub struct Requested {
    pub decision: Decision,
    pub order: OrderView,
}

/// The outcome of handling one event in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// The effect is committed, with the status it moved the order to when
    /// it moved it (`orderflow_order_duration_seconds` is recorded from it).
    Done(Option<Status>),
    /// The effect was committed before, by an earlier delivery.
    Duplicate,
    /// Nothing was written; the event should be retried later.
    Retry(String),
}

/// Which effect a consumer applies to the events it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// `Store::reserve`: the inventory service.
    Reserve,
    /// `Store::notify`: the notifier; with `webhooks`, each notification
    /// also queues a webhook delivery (`WebhookStore`).
    Notify { webhooks: bool },
}

/// What one `QueueStore::consume` call did.
#[derive(Debug, Default)]
pub struct Consumed {
    /// Messages taken from the queue.
    pub taken: usize,
    /// Events whose effect was applied by this call (not duplicates).
    pub applied: Vec<Event>,
    /// The orders those effects moved, and the status each reached.
    pub reached: Vec<(OrderId, Status)>,
    pub retried: usize,
    pub dead_lettered: usize,
}

impl Consumed {
    /// Adds what another part of the same batch came to.
    pub fn add(&mut self, part: Consumed) {
        self.taken += part.taken;
        self.applied.extend(part.applied);
        self.reached.extend(part.reached);
        self.retried += part.retried;
        self.dead_lettered += part.dead_lettered;
    }
}

/// Counts for `/metrics` and for waiting until the pipeline is idle.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PipelineStats {
    pub orders_by_status: Vec<(String, i64)>,
    pub queued_messages: i64,
    pub dead_letters: i64,
    /// Per queue of the `messages` table, when the event at its front was
    /// written (Unix milliseconds): the `db` broker's queues, or the outbox.
    pub oldest_messages: Vec<(String, i64)>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores an order and its `OrderPlaced` event in one transaction.
    async fn place_order(&self, order: PlaceOrder) -> Result<Placed, StoreError>;
    async fn get_order(&self, id: OrderId) -> Result<Option<OrderView>, StoreError>;
    async fn list_orders(&self, filter: OrderFilter) -> Result<OrderPage, StoreError>;
    /// Applies a client's request (cancel, ship) to an order under its row
    /// lock: the domain decides from its status, and a move is committed
    /// with its event (`OrderCancelled`, `OrderShipped`) in one
    /// transaction. `None` when there is no such order.
    async fn request(&self, id: OrderId, request: Request) -> Result<Option<Requested>, StoreError>;
    /// The inventory's effect of each event, recording the event id in
    /// `consumer`'s inbox with it: reserves stock for `OrderPlaced`
    /// (all-or-nothing per order, only while the order is placed), gives
    /// back what a cancelled order holds for `OrderCancelled`, sends out what
    /// a shipped order holds for `OrderShipped`, and queues each outcome.
    async fn reserve(&self, consumer: &str, events: Vec<Event>) -> Result<Vec<Handled>, StoreError>;
    /// Records a notification for each inventory outcome and completes
    /// reserved orders (a cancelled one stays cancelled); with `webhooks`, queues
    /// a webhook delivery for each notification in the same transaction.
    async fn notify(&self, consumer: &str, events: Vec<Event>, webhooks: bool) -> Result<Vec<Handled>, StoreError>;
    async fn set_stock(&self, sku: &str, available: i64) -> Result<(), StoreError>;
    async fn list_stock(&self) -> Result<Vec<StockLevel>, StoreError>;
    async fn stats(&self) -> Result<PipelineStats, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
    /// The current status of each of these orders that exists, in one read:
    /// what the live streams poll when `status_signal` changes.
    async fn statuses(&self, ids: &[OrderId]) -> Result<Vec<(OrderId, Status)>, StoreError>;
    /// Changes after each commit that moved an order's status: this
    /// process's, and (PostgreSQL, through NOTIFY) other processes'.
    fn status_signal(&self) -> tokio::sync::watch::Receiver<u64>;
    /// These orders as `get_order` reads them (those that exist, in no set
    /// order), in one call: what `GET /events` reads after `moved_orders`.
    async fn get_orders(&self, ids: &[OrderId]) -> Result<Vec<OrderView>, StoreError>;
    /// The ids of the orders each commit of the services moved (or may have
    /// moved: a duplicate outcome may be among them): this process's on
    /// SQLite, every process's on PostgreSQL (carried by NOTIFY). A receiver
    /// that falls behind is told it lagged, and the sender never waits.
    fn moved_orders(&self) -> tokio::sync::broadcast::Receiver<MovedOrders>;
    /// What happened to an order besides its statuses: the notifications
    /// sent about it, and its messages still waiting in the queue (or, with
    /// a network broker, in the outbox). An operator's view: it scans the
    /// notifications; the waiting messages are found by the order they name
    /// (see `waiting_messages`).
    async fn order_trail(&self, id: OrderId) -> Result<OrderTrail, StoreError>;
    /// Deletes up to `max` rows of `table` recorded at or before `cutoff`
    /// (milliseconds since the epoch), oldest first, in one short statement,
    /// and returns how many went. Several processes may prune one table at
    /// once: none waits for another's rows.
    async fn prune(&self, table: Prunable, cutoff: i64, max: usize) -> Result<u64, StoreError>;
}

/// A table `Store::prune` keeps bounded, and what it finds old rows by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prunable {
    /// This consumer's inbox, by its event ids (UUIDv7: they sort by time).
    Inbox(String),
    /// The notifier's records, by their event ids.
    Notifications,
    /// Idempotency keys, by when they were recorded (an index: the key is the client's).
    IdempotencyKeys,
}

impl Prunable {
    /// The table's name, as `orderflow_pruned_rows_total` labels it.
    pub fn table(&self) -> &'static str {
        match self {
            Prunable::Inbox(_) => "inbox",
            Prunable::Notifications => "notifications",
            Prunable::IdempotencyKeys => "idempotency_keys",
        }
    }
}

/// What `Store::order_trail` found.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct OrderTrail {
    /// Each outcome the notifier recorded, with the event that caused it.
    pub notifications: Vec<NotificationRecord>,
    /// Messages about the order not yet delivered (at most 100, oldest first).
    pub waiting: Vec<WaitingMessage>,
}

/// One notification the notifier recorded about an order.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct NotificationRecord {
    /// The event it answered (its id is also the notifier's inbox key).
    pub event_id: String,
    /// `confirmed`, `rejected`, `cancelled` or `shipped`.
    pub kind: String,
    pub message: String,
    pub sent_at: String,
}

/// A message about an order that is still waiting to be delivered.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct WaitingMessage {
    pub id: i64,
    pub queue: String,
    pub routing_key: String,
    /// Failed deliveries so far, and the last one's error.
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// Most waiting messages an order's trail shows.
pub(crate) const TRAIL_WAITING: usize = 100;

/// An order's waiting messages, oldest first, at most `TRAIL_WAITING`: the
/// ones the store wrote naming the order, found without reading a body
/// (PostgreSQL: `messages.order_id`; SQLite: the order's row lists them), and,
/// of the ones that name no order (`unnamed`: those whose body holds the
/// order id's text, with their bodies), the ones about it
/// (`messaging::names_order`). A store names a message's order only when
/// every event in it is about that order, so together these are every
/// message about the order, and no other.
pub(crate) fn waiting_messages(
    id: OrderId,
    mut named: Vec<WaitingMessage>,
    unnamed: impl IntoIterator<Item = (WaitingMessage, impl AsRef<[u8]>)>,
) -> Vec<WaitingMessage> {
    let about = unnamed.into_iter().filter(|(_, body)| crate::messaging::names_order(body.as_ref(), id));
    named.extend(about.map(|(m, _)| m).take(TRAIL_WAITING));
    named.sort_unstable_by_key(|m| m.id);
    named.truncate(TRAIL_WAITING);
    named
}

/// The orders one commit moved, shared by every receiver.
pub type MovedOrders = Arc<[OrderId]>;

/// Most batches of moved ids a `moved_orders` receiver may fall behind by.
pub const MOVED_BACKLOG: usize = 256;

/// The ids of the orders whose event was applied (`Handled::Done`).
pub(crate) fn done_ids(events: &[Event], handled: &[Handled]) -> Vec<OrderId> {
    events.iter().zip(handled).filter(|(_, h)| matches!(h, Handled::Done(_))).map(|(e, _)| e.order_id).collect()
}

/// The queue half of a database: what the `db` broker needs from the store.
#[async_trait]
pub trait QueueStore: Send + Sync + 'static {
    /// Takes up to `max` ready messages from `queue`, applies `effect` to them
    /// as `consumer`, and settles each (deleted when applied; retried later or
    /// dead-lettered per `policy` when not; dead-lettered at once when it is
    /// not a valid event), each message in the same transaction as its effect:
    /// one for the batch (PostgreSQL) or one per part of consecutive messages
    /// (SQLite). A consumer that dies mid-batch leaves every message it had
    /// not settled untouched.
    async fn consume(
        &self,
        consumer: &str,
        queue: &str,
        effect: Effect,
        max: usize,
        policy: RetryPolicy,
    ) -> Result<Consumed, StoreError>;
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;
    /// Moves dead letters back to their queue; `None` replays them all.
    async fn replay(&self, id: Option<i64>) -> Result<u64, StoreError>;
    /// Changes when messages were queued: after this process's commits, and
    /// (PostgreSQL, through LISTEN/NOTIFY) after other processes' too.
    fn message_signal(&self) -> tokio::sync::watch::Receiver<u64>;
    /// Publishes up to `max` outbox rows through `publisher` and deletes them
    /// once confirmed; returns how many went out. Rows are never published
    /// by two relays at the same time.
    async fn relay(&self, max: usize, publisher: &dyn Publisher) -> Result<usize, StoreError>;
}

/// A store that is also a queue (of events, and of webhook deliveries):
/// what the embedded mode runs on.
pub trait Database: Store + QueueStore + WebhookStore {}
impl<T: Store + QueueStore + WebhookStore> Database for T {}

/// Why `open` failed. The caller retries only what may work later.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL names no store this build knows; retrying cannot help.
    #[error("unsupported database URL '{0}': expected sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    /// The store could not be opened now: most often the database cannot be
    /// reached (yet), so it is worth trying again.
    #[error(transparent)]
    Unreachable(anyhow::Error),
}

/// Opens the store a database URL names.
pub async fn open(url: &str) -> Result<Arc<dyn Database>, OpenError> {
    if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
        let store = SqliteStore::open(path).await.map_err(OpenError::Unreachable)?;
        return Ok(Arc::new(store));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(PostgresStore::open(url).await.map_err(OpenError::Unreachable)?));
    }
    Err(OpenError::UnsupportedUrl(url.to_owned()))
}
