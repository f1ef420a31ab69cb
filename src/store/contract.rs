//! What every store promises, written once and run against each of them.
//!
//! Each store's test module implements [`Fixture`] (a fresh database, a way
//! to open it again as another process would, and a plain connection to look
//! behind the store) and instantiates the suite with [`suite!`]. The tests
//! speak only through the store traits and SQL both dialects share, so a
//! store that passes them keeps the promises the services rely on:
//! idempotency keys, exactly-once effects under duplicate deliveries and
//! competing consumers, poison messages, retries and dead letters, the relay,
//! paging, and stock that never goes negative. Only what one dialect does on
//! its own (migrations, locks, notifications) is tested beside that store.

use super::{
    Database, Effect, Handled, Keyed, OrderFilter, PipelineStats, PlaceOrder, Placed, Prunable, StockLevel, StoreError,
};
use crate::domain::{CustomerId, Event, EventType, IdempotencyKey, LineItem, NewOrder, OrderId, Quantity, Sku, Status};
use crate::messaging::{
    BrokerError, OutboxMessage, Publisher, RetryPolicy, QUEUE_INVENTORY_EVENTS, QUEUE_ORDER_EVENTS,
};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;

mod lifecycle;
pub use lifecycle::*;

/// A fresh database for one test, and the ways to look behind its store.
#[async_trait]
pub trait Fixture: Send + Sync {
    fn store(&self) -> Arc<dyn Database>;
    /// Another store on the same database, as another process opens it.
    async fn another(&self) -> Arc<dyn Database>;
    /// The first column of the only row `sql` returns, as text.
    async fn text(&self, sql: &str) -> String;
    /// Queues a message by hand, as an operator, or a relay that delivers
    /// twice, would.
    async fn queue_message(&self, queue: &str, body: &str);
    /// Runs a statement by hand, as an operator would.
    async fn execute(&self, sql: &str);

    async fn count(&self, sql: &str) -> i64 {
        let text = self.text(sql).await;
        text.parse().unwrap_or_else(|_| panic!("{sql} gave {text}, not a number"))
    }
}

/// Instantiates every contract test for a store: `suite!(setup)` where
/// `setup()` is an async fn returning `Option<impl Fixture>` (`None` when
/// the database cannot be reached and the test is skipped).
macro_rules! suite {
    ($setup:ident) => {
        $crate::store::contract::suite!(@tests $setup;
            places_gets_and_pages_orders,
            idempotency_keys_yield_one_order,
            competing_consumers_reserve_stock_exactly_once,
            multi_sku_orders_across_three_workers_keep_stock_consistent,
            duplicate_deliveries_reserve_once,
            poison_and_failing_messages_are_dead_lettered_and_replayed,
            relays_publish_each_outbox_row_once,
            statuses_are_read_together_and_their_moves_signalled,
            moved_orders_are_named_and_read_together,
            an_orders_trail_shows_its_waiting_messages_and_notifications,
            an_orders_trail_lists_exactly_its_waiting_messages,
            expired_keys_are_unknown_before_they_are_pruned,
            pruning_removes_only_rows_older_than_the_window_in_bounded_batches,
            a_redelivery_inside_the_window_is_deduplicated_and_after_it_refused_by_status,
            cancel_and_ship_move_stock_once,
            a_repeated_cancel_event_gives_back_once,
            cancels_racing_reservations_leave_no_stock_held,
            webhook_deliveries_are_queued_with_notifications_and_settled,
            competing_claims_split_deliveries_and_an_ended_lease_frees_them
        );
    };
    (@tests $setup:ident; $($name:ident),*) => {
        mod contract { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let Some(fixture) = super::$setup().await else { return };
                $crate::store::contract::$name(&fixture).await;
            }
        )* }
    };
}
pub(crate) use suite;

// The webhook delivery queue's part of the suite.
mod webhooks;
pub use webhooks::*;

// Which waiting messages an order's trail lists.
mod trail;
pub use trail::*;

pub(crate) fn order(customer: &str, items: &[(&str, i64)], key: Option<(&str, &str)>) -> PlaceOrder {
    let items = items
        .iter()
        .map(|(sku, n)| LineItem { sku: Sku::parse(*sku).unwrap(), quantity: Quantity::parse(*n).unwrap() })
        .collect();
    PlaceOrder {
        id: OrderId::new(),
        order: NewOrder::new(CustomerId::parse(customer).unwrap(), items).unwrap(),
        idempotency: key.map(|(k, hash)| Keyed {
            key: IdempotencyKey::parse(k).unwrap(),
            request_hash: hash.to_owned(),
            ttl: crate::domain::DEFAULT_KEY_TTL,
        }),
        trace: None,
    }
}

pub(crate) const FAST_RETRY: RetryPolicy = RetryPolicy { max_attempts: 2, base: Duration::from_millis(1) };

/// Consumes `queue` until it has nothing ready; returns the events applied.
pub(crate) async fn drain(store: &dyn Database, consumer: &str, queue: &str, effect: Effect, max: usize) -> usize {
    let mut applied = 0;
    loop {
        let batch = store.consume(consumer, queue, effect, max, RetryPolicy::default()).await.expect("consume");
        applied += batch.applied.len();
        if batch.taken == 0 {
            return applied;
        }
    }
}

fn status_count(stats: &PipelineStats, status: &str) -> i64 {
    stats.orders_by_status.iter().find(|(s, _)| s == status).map(|(_, n)| *n).unwrap_or(0)
}

pub async fn places_gets_and_pages_orders(db: &impl Fixture) {
    let store = db.store();
    let mut ids = Vec::new();
    for i in 0..5 {
        let customer = if i % 2 == 0 { "even" } else { "odd" };
        let placed = store.place_order(order(customer, &[("tea", i + 1), ("cake", 1)], None)).await.unwrap();
        assert!(!placed.replayed);
        ids.push(placed.id);
    }
    let view = store.get_order(ids[2]).await.unwrap().expect("the order");
    assert_eq!(view.customer_id, "even");
    assert_eq!(view.status, Status::Placed);
    assert_eq!(view.items.len(), 2);
    assert_eq!(view.items[0].sku.as_str(), "tea");
    assert_eq!(view.items[0].quantity.get(), 3);
    assert_eq!(view.history.len(), 1);
    assert!(store.get_order(OrderId::new()).await.unwrap().is_none());

    // Pages of two, newest first, never repeating or skipping.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store.list_orders(OrderFilter { before, limit: 2, ..OrderFilter::default() }).await.unwrap();
        seen.extend(page.orders.iter().map(|o| o.order_id));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ids.iter().rev().copied().collect::<Vec<_>>());
    let odd = OrderFilter { customer_id: Some("odd".into()), limit: 10, ..OrderFilter::default() };
    assert_eq!(store.list_orders(odd).await.unwrap().orders.len(), 2);
    let placed = OrderFilter { status: Some(Status::Placed), limit: 3, ..OrderFilter::default() };
    assert_eq!(store.list_orders(placed).await.unwrap().orders.len(), 3);
    let rejected = OrderFilter { status: Some(Status::Rejected), limit: 3, ..OrderFilter::default() };
    assert!(store.list_orders(rejected).await.unwrap().orders.is_empty());

    // Each order queued its OrderPlaced event.
    let body = db.text("SELECT body FROM messages ORDER BY id LIMIT 1").await;
    let event = Event::from_json(body.as_bytes()).unwrap();
    assert_eq!((event.event_type, event.order_id), (EventType::OrderPlaced, ids[0]));
    let stats = store.stats().await.unwrap();
    assert_eq!((status_count(&stats, "placed"), stats.queued_messages, stats.dead_letters), (5, 5, 0));
    store.ping().await.unwrap();
}

pub async fn idempotency_keys_yield_one_order(db: &impl Fixture) {
    let store = db.store();
    let first = store.place_order(order("c1", &[("tea", 1)], Some(("k1", "h1")))).await.unwrap();
    let again = store.place_order(order("c1", &[("tea", 1)], Some(("k1", "h1")))).await.unwrap();
    assert_eq!((again.id, again.created_at, again.replayed), (first.id, first.created_at, true));
    let other = store.place_order(order("c1", &[("tea", 2)], Some(("k1", "h2")))).await;
    assert!(matches!(other, Err(StoreError::IdempotencyConflict)), "{other:?}");

    // Twenty at once with one key: one order, the others replay it.
    let mut set = JoinSet::new();
    for _ in 0..20 {
        let store = store.clone();
        set.spawn(async move { store.place_order(order("c2", &[("tea", 1)], Some(("k2", "h")))).await.unwrap() });
    }
    let placed: Vec<Placed> = set.join_all().await;
    assert!(placed.iter().all(|p| p.id == placed[0].id));
    assert_eq!(placed.iter().filter(|p| !p.replayed).count(), 1);

    // Two bodies racing for a key, through two stores (as two processes):
    // one wins, its twins replay it, the other body conflicts.
    let other_store = db.another().await;
    let mut set = JoinSet::new();
    for i in 0..20 {
        let store = if i % 2 == 0 { store.clone() } else { other_store.clone() };
        let hash = if i % 4 < 2 { "a" } else { "b" };
        set.spawn(async move { (hash, store.place_order(order("c3", &[("tea", 1)], Some(("k3", hash)))).await) });
    }
    let results = set.join_all().await;
    let winners: Vec<_> = results.iter().filter_map(|(h, r)| r.as_ref().ok().map(|p| (*h, p.id))).collect();
    assert!(winners.iter().all(|w| *w == winners[0]), "{winners:?}");
    assert_eq!(winners.len(), 10);
    assert!(results.iter().filter(|r| r.1.is_err()).all(|r| matches!(r.1, Err(StoreError::IdempotencyConflict))));

    assert_eq!(db.count("SELECT count(*) FROM orders").await, 3);
    assert_eq!(db.count("SELECT count(*) FROM messages").await, 3);
    assert_eq!(db.count("SELECT count(*) FROM idempotency_keys").await, 3);
}

pub async fn competing_consumers_reserve_stock_exactly_once(db: &impl Fixture) {
    let store = db.store();
    store.set_stock("widget", 100).await.unwrap();
    // A second store on the same database stands in for a second worker process.
    let other = db.another().await;
    let placing_done = Arc::new(AtomicBool::new(false));
    let mut consumers = JoinSet::new();
    for store in [store.clone(), other.clone()] {
        let done = placing_done.clone();
        consumers.spawn(async move {
            let mut applied = 0;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let batch = store.consume("inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 16, RetryPolicy::default());
                let batch = batch.await.expect("consume must not fail (no deadlocks)");
                applied += batch.applied.len();
                if batch.taken == 0 {
                    if finished {
                        return applied;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
    }
    let mut placing = JoinSet::new();
    for i in 0..300 {
        let store = if i % 2 == 0 { store.clone() } else { other.clone() };
        placing.spawn(async move { store.place_order(order("c", &[("widget", 1)], None)).await.unwrap() });
    }
    placing.join_all().await;
    placing_done.store(true, Ordering::SeqCst);
    let applied: usize = consumers.join_all().await.into_iter().sum();
    assert_eq!(applied, 300, "every order decided exactly once");

    let stats = store.stats().await.unwrap();
    assert_eq!((status_count(&stats, "reserved"), status_count(&stats, "rejected")), (100, 200));
    let stock = store.list_stock().await.unwrap();
    assert_eq!(stock, vec![StockLevel { sku: "widget".into(), available: 0, reserved: 100, shipped: 0 }]);
    assert_eq!(db.count("SELECT count(*) FROM messages WHERE queue = 'order-events'").await, 0);
    assert_eq!(db.count("SELECT count(*) FROM messages WHERE queue = 'inventory-events'").await, 300);
    assert_eq!(db.count("SELECT count(*) FROM inbox").await, 300);
    let rejected = OrderFilter { status: Some(Status::Rejected), limit: 1, ..OrderFilter::default() };
    assert_eq!(store.list_orders(rejected).await.unwrap().orders[0].reason.as_deref(), Some("out_of_stock:widget"));

    // The notifiers, competing too, complete the reserved orders.
    let (a, b) = tokio::join!(
        drain(&*store, "notifier", QUEUE_INVENTORY_EVENTS, Effect::Notify { webhooks: false }, 16),
        drain(&*other, "notifier", QUEUE_INVENTORY_EVENTS, Effect::Notify { webhooks: false }, 16),
    );
    assert_eq!(a + b, 300);
    let stats = store.stats().await.unwrap();
    assert_eq!((status_count(&stats, "completed"), status_count(&stats, "rejected")), (100, 200));
    assert_eq!((stats.queued_messages, stats.dead_letters), (0, 0));
    assert_eq!(db.count("SELECT count(*) FROM notifications").await, 300);
}

pub async fn multi_sku_orders_across_three_workers_keep_stock_consistent(db: &impl Fixture) {
    let store = db.store();
    for sku in ["a", "b", "c"] {
        store.set_stock(sku, 60).await.unwrap();
    }
    // SKUs in every order of appearance, so workers would deadlock if they
    // locked stock in the order they meet it.
    let shapes: [&[(&str, i64)]; 6] = [
        &[("a", 1), ("b", 2)],
        &[("b", 1), ("a", 1)],
        &[("c", 2), ("a", 1)],
        &[("b", 1), ("c", 1)],
        &[("c", 1)],
        &[("a", 1), ("b", 1), ("c", 1)],
    ];
    let mut placing = JoinSet::new();
    for i in 0..240 {
        let (store, items) = (store.clone(), shapes[i % shapes.len()]);
        placing.spawn(async move { store.place_order(order("c", items, None)).await.unwrap() });
    }
    placing.join_all().await;
    let mut workers = JoinSet::new();
    for _ in 0..3 {
        let store = db.another().await;
        workers.spawn(async move { drain(&*store, "inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 8).await });
    }
    assert_eq!(workers.join_all().await.into_iter().sum::<usize>(), 240);

    // Stock taken equals what the reserved orders asked for, SKU by SKU.
    let reserved = OrderFilter { status: Some(Status::Reserved), limit: 1000, ..OrderFilter::default() };
    let mut asked: HashMap<String, i64> = HashMap::new();
    for o in store.list_orders(reserved).await.unwrap().orders {
        for item in store.get_order(o.order_id).await.unwrap().unwrap().items {
            *asked.entry(item.sku.as_str().to_owned()).or_default() += i64::from(item.quantity.get());
        }
    }
    let stock = store.list_stock().await.unwrap();
    for level in &stock {
        assert_eq!(level.available + level.reserved, 60, "{level:?}");
        assert!(level.available >= 0, "{level:?}");
        assert_eq!(asked.get(&level.sku).copied().unwrap_or(0), level.reserved, "{level:?}");
    }
    assert!(stock.iter().any(|l| l.available < 2), "the stock ran out, so some orders were rejected: {stock:?}");
    assert_eq!(db.count("SELECT count(*) FROM orders WHERE status = 'placed'").await, 0);
}

pub async fn duplicate_deliveries_reserve_once(db: &impl Fixture) {
    let store = db.store();
    store.set_stock("tea", 5).await.unwrap();
    let placed = store.place_order(order("c1", &[("tea", 2)], None)).await.unwrap();
    // The same event queued twice more, as an at-least-once relay might.
    let body = db.text("SELECT body FROM messages").await;
    for _ in 0..2 {
        db.queue_message(QUEUE_ORDER_EVENTS, &body).await;
    }
    let batch = store.consume("inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 2, FAST_RETRY).await.unwrap();
    assert_eq!((batch.taken, batch.applied.len()), (2, 1), "a copy in the same batch is a duplicate");
    let batch = store.consume("inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 10, FAST_RETRY).await.unwrap();
    assert_eq!((batch.taken, batch.applied.len()), (1, 0), "a copy in a later batch is a duplicate");

    // Another event id about the same, already reserved order changes nothing.
    let view = store.get_order(placed.id).await.unwrap().unwrap();
    let stray = Event::new(EventType::OrderPlaced, placed.id, CustomerId::parse("c1").unwrap(), view.items, None);
    let handled = store.reserve("inventory", vec![stray]).await.unwrap();
    assert_eq!(handled, vec![Handled::Duplicate]);

    assert_eq!(
        store.list_stock().await.unwrap()[0],
        StockLevel { sku: "tea".into(), available: 3, reserved: 2, shipped: 0 }
    );
    let view = store.get_order(placed.id).await.unwrap().unwrap();
    assert_eq!(view.status, Status::Reserved);
    assert_eq!(view.history.iter().map(|t| t.status).collect::<Vec<_>>(), vec![Status::Placed, Status::Reserved]);
    assert_eq!(db.count("SELECT count(*) FROM messages WHERE queue = 'inventory-events'").await, 1);

    // An unknown SKU rejects the whole order and takes nothing.
    let mixed = store.place_order(order("c1", &[("tea", 1), ("nope", 1)], None)).await.unwrap();
    drain(&*store, "inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 10).await;
    let view = store.get_order(mixed.id).await.unwrap().unwrap();
    assert_eq!((view.status, view.reason.as_deref()), (Status::Rejected, Some("unknown_sku:nope")));
    assert_eq!(store.list_stock().await.unwrap()[0].available, 3);
}

pub async fn poison_and_failing_messages_are_dead_lettered_and_replayed(db: &impl Fixture) {
    let store = db.store();
    db.queue_message(QUEUE_ORDER_EVENTS, "not json").await;
    let batch = store.consume("inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 10, FAST_RETRY).await.unwrap();
    assert_eq!((batch.taken, batch.dead_lettered, batch.retried), (1, 1, 0));
    let dead = store.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].error.starts_with("invalid event:"), "{}", dead[0].error);
    assert_eq!((dead[0].attempts, dead[0].queue.as_str(), dead[0].body.as_str()), (1, "order-events", "not json"));

    // An event whose order does not exist is retried, then dead-lettered.
    let orphan = Event::new(EventType::OrderPlaced, OrderId::new(), CustomerId::parse("c").unwrap(), vec![], None);
    db.queue_message(QUEUE_ORDER_EVENTS, &orphan.to_json()).await;
    let batch = store.consume("inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 10, FAST_RETRY).await.unwrap();
    assert_eq!((batch.taken, batch.retried), (1, 1));
    assert_eq!(db.count("SELECT count(*) FROM messages WHERE attempts = 1 AND last_error LIKE '%not found'").await, 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let batch = store.consume("inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 10, FAST_RETRY).await.unwrap();
    assert_eq!((batch.taken, batch.dead_lettered), (1, 1));
    let dead = store.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[1].attempts, 2);
    assert!(dead[1].error.ends_with("not found"), "{}", dead[1].error);

    // Replay one, then the rest; they come back fresh, and consumers hear of it.
    let mut signal = store.message_signal();
    signal.borrow_and_update();
    let first: i64 = dead[0].id.parse().unwrap();
    assert_eq!(store.replay(Some(first)).await.unwrap(), 1);
    assert!(signal.has_changed().unwrap());
    assert_eq!(store.replay(Some(first)).await.unwrap(), 0);
    assert_eq!(store.replay(None).await.unwrap(), 1);
    assert!(store.dead_letters(10).await.unwrap().is_empty());
    assert_eq!(db.count("SELECT count(*) FROM messages WHERE attempts = 0 AND available_at = 0").await, 2);
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.queued_messages, stats.dead_letters), (2, 0));
}

/// A publisher that records what it was given, slowly, so relays overlap.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

#[async_trait]
impl Publisher for Recorder {
    async fn publish(&self, batch: &[OutboxMessage]) -> Result<(), BrokerError> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.0.lock().unwrap().extend(batch.iter().map(|m| m.body.clone()));
        Ok(())
    }
}

async fn relay_all(store: &dyn Database, publisher: &Recorder) -> usize {
    let mut sent = 0;
    while let n @ 1.. = store.relay(7, publisher).await.unwrap() {
        sent += n;
    }
    sent
}

/// A broker that refuses everything.
struct Down;

#[async_trait]
impl Publisher for Down {
    async fn publish(&self, _: &[OutboxMessage]) -> Result<(), BrokerError> {
        Err(BrokerError::Unavailable("down".into()))
    }
}

/// A relay whose broker refuses a batch leaves it for the next attempt; two
/// relays (as two processes) over one outbox publish every row once and
/// leave the outbox empty.
pub async fn relays_publish_each_outbox_row_once(db: &impl Fixture) {
    let store = db.store();
    for _ in 0..40 {
        store.place_order(order("c", &[("tea", 1)], None)).await.unwrap();
    }
    assert!(store.relay(7, &Down).await.is_err());
    assert_eq!(db.count("SELECT count(*) FROM messages").await, 40);
    let other = db.another().await;
    let recorder = Recorder::default();
    let (a, b) = tokio::join!(relay_all(&*store, &recorder), relay_all(&*other, &recorder));
    assert_eq!(a + b, 40);
    let mut bodies = recorder.0.lock().unwrap().clone();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 40);
    assert_eq!(db.count("SELECT count(*) FROM messages").await, 0);
}

/// The live streams read the statuses of the orders they watch in one call,
/// and hear when a commit moved any.
pub async fn statuses_are_read_together_and_their_moves_signalled(db: &impl Fixture) {
    let store = db.store();
    store.set_stock("tea", 1).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(store.place_order(order("c", &[("tea", 1)], None)).await.unwrap().id);
    }
    let unknown = OrderId::new();
    let asked = [ids[2], unknown, ids[0], ids[1]];
    let mut found = store.statuses(&asked).await.unwrap();
    found.sort_by_key(|(id, _)| *id);
    assert_eq!(found, ids.iter().map(|id| (*id, Status::Placed)).collect::<Vec<_>>(), "unknown ids are left out");

    let mut signal = store.status_signal();
    signal.borrow_and_update();
    drain(&*store, "inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 10).await;
    assert!(signal.has_changed().unwrap(), "a commit that moved statuses is signalled");
    let found: HashMap<OrderId, Status> = store.statuses(&ids).await.unwrap().into_iter().collect();
    assert_eq!(found[&ids[0]], Status::Reserved);
    assert_eq!((found[&ids[1]], found[&ids[2]]), (Status::Rejected, Status::Rejected));

    // A batch that moves nothing (a repeat) is not signalled. The drain's own
    // signals may still be on their way (PostgreSQL's NOTIFY comes back
    // through the listener's connection): let them land first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal.borrow_and_update();
    let body = db.text(&format!("SELECT body FROM messages WHERE queue = '{QUEUE_INVENTORY_EVENTS}' LIMIT 1")).await;
    let event = Event::from_json(body.as_bytes()).unwrap();
    let repeat = Event::new(EventType::OrderPlaced, event.order_id, CustomerId::parse("c").unwrap(), vec![], None);
    assert_eq!(store.reserve("inventory", vec![repeat]).await.unwrap(), vec![Handled::Duplicate]);
    assert!(!signal.has_changed().unwrap());
}

/// `GET /events` hears which orders a commit moved (on PostgreSQL through
/// NOTIFY, so it may take a moment) and reads them in one call.
pub async fn moved_orders_are_named_and_read_together(db: &impl Fixture) {
    let store = db.store();
    store.set_stock("tea", 1).await.unwrap();
    let a = store.place_order(order("c", &[("tea", 1)], None)).await.unwrap().id;
    let b = store.place_order(order("c", &[("tea", 1)], None)).await.unwrap().id;
    let mut moved = store.moved_orders();
    drain(&*store, "inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 10).await;
    let mut named = Vec::new();
    while named.len() < 2 {
        let ids = tokio::time::timeout(Duration::from_secs(5), moved.recv()).await.expect("told in time").unwrap();
        named.extend(ids.iter().copied());
    }
    named.sort();
    assert_eq!(named, [a, b]);

    let mut read = store.get_orders(&[b, OrderId::new(), a]).await.unwrap();
    read.sort_by_key(|o| o.order_id);
    assert_eq!(read.iter().map(|o| o.order_id).collect::<Vec<_>>(), [a, b], "unknown ids are left out");
    let statuses: Vec<Vec<Status>> = read.iter().map(|o| o.history.iter().map(|t| t.status).collect()).collect();
    assert_eq!(statuses, [vec![Status::Placed, Status::Reserved], vec![Status::Placed, Status::Rejected]]);
    assert_eq!(read[1].history[1].reason.as_deref(), Some("out_of_stock:tea"));
}

/// An order's trail: its message waiting in each queue in turn, then the
/// notification recorded about it; nothing about another order.
pub async fn an_orders_trail_shows_its_waiting_messages_and_notifications(db: &impl Fixture) {
    let store = db.store();
    store.set_stock("tea", 5).await.unwrap();
    let id = store.place_order(order("c", &[("tea", 1)], None)).await.unwrap().id;
    let other = store.place_order(order("c", &[("tea", 1)], None)).await.unwrap().id;
    let trail = store.order_trail(id).await.unwrap();
    assert!(trail.notifications.is_empty());
    let waiting: Vec<(&str, i64)> = trail.waiting.iter().map(|m| (m.queue.as_str(), m.attempts)).collect();
    assert_eq!(waiting, [(QUEUE_ORDER_EVENTS, 0)], "only its own message: {trail:?}");

    drain(&*store, "inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 10).await;
    let trail = store.order_trail(id).await.unwrap();
    assert_eq!(trail.waiting.iter().map(|m| m.queue.as_str()).collect::<Vec<_>>(), [QUEUE_INVENTORY_EVENTS]);
    drain(&*store, "notifier", QUEUE_INVENTORY_EVENTS, Effect::Notify { webhooks: false }, 10).await;
    let trail = store.order_trail(id).await.unwrap();
    assert!(trail.waiting.is_empty(), "{trail:?}");
    assert_eq!(trail.notifications.len(), 1, "{trail:?}");
    assert_eq!(trail.notifications[0].kind, "confirmed");
    assert!(trail.notifications[0].sent_at.ends_with('Z'));
    assert_eq!(store.order_trail(other).await.unwrap().notifications.len(), 1);
    assert_eq!(store.order_trail(OrderId::new()).await.unwrap(), Default::default(), "an unknown order has no trail");
}

/// A keyed order whose key holds for `ttl`.
fn keyed(customer: &str, key: &str, hash: &str, ttl: Duration) -> PlaceOrder {
    let mut order = order(customer, &[("tea", 1)], Some((key, hash)));
    order.idempotency.as_mut().unwrap().ttl = ttl;
    order
}

pub async fn expired_keys_are_unknown_before_they_are_pruned(db: &impl Fixture) {
    let store = db.store();
    let short = Duration::from_millis(300);
    let first = store.place_order(keyed("c1", "k1", "h1", short)).await.unwrap();
    let again = store.place_order(keyed("c1", "k1", "h1", short)).await.unwrap();
    assert_eq!((again.id, again.replayed), (first.id, true), "within its time to live the key holds");
    tokio::time::sleep(short + Duration::from_millis(50)).await;

    // Past it the row is still there, unpruned, and the key is unknown: the
    // same request places a new order, and so does a different one.
    assert_eq!(db.count("SELECT count(*) FROM idempotency_keys").await, 1);
    let later = store.place_order(keyed("c1", "k1", "h1", short)).await.unwrap();
    assert!(!later.replayed && later.id != first.id, "{later:?}");
    let repeat = store.place_order(keyed("c1", "k1", "h1", short)).await.unwrap();
    assert_eq!((repeat.id, repeat.replayed), (later.id, true), "the new order holds the key from now on");
    tokio::time::sleep(short + Duration::from_millis(50)).await;
    let other = store.place_order(keyed("c1", "k1", "h2", short)).await.unwrap();
    assert!(!other.replayed && other.id != later.id, "an expired key conflicts with nothing: {other:?}");

    // Processes racing to take over one expired key: one order between them.
    // A longer time to live here, so the winner's key cannot expire again
    // while the others are still on their way on a busy machine.
    let race = Duration::from_secs(3);
    tokio::time::sleep(race + Duration::from_millis(100)).await;
    let another = db.another().await;
    let mut set = JoinSet::new();
    for i in 0..10 {
        let store = if i % 2 == 0 { store.clone() } else { another.clone() };
        set.spawn(async move { store.place_order(keyed("c1", "k1", "h1", race)).await.unwrap() });
    }
    let placed: Vec<Placed> = set.join_all().await;
    assert!(placed.iter().all(|p| p.id == placed[0].id), "{placed:?}");
    assert_eq!(placed.iter().filter(|p| !p.replayed).count(), 1);

    assert_eq!(db.count("SELECT count(*) FROM orders").await, 4);
    assert_eq!(db.count("SELECT count(*) FROM idempotency_keys").await, 1);
}

/// Prunes `table` at `cutoff` in batches of `max` until one comes back
/// short; returns each batch's count.
async fn prune_all(store: &dyn Database, table: Prunable, cutoff: i64, max: usize) -> Vec<u64> {
    let mut batches = Vec::new();
    loop {
        let deleted = store.prune(table.clone(), cutoff, max).await.expect("prune");
        batches.push(deleted);
        if deleted < max as u64 {
            return batches;
        }
    }
}

pub async fn pruning_removes_only_rows_older_than_the_window_in_bounded_batches(db: &impl Fixture) {
    let store = db.store();
    store.set_stock("tea", 100).await.unwrap();
    let run = |n: usize, prefix: &'static str| {
        let store = store.clone();
        async move {
            for i in 0..n {
                let key = format!("{prefix}{i}");
                store.place_order(order("c1", &[("tea", 1)], Some((key.as_str(), "h")))).await.unwrap();
            }
            drain(&*store, "inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 64).await;
            drain(&*store, "notifier", QUEUE_INVENTORY_EVENTS, Effect::Notify { webhooks: false }, 64).await;
        }
    };
    run(5, "old").await;
    let cutoff = crate::domain::now_millis();
    tokio::time::sleep(Duration::from_millis(20)).await;
    run(3, "new").await;
    assert_eq!(db.count("SELECT count(*) FROM inbox").await, 8);

    // Each batch takes at most `max` rows, and only those at or before the cutoff.
    let inbox = Prunable::Inbox("inventory".into());
    assert_eq!(prune_all(&*store, inbox.clone(), cutoff, 2).await, vec![2, 2, 1]);
    assert_eq!(prune_all(&*store, Prunable::Notifications, cutoff, 2).await, vec![2, 2, 1]);
    assert_eq!(prune_all(&*store, Prunable::IdempotencyKeys, cutoff, 2).await, vec![2, 2, 1]);
    assert_eq!(db.count("SELECT count(*) FROM inbox").await, 3);
    assert_eq!(db.count("SELECT count(*) FROM notifications").await, 3);
    assert_eq!(db.count("SELECT count(*) FROM idempotency_keys WHERE key LIKE 'new%'").await, 3);
    assert_eq!(db.count("SELECT count(*) FROM idempotency_keys").await, 3);
    // Another consumer's inbox is its own, and nothing is left to prune.
    assert_eq!(store.prune(Prunable::Inbox("other".into()), i64::MAX / 2, 10).await.unwrap(), 0);
    assert_eq!(prune_all(&*store, inbox, cutoff, 2).await, vec![0]);
    // The orders, their stock and their statuses are untouched.
    assert_eq!(db.count("SELECT count(*) FROM orders WHERE status = 'completed'").await, 8);
    assert_eq!(
        store.list_stock().await.unwrap()[0],
        StockLevel { sku: "tea".into(), available: 92, reserved: 8, shipped: 0 }
    );
}

pub async fn a_redelivery_inside_the_window_is_deduplicated_and_after_it_refused_by_status(db: &impl Fixture) {
    let store = db.store();
    store.set_stock("tea", 5).await.unwrap();
    let placed = store.place_order(order("c1", &[("tea", 2)], None)).await.unwrap();
    let placed_event = db.text("SELECT body FROM messages").await;
    drain(&*store, "inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 10).await;
    let reserved_event = db.text("SELECT body FROM messages").await;
    drain(&*store, "notifier", QUEUE_INVENTORY_EVENTS, Effect::Notify { webhooks: false }, 10).await;

    // Inside the window: pruning keeps the entries, and the copies are duplicates.
    let window = crate::domain::cutoff(crate::domain::now_millis(), Duration::from_secs(3600));
    assert_eq!(store.prune(Prunable::Inbox("inventory".into()), window, 1000).await.unwrap(), 0);
    assert_eq!(store.prune(Prunable::Notifications, window, 1000).await.unwrap(), 0);
    let copy = |body: &str| vec![Event::from_json(body.as_bytes()).unwrap()];
    assert_eq!(store.reserve("inventory", copy(&placed_event)).await.unwrap(), vec![Handled::Duplicate]);
    assert_eq!(store.notify("notifier", copy(&reserved_event), false).await.unwrap(), vec![Handled::Duplicate]);

    // Past it, with the entries gone, the order's status refuses them both:
    // no second reservation, no second notification.
    let all = crate::domain::now_millis() + 1;
    assert_eq!(store.prune(Prunable::Inbox("inventory".into()), all, 1000).await.unwrap(), 1);
    assert_eq!(store.prune(Prunable::Notifications, all, 1000).await.unwrap(), 1);
    assert_eq!(store.reserve("inventory", copy(&placed_event)).await.unwrap(), vec![Handled::Duplicate]);
    assert_eq!(store.notify("notifier", copy(&reserved_event), false).await.unwrap(), vec![Handled::Duplicate]);
    assert_eq!(db.count("SELECT count(*) FROM notifications").await, 0);
    assert_eq!(db.count("SELECT count(*) FROM messages").await, 0, "nothing new was queued");
    assert_eq!(
        store.list_stock().await.unwrap()[0],
        StockLevel { sku: "tea".into(), available: 3, reserved: 2, shipped: 0 }
    );
    assert_eq!(store.get_order(placed.id).await.unwrap().unwrap().status, Status::Completed);
}
