//! Tests against a real PostgreSQL, each in a fresh schema of its own.
//!
//! The server is `ORDERFLOW_TEST_POSTGRES_URL` (default: the local `test`
//! database). When it cannot be reached the tests say so and pass, unless
//! `ORDERFLOW_REQUIRE_SERVICES=1`, when they fail: CI sets it where the
//! server is guaranteed. Each schema is dropped when its test ends.

use super::orders::STATUS_SCAN;
use super::*;
use crate::domain::{CustomerId, EventType, IdempotencyKey, LineItem, NewOrder, Quantity, Sku, Status};
use crate::messaging::{BrokerError, OutboxMessage, QUEUE_INVENTORY_EVENTS, QUEUE_ORDER_EVENTS};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use tokio::task::JoinSet;
use tokio_postgres::NoTls;
use uuid::Uuid;

fn base_url() -> String {
    std::env::var("ORDERFLOW_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

/// Drops its schema when the test ends, also when it fails.
struct Schema(String);

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (base_url(), self.0.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            rt.block_on(async move {
                if let Ok((client, conn)) = tokio_postgres::connect(&url, NoTls).await {
                    tokio::spawn(conn);
                    let sql = format!("SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {name} CASCADE");
                    if let Err(e) = client.batch_execute(&sql).await {
                        eprintln!("could not drop test schema {name}: {}", describe(&e));
                    }
                }
            })
        })
        .join();
    }
}

struct TestDb {
    store: Arc<PostgresStore>,
    /// The store's URL, to open more stores (as other processes would).
    url: String,
    /// A plain connection into the same schema, for looking behind the store.
    admin: tokio_postgres::Client,
    _schema: Schema,
}

impl TestDb {
    async fn count(&self, sql: &str) -> i64 {
        self.admin.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {}", describe(&e))).get(0)
    }
}

fn new_schema_name() -> String {
    format!("test_{}", Uuid::now_v7().simple())
}

/// A connection to the test server, or `None` (after saying why) when the
/// tests should be skipped.
async fn admin_connection() -> Option<tokio_postgres::Client> {
    let url = base_url();
    let why = match tokio::time::timeout(Duration::from_secs(3), tokio_postgres::connect(&url, NoTls)).await {
        Ok(Ok((client, conn))) => {
            tokio::spawn(conn);
            return Some(client);
        }
        Ok(Err(e)) => describe(&e),
        Err(_) => "timed out".to_owned(),
    };
    if std::env::var("ORDERFLOW_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("PostgreSQL at {url} is required (ORDERFLOW_REQUIRE_SERVICES=1) but unreachable: {why}");
    }
    eprintln!(
        "skipping PostgreSQL test: {url} is unreachable ({why}); set ORDERFLOW_REQUIRE_SERVICES=1 to fail instead"
    );
    None
}

async fn setup_with(extra: Option<&str>) -> Option<TestDb> {
    let admin = admin_connection().await?;
    let name = new_schema_name();
    admin.batch_execute(&format!("CREATE SCHEMA {name}; SET search_path TO {name}")).await.unwrap();
    let schema = Schema(name.clone());
    let mut url = with_param(&base_url(), &format!("options=-csearch_path%3D{name}"));
    if let Some(extra) = extra {
        url = with_param(&url, extra);
    }
    let store = Arc::new(PostgresStore::open(&url).await.expect("opening the store"));
    Some(TestDb { store, url, admin, _schema: schema })
}

async fn setup() -> Option<TestDb> {
    setup_with(None).await
}

fn order(customer: &str, items: &[(&str, i64)], key: Option<(&str, &str)>) -> PlaceOrder {
    let items = items
        .iter()
        .map(|(sku, n)| LineItem { sku: Sku::parse(*sku).unwrap(), quantity: Quantity::parse(*n).unwrap() })
        .collect();
    PlaceOrder {
        id: OrderId::new(),
        order: NewOrder::new(CustomerId::parse(customer).unwrap(), items).unwrap(),
        idempotency: key.map(|(k, hash)| (IdempotencyKey::parse(k).unwrap(), hash.to_owned())),
    }
}

const FAST_RETRY: RetryPolicy = RetryPolicy { max_attempts: 2, base: Duration::from_millis(1) };

/// Consumes `queue` until it has nothing ready; returns the events applied.
async fn drain(store: &PostgresStore, consumer: &str, queue: &str, effect: Effect, max: usize) -> usize {
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

/// Listing by a rare status pages through a large table in short pages,
/// each looking at a bounded stretch of it, and finds every match once.
#[tokio::test]
async fn a_rare_status_is_listed_in_bounded_pages() {
    let Some(db) = setup().await else { return };
    let total = 2 * STATUS_SCAN + 5_000;
    db.admin
        .batch_execute(&format!(
            "INSERT INTO orders (id, customer_id, status, items, created_at, updated_at)
             SELECT gen_random_uuid(), 'c', 'completed', '[]', 0, 0 FROM generate_series(1, {total})"
        ))
        .await
        .unwrap();
    // The newest, the oldest and one in the middle are rejected.
    db.admin
        .batch_execute(&format!(
            "UPDATE orders SET status = 'rejected', reason = 'out_of_stock:x'
             WHERE id IN ((SELECT id FROM orders ORDER BY id LIMIT 1)
                          UNION (SELECT id FROM orders ORDER BY id DESC LIMIT 1)
                          UNION (SELECT id FROM orders ORDER BY id OFFSET {} LIMIT 1))",
            total / 2
        ))
        .await
        .unwrap();
    let expected: Vec<Uuid> = db
        .admin
        .query("SELECT id FROM orders WHERE status = 'rejected' ORDER BY id DESC", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(expected.len(), 3);

    let (mut found, mut pages, mut before) = (Vec::new(), 0, None);
    loop {
        let filter = OrderFilter { status: Some(Status::Rejected), before, limit: 50, customer_id: None };
        let page = db.store.list_orders(filter).await.unwrap();
        pages += 1;
        found.extend(page.orders.iter().map(|o| o.order_id.as_uuid()));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(found, expected, "every rejected order, newest first, once");
    assert_eq!(pages, 3, "each page looks at {STATUS_SCAN} orders at most");
}

#[tokio::test]
async fn places_gets_and_pages_orders() {
    let Some(db) = setup().await else { return };
    let mut ids = Vec::new();
    for i in 0..5 {
        let customer = if i % 2 == 0 { "even" } else { "odd" };
        let placed = db.store.place_order(order(customer, &[("tea", i + 1), ("cake", 1)], None)).await.unwrap();
        assert!(!placed.replayed);
        ids.push(placed.id);
    }
    let view = db.store.get_order(ids[2]).await.unwrap().expect("the order");
    assert_eq!(view.customer_id, "even");
    assert_eq!(view.status, Status::Placed);
    assert_eq!(view.items.len(), 2);
    assert_eq!(view.items[0].sku.as_str(), "tea");
    assert_eq!(view.items[0].quantity.get(), 3);
    assert_eq!(view.history.len(), 1);
    assert!(db.store.get_order(OrderId::new()).await.unwrap().is_none());

    // Pages of two, newest first, never repeating or skipping.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = db.store.list_orders(OrderFilter { before, limit: 2, ..OrderFilter::default() }).await.unwrap();
        seen.extend(page.orders.iter().map(|o| o.order_id));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ids.iter().rev().copied().collect::<Vec<_>>());
    let odd = OrderFilter { customer_id: Some("odd".into()), limit: 10, ..OrderFilter::default() };
    assert_eq!(db.store.list_orders(odd).await.unwrap().orders.len(), 2);
    let placed = OrderFilter { status: Some(Status::Placed), limit: 3, ..OrderFilter::default() };
    assert_eq!(db.store.list_orders(placed).await.unwrap().orders.len(), 3);
    let rejected = OrderFilter { status: Some(Status::Rejected), limit: 3, ..OrderFilter::default() };
    assert!(db.store.list_orders(rejected).await.unwrap().orders.is_empty());

    // Each order queued its OrderPlaced event, as the SQLite store writes it.
    let body: String = db.admin.query_one("SELECT body FROM messages ORDER BY id LIMIT 1", &[]).await.unwrap().get(0);
    let event = Event::from_json(body.as_bytes()).unwrap();
    assert_eq!((event.event_type, event.order_id), (EventType::OrderPlaced, ids[0]));
    let stats = db.store.stats().await.unwrap();
    assert_eq!((status_count(&stats, "placed"), stats.queued_messages, stats.dead_letters), (5, 5, 0));
    db.store.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_keys_yield_one_order() {
    let Some(db) = setup().await else { return };
    let first = db.store.place_order(order("c1", &[("tea", 1)], Some(("k1", "h1")))).await.unwrap();
    let again = db.store.place_order(order("c1", &[("tea", 1)], Some(("k1", "h1")))).await.unwrap();
    assert_eq!((again.id, again.created_at, again.replayed), (first.id, first.created_at, true));
    let other = db.store.place_order(order("c1", &[("tea", 2)], Some(("k1", "h2")))).await;
    assert!(matches!(other, Err(StoreError::IdempotencyConflict)), "{other:?}");

    // Twenty at once with one key: one order, the others replay it.
    let mut set = JoinSet::new();
    for _ in 0..20 {
        let store = db.store.clone();
        set.spawn(async move { store.place_order(order("c2", &[("tea", 1)], Some(("k2", "h")))).await.unwrap() });
    }
    let placed: Vec<Placed> = set.join_all().await;
    assert!(placed.iter().all(|p| p.id == placed[0].id));
    assert_eq!(placed.iter().filter(|p| !p.replayed).count(), 1);

    // Two bodies racing for a key, through two stores (as two processes):
    // one wins, its twins replay it, the other body conflicts.
    let other_store = Arc::new(PostgresStore::open(&db.url).await.unwrap());
    let mut set = JoinSet::new();
    for i in 0..20 {
        let store = if i % 2 == 0 { db.store.clone() } else { other_store.clone() };
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn competing_consumers_reserve_stock_exactly_once() {
    let Some(db) = setup().await else { return };
    db.store.set_stock("widget", 100).await.unwrap();
    // A second store on the same schema stands in for a second worker process.
    let other = Arc::new(PostgresStore::open(&db.url).await.unwrap());
    let placing_done = Arc::new(AtomicBool::new(false));
    let mut consumers = JoinSet::new();
    for store in [db.store.clone(), other.clone()] {
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
        let store = if i % 2 == 0 { db.store.clone() } else { other.clone() };
        placing.spawn(async move { store.place_order(order("c", &[("widget", 1)], None)).await.unwrap() });
    }
    placing.join_all().await;
    placing_done.store(true, Ordering::SeqCst);
    let applied: usize = consumers.join_all().await.into_iter().sum();
    assert_eq!(applied, 300, "every order decided exactly once");

    let stats = db.store.stats().await.unwrap();
    assert_eq!((status_count(&stats, "reserved"), status_count(&stats, "rejected")), (100, 200));
    let stock = db.store.list_stock().await.unwrap();
    assert_eq!(stock, vec![StockLevel { sku: "widget".into(), available: 0, reserved: 100 }]);
    assert_eq!(db.count("SELECT count(*) FROM messages WHERE queue = 'order-events'").await, 0);
    assert_eq!(db.count("SELECT count(*) FROM messages WHERE queue = 'inventory-events'").await, 300);
    assert_eq!(db.count("SELECT count(*) FROM inbox").await, 300);
    let rejected = OrderFilter { status: Some(Status::Rejected), limit: 1, ..OrderFilter::default() };
    assert_eq!(db.store.list_orders(rejected).await.unwrap().orders[0].reason.as_deref(), Some("out_of_stock:widget"));

    // The notifiers, competing too, complete the reserved orders.
    let (a, b) = tokio::join!(
        drain(&db.store, "notifier", QUEUE_INVENTORY_EVENTS, Effect::Notify, 16),
        drain(&other, "notifier", QUEUE_INVENTORY_EVENTS, Effect::Notify, 16),
    );
    assert_eq!(a + b, 300);
    let stats = db.store.stats().await.unwrap();
    assert_eq!((status_count(&stats, "completed"), status_count(&stats, "rejected")), (100, 200));
    assert_eq!((stats.queued_messages, stats.dead_letters), (0, 0));
    assert_eq!(db.count("SELECT count(*) FROM notifications").await, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_sku_orders_across_three_workers_keep_stock_consistent() {
    let Some(db) = setup().await else { return };
    for sku in ["a", "b", "c"] {
        db.store.set_stock(sku, 60).await.unwrap();
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
        let (store, items) = (db.store.clone(), shapes[i % shapes.len()]);
        placing.spawn(async move { store.place_order(order("c", items, None)).await.unwrap() });
    }
    placing.join_all().await;
    let mut workers = JoinSet::new();
    for _ in 0..3 {
        let store = PostgresStore::open(&db.url).await.unwrap();
        workers.spawn(async move { drain(&store, "inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 8).await });
    }
    assert_eq!(workers.join_all().await.into_iter().sum::<usize>(), 240);
    // Stock taken equals what the reserved orders asked for, SKU by SKU.
    let wanted = db
        .admin
        .query(
            "SELECT item->>'sku', sum((item->>'quantity')::bigint)::bigint
             FROM orders, jsonb_array_elements(items) AS item WHERE status = 'reserved' GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let stock = db.store.list_stock().await.unwrap();
    for level in &stock {
        assert_eq!(level.available + level.reserved, 60, "{level:?}");
        let asked = wanted.iter().find(|r| r.get::<_, &str>(0) == level.sku).map(|r| r.get::<_, i64>(1));
        assert_eq!(asked.unwrap_or(0), level.reserved, "{level:?}");
    }
    assert!(stock.iter().any(|l| l.available < 2), "the stock ran out, so some orders were rejected: {stock:?}");
    assert_eq!(db.count("SELECT count(*) FROM orders WHERE status = 'placed'").await, 0);
}

#[tokio::test]
async fn duplicate_deliveries_reserve_once() {
    let Some(db) = setup().await else { return };
    db.store.set_stock("tea", 5).await.unwrap();
    let placed = db.store.place_order(order("c1", &[("tea", 2)], None)).await.unwrap();
    // The same event queued twice more, as an at-least-once relay might.
    db.admin
        .batch_execute(
            "INSERT INTO messages (queue, routing_key, body)
             SELECT queue, routing_key, body FROM messages, generate_series(1, 2)",
        )
        .await
        .unwrap();
    let batch = db.store.consume("inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 2, FAST_RETRY).await.unwrap();
    assert_eq!((batch.taken, batch.applied.len()), (2, 1), "a copy in the same batch is a duplicate");
    let batch = db.store.consume("inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 10, FAST_RETRY).await.unwrap();
    assert_eq!((batch.taken, batch.applied.len()), (1, 0), "a copy in a later batch is a duplicate");

    // Another event id about the same, already reserved order changes nothing.
    let view = db.store.get_order(placed.id).await.unwrap().unwrap();
    let items = view.items.clone();
    let stray = Event::new(EventType::OrderPlaced, placed.id, CustomerId::parse("c1").unwrap(), items, None);
    let handled = db.store.reserve("inventory", vec![stray]).await.unwrap();
    assert_eq!(handled, vec![Handled::Duplicate]);

    assert_eq!(db.store.list_stock().await.unwrap()[0], StockLevel { sku: "tea".into(), available: 3, reserved: 2 });
    let view = db.store.get_order(placed.id).await.unwrap().unwrap();
    assert_eq!(view.status, Status::Reserved);
    assert_eq!(view.history.iter().map(|t| t.status).collect::<Vec<_>>(), vec![Status::Placed, Status::Reserved]);
    assert_eq!(db.count("SELECT count(*) FROM messages WHERE queue = 'inventory-events'").await, 1);

    // An unknown SKU rejects the whole order and takes nothing.
    let mixed = db.store.place_order(order("c1", &[("tea", 1), ("nope", 1)], None)).await.unwrap();
    drain(&db.store, "inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 10).await;
    let view = db.store.get_order(mixed.id).await.unwrap().unwrap();
    assert_eq!((view.status, view.reason.as_deref()), (Status::Rejected, Some("unknown_sku:nope")));
    assert_eq!(db.store.list_stock().await.unwrap()[0].available, 3);
}

/// Two different `OrderPlaced` events about one order, applied at the same
/// moment by two workers that both read the order as placed: one reserves,
/// the other's batch fails and, tried again, finds a duplicate. Stock moves once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_events_about_one_order_applied_at_once_reserve_once() {
    let Some(db) = setup().await else { return };
    db.store.set_stock("tea", 5).await.unwrap();
    let placed = db.store.place_order(order("c1", &[("tea", 2)], None)).await.unwrap();
    let items = db.store.get_order(placed.id).await.unwrap().unwrap().items;
    let event = || Event::new(EventType::OrderPlaced, placed.id, CustomerId::parse("c1").unwrap(), items.clone(), None);
    let other = Arc::new(PostgresStore::open(&db.url).await.unwrap());

    // Hold the stock row, so both workers read the order and wait there.
    let (mut holder, conn) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
    tokio::spawn(conn);
    let hold = holder.transaction().await.unwrap();
    hold.execute("SELECT 1 FROM inventory WHERE sku = 'tea' FOR UPDATE", &[]).await.unwrap();
    let (first, second) = (event(), event());
    let a = tokio::spawn({
        let store = db.store.clone();
        let first = first.clone();
        async move { store.reserve("inventory", vec![first]).await }
    });
    let b = tokio::spawn({
        let store = other.clone();
        let second = second.clone();
        async move { store.reserve("inventory", vec![second]).await }
    });
    let waiting =
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%FROM inventory%'";
    for _ in 0..200 {
        if db.count(waiting).await == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(db.count(waiting).await, 2, "both workers wait for the stock row");
    hold.rollback().await.unwrap();

    let outcomes = [a.await.unwrap(), b.await.unwrap()];
    let done = outcomes.iter().filter(|o| matches!(o, Ok(h) if h == &[Handled::Done])).count();
    let failed = outcomes.iter().filter(|o| o.is_err()).count();
    assert_eq!((done, failed), (1, 1), "{outcomes:?}");
    // Whichever failed, tried again, finds nothing left to do.
    let again = if outcomes[0].is_err() { first } else { second };
    let again = db.store.reserve("inventory", vec![again]).await;
    assert_eq!(again.unwrap(), vec![Handled::Duplicate]);
    assert_eq!(db.store.list_stock().await.unwrap()[0], StockLevel { sku: "tea".into(), available: 3, reserved: 2 });
    assert_eq!(db.store.get_order(placed.id).await.unwrap().unwrap().status, Status::Reserved);
    assert_eq!(db.count("SELECT count(*) FROM messages WHERE queue = 'inventory-events'").await, 1);
}

#[tokio::test]
async fn poison_and_failing_messages_are_dead_lettered_and_replayed() {
    let Some(db) = setup().await else { return };
    db.admin
        .batch_execute(
            "INSERT INTO messages (queue, routing_key, body) VALUES ('order-events', 'order.placed', 'not json')",
        )
        .await
        .unwrap();
    let batch = db.store.consume("inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 10, FAST_RETRY).await.unwrap();
    assert_eq!((batch.taken, batch.dead_lettered, batch.retried), (1, 1, 0));
    let dead = db.store.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].error.starts_with("invalid event:"), "{}", dead[0].error);
    assert_eq!((dead[0].attempts, dead[0].queue.as_str(), dead[0].body.as_str()), (1, "order-events", "not json"));

    // An event whose order does not exist is retried, then dead-lettered.
    let orphan = Event::new(EventType::OrderPlaced, OrderId::new(), CustomerId::parse("c").unwrap(), vec![], None);
    db.admin
        .execute(
            "INSERT INTO messages (queue, routing_key, body) VALUES ('order-events', 'order.placed', $1)",
            &[&orphan.to_json()],
        )
        .await
        .unwrap();
    let batch = db.store.consume("inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 10, FAST_RETRY).await.unwrap();
    assert_eq!((batch.taken, batch.retried), (1, 1));
    assert_eq!(db.count("SELECT count(*) FROM messages WHERE attempts = 1 AND last_error LIKE '%not found'").await, 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let batch = db.store.consume("inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 10, FAST_RETRY).await.unwrap();
    assert_eq!((batch.taken, batch.dead_lettered), (1, 1));
    let dead = db.store.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[1].attempts, 2);
    assert!(dead[1].error.ends_with("not found"), "{}", dead[1].error);

    // Replay one, then the rest; they come back fresh.
    let mut signal = db.store.message_signal();
    signal.borrow_and_update();
    let first: i64 = dead[0].id.parse().unwrap();
    assert_eq!(db.store.replay(Some(first)).await.unwrap(), 1);
    assert!(signal.has_changed().unwrap());
    assert_eq!(db.store.replay(Some(first)).await.unwrap(), 0);
    assert_eq!(db.store.replay(None).await.unwrap(), 1);
    assert!(db.store.dead_letters(10).await.unwrap().is_empty());
    assert_eq!(db.count("SELECT count(*) FROM messages WHERE attempts = 0 AND available_at = 0").await, 2);
    let stats = db.store.stats().await.unwrap();
    assert_eq!((stats.queued_messages, stats.dead_letters), (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_processes_are_woken_through_notify() {
    let Some(db) = setup().await else { return };
    let other = PostgresStore::open(&db.url).await.unwrap();
    let mut signal = other.message_signal();
    // The listener bumps once when it starts listening; wait for that first.
    tokio::time::timeout(Duration::from_secs(5), signal.changed()).await.expect("listener started").unwrap();
    signal.borrow_and_update();
    db.store.place_order(order("c", &[("tea", 1)], None)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), signal.changed()).await.expect("woken by NOTIFY").unwrap();

    // Notifications from another schema do not wake this one.
    let Some(stranger) = setup().await else { return };
    signal.borrow_and_update();
    stranger.store.place_order(order("c", &[("tea", 1)], None)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!signal.has_changed().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_when_its_connections_are_killed() {
    let app = format!("orderflow_{}", Uuid::now_v7().simple());
    let Some(db) = setup_with(Some(&format!("application_name={app}"))).await else { return };
    let mut signal = db.store.message_signal();
    tokio::time::timeout(Duration::from_secs(5), signal.changed()).await.expect("listener started").unwrap();
    db.store.ping().await.unwrap();
    let killed = db
        .admin
        .query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", &[&app])
        .await
        .unwrap();
    assert!(killed.len() >= 2, "the pool's and the listener's connections");
    // A dead pooled connection fails at most once, as Unavailable; then the
    // pool replaces it.
    let mut recovered = false;
    for _ in 0..20 {
        match db.store.stats().await {
            Ok(_) => {
                recovered = true;
                break;
            }
            Err(StoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("expected Unavailable, got {e:?}"),
        }
    }
    assert!(recovered);
    // The listener reconnects and hears other processes again.
    let other = PostgresStore::open(&db.url).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), signal.changed()).await.expect("listener reconnected").unwrap();
    signal.borrow_and_update();
    other.place_order(order("c", &[("tea", 1)], None)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), signal.changed()).await.expect("woken after reconnect").unwrap();
}

#[tokio::test]
async fn unreachable_server_fails_fast() {
    let started = std::time::Instant::now();
    let result = PostgresStore::open("postgres://postgres@127.0.0.1:1/test").await;
    assert!(result.is_err());
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

/// A schema made by version 1 keeps its orders, loses the index on `status`,
/// leaves room on its pages for status updates, and still lists by status.
#[tokio::test]
async fn a_version_1_schema_is_migrated() {
    let Some(admin) = admin_connection().await else { return };
    let name = new_schema_name();
    let _schema = Schema(name.clone());
    let rejected = OrderId::new();
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {name}; SET search_path TO {name};
             {}
             CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL);
             INSERT INTO schema_version VALUES (1, 0);
             INSERT INTO orders (id, customer_id, status, reason, items, created_at, updated_at, rejected_at)
             VALUES ('{rejected}', 'c1', 'rejected', 'out_of_stock:tea', '[]', 1, 2, 2);",
            super::connect::MIGRATIONS[0]
        ))
        .await
        .unwrap();
    let store = PostgresStore::open(&with_param(&base_url(), &format!("schema={name}"))).await.unwrap();
    let filter = OrderFilter { status: Some(Status::Rejected), customer_id: None, before: None, limit: 10 };
    let page = store.list_orders(filter).await.unwrap();
    assert_eq!(page.orders.iter().map(|o| o.order_id).collect::<Vec<_>>(), vec![rejected]);
    let indexes: Vec<String> = admin
        .query(
            "SELECT indexname::text FROM pg_indexes WHERE schemaname = $1 AND tablename = 'orders' ORDER BY 1",
            &[&name],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(indexes, ["orders_by_customer", "orders_pkey"]);
    let options: Option<Vec<String>> = admin
        .query_one(&format!("SELECT reloptions FROM pg_class WHERE oid = '{name}.orders'::regclass"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(options, Some(vec!["fillfactor=60".to_owned()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_migrate_once_into_a_named_schema() {
    let Some(admin) = admin_connection().await else { return };
    let name = new_schema_name();
    let _schema = Schema(name.clone());
    let url = with_param(&base_url(), &format!("schema={name}"));
    let mut set = JoinSet::new();
    for _ in 0..4 {
        let url = url.clone();
        set.spawn(async move { PostgresStore::open(&url).await.map(|_| ()).map_err(|e| format!("{e:#}")) });
    }
    for result in set.join_all().await {
        result.unwrap();
    }
    let sql = format!("SELECT count(*) FROM {name}.schema_version");
    let versions = admin.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0);
    assert_eq!(versions, super::connect::MIGRATIONS.len() as i64, "each version ran once");
    assert!(PostgresStore::open(&with_param(&base_url(), "schema=bad-name")).await.is_err());
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

async fn relay_all(store: &PostgresStore, publisher: &Recorder) -> usize {
    let mut sent = 0;
    while let n @ 1.. = store.relay(7, publisher).await.unwrap() {
        sent += n;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_publish_each_outbox_row_once() {
    let Some(db) = setup().await else { return };
    for _ in 0..40 {
        db.store.place_order(order("c", &[("tea", 1)], None)).await.unwrap();
    }
    let other = PostgresStore::open(&db.url).await.unwrap();
    let recorder = Recorder::default();
    let (a, b) = tokio::join!(relay_all(&db.store, &recorder), relay_all(&other, &recorder));
    assert_eq!(a + b, 40);
    let mut bodies = recorder.0.lock().unwrap().clone();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 40);
    assert_eq!(db.count("SELECT count(*) FROM messages").await, 0);
}

/// Ids are handed out at insert, and transactions commit in any order: a
/// message that becomes visible long after messages with far higher ids were
/// taken is still taken, soon.
#[tokio::test]
async fn a_message_committed_after_later_ones_is_still_taken() {
    let Some(db) = setup().await else { return };
    db.store.set_stock("tea", 10).await.unwrap();
    db.store.place_order(order("c1", &[("tea", 1)], None)).await.unwrap();
    let body: String = db.admin.query_one("SELECT body FROM messages", &[]).await.unwrap().get(0);

    // Another process's transaction queues a copy of that event and has not
    // committed yet; meanwhile 100,000 ids go by and another order is queued.
    let (late, conn) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
    tokio::spawn(conn);
    late.batch_execute("BEGIN").await.unwrap();
    late.execute(
        "INSERT INTO messages (queue, routing_key, body) VALUES ($1, 'order.placed', $2)",
        &[&QUEUE_ORDER_EVENTS, &body],
    )
    .await
    .unwrap();
    db.admin
        .batch_execute("SELECT setval(pg_get_serial_sequence('messages', 'id'), nextval(pg_get_serial_sequence('messages', 'id')) + 100000)")
        .await
        .unwrap();
    db.store.place_order(order("c1", &[("tea", 1)], None)).await.unwrap();
    assert_eq!(drain(&db.store, "inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 10).await, 2);
    late.batch_execute("COMMIT").await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut taken = 0;
    while taken == 0 && tokio::time::Instant::now() < deadline {
        let batch = db.store.consume("inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 10, FAST_RETRY).await.unwrap();
        assert!(batch.applied.is_empty(), "the late copy is a duplicate");
        taken += batch.taken;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(taken, 1, "the message committed late was taken within 3 s");
    assert_eq!(db.count("SELECT count(*) FROM messages WHERE queue = 'order-events'").await, 0);
    assert_eq!(db.store.list_stock().await.unwrap()[0].available, 8, "the copy reserved nothing");
}
