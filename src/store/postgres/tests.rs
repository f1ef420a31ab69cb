//! Tests against a real PostgreSQL, each in a fresh schema of its own.
//!
//! The server is `ORDERFLOW_TEST_POSTGRES_URL` (default: the local `test`
//! database). When it cannot be reached the tests say so and pass, unless
//! `ORDERFLOW_REQUIRE_SERVICES=1`, when they fail: CI sets it where the
//! server is guaranteed. Each schema is dropped when its test ends.
//!
//! What every store promises runs here through `store::contract`; the tests
//! below are PostgreSQL's own: its scans, locks, notifications, connections
//! and migrations.

use super::orders::STATUS_SCAN;
use super::*;
use crate::domain::{CustomerId, Event, EventType, Status};
use crate::messaging::QUEUE_ORDER_EVENTS;
use crate::store::contract::{drain, order, Fixture, FAST_RETRY};
use crate::store::Database;
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

#[async_trait]
impl Fixture for TestDb {
    fn store(&self) -> Arc<dyn Database> {
        self.store.clone()
    }

    async fn another(&self) -> Arc<dyn Database> {
        Arc::new(PostgresStore::open(&self.url).await.expect("opening another store"))
    }

    async fn text(&self, sql: &str) -> String {
        let sql = format!("SELECT ({sql})::text");
        self.admin.query_one(&sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {}", describe(&e))).get(0)
    }

    async fn queue_message(&self, queue: &str, body: &str) {
        let sql = "INSERT INTO messages (queue, routing_key, body) VALUES ($1, 'by-hand', $2)";
        self.admin.execute(sql, &[&queue, &body]).await.unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
    }

    async fn execute(&self, sql: &str) {
        self.admin.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
    }
}

crate::store::contract::suite!(setup);

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
    let done = outcomes.iter().filter(|o| matches!(o, Ok(h) if matches!(h[..], [Handled::Done(_)]))).count();
    let failed = outcomes.iter().filter(|o| o.is_err()).count();
    assert_eq!((done, failed), (1, 1), "{outcomes:?}");
    // Whichever failed, tried again, finds nothing left to do.
    let again = if outcomes[0].is_err() { first } else { second };
    let again = db.store.reserve("inventory", vec![again]).await;
    assert_eq!(again.unwrap(), vec![Handled::Duplicate]);
    assert_eq!(
        db.store.list_stock().await.unwrap()[0],
        StockLevel { sku: "tea".into(), available: 3, reserved: 2, shipped: 0 }
    );
    assert_eq!(db.store.get_order(placed.id).await.unwrap().unwrap().status, Status::Reserved);
    assert_eq!(db.count("SELECT count(*) FROM messages WHERE queue = 'inventory-events'").await, 1);
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

    // A status moved by this store reaches the other one's live streams.
    let mut statuses = other.status_signal();
    statuses.borrow_and_update();
    drain(&*db.store, "inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 10).await;
    tokio::time::timeout(Duration::from_secs(5), statuses.changed()).await.expect("told by NOTIFY").unwrap();
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
/// leaves room on its pages for status updates, and still lists by status;
/// its completed orders hold their stock, which a cancel gives back.
#[tokio::test]
async fn a_version_1_schema_is_migrated() {
    let Some(admin) = admin_connection().await else { return };
    let name = new_schema_name();
    let _schema = Schema(name.clone());
    let (rejected, completed) = (OrderId::new(), OrderId::new());
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {name}; SET search_path TO {name};
             {}
             CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL);
             INSERT INTO schema_version VALUES (1, 0);
             INSERT INTO orders (id, customer_id, status, reason, items, created_at, updated_at, rejected_at)
             VALUES ('{rejected}', 'c1', 'rejected', 'out_of_stock:tea', '[]', 1, 2, 2);
             INSERT INTO orders (id, customer_id, status, items, created_at, updated_at, reserved_at, completed_at)
             VALUES ('{completed}', 'c1', 'completed', '[{{\"sku\":\"tea\",\"quantity\":2}}]', 1, 2, 2, 2);
             INSERT INTO inventory (sku, available, reserved, updated_at) VALUES ('tea', 3, 2, 1);",
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

    let held = format!("SELECT id FROM {name}.orders WHERE holds_stock");
    let held: Vec<Uuid> = admin.query(&held, &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(held, [completed.as_uuid()], "only the completed order holds stock");
    let cancelled = store.request(completed, crate::domain::Request::Cancel).await.unwrap().unwrap();
    assert_eq!(cancelled.order.status, Status::Cancelled, "the new status passes the CHECK");
    drain(&store, "inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 10).await;
    let tea = StockLevel { sku: "tea".into(), available: 5, reserved: 0, shipped: 0 };
    assert_eq!(store.list_stock().await.unwrap(), [tea]);
}

/// Schema version 7 names the order of each message already queued whose
/// body is one order's events; a pack of several orders' events, a body
/// that is not JSON and one whose order id is not a UUID name none. The
/// trail finds each as before.
#[tokio::test]
async fn a_version_6_queue_names_the_orders_of_its_messages() {
    let Some(admin) = admin_connection().await else { return };
    let name = new_schema_name();
    let _schema = Schema(name.clone());
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {name}; SET search_path TO {name};
             {}
             CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL);
             INSERT INTO schema_version SELECT generate_series(1, 6), 0;",
            super::connect::MIGRATIONS[..6].join("\n")
        ))
        .await
        .unwrap();
    let (a, b) = (OrderId::new(), OrderId::new());
    let body = |order: OrderId| {
        Event::new(EventType::OrderPlaced, order, CustomerId::parse("c1").unwrap(), vec![], None).to_json()
    };
    for (queue, body) in [
        ("order-events", body(a)),
        ("inventory-events", format!("[{},{}]", body(a), body(b))),
        ("order-events", body(b).replace(&b.to_string(), &b.to_string().to_uppercase())),
        ("inventory-events", format!("not an event, about {a}")),
        ("order-events", r#"{"order_id": "not a uuid"}"#.to_owned()),
    ] {
        let sql = "INSERT INTO messages (queue, routing_key, body) VALUES ($1, 'by-hand', $2)";
        admin.execute(sql, &[&queue, &body]).await.unwrap();
    }
    let store = PostgresStore::open(&with_param(&base_url(), &format!("schema={name}"))).await.unwrap();
    let named = admin.query("SELECT order_id FROM messages ORDER BY id", &[]).await.unwrap();
    let named: Vec<Option<Uuid>> = named.iter().map(|r| r.get(0)).collect();
    assert_eq!(named, [Some(a.as_uuid()), None, Some(b.as_uuid()), None, None]);
    for (id, waiting) in [(a, vec![1, 2, 4]), (b, vec![2, 3])] {
        let trail = store.order_trail(id).await.unwrap();
        assert_eq!(trail.waiting.iter().map(|m| m.id).collect::<Vec<_>>(), waiting);
    }
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
    assert_eq!(drain(&*db.store, "inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 10).await, 2);
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

/// An event's JSON, written at `ms`.
fn written_at(ms: i64) -> String {
    let mut event = Event::new(EventType::OrderPlaced, OrderId::new(), CustomerId::parse("c1").unwrap(), vec![], None);
    event.timestamp = crate::domain::format_millis(ms);
    event.to_json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counts_name_each_queue_by_its_front_row() {
    let Some(db) = setup().await else { return };
    // Written out of time order, so the front is the first row, not the oldest stamp.
    for (queue, body) in [
        ("order-events", written_at(3_000)),
        ("inventory-events", written_at(5_000)),
        ("order-events", written_at(1_000)),
        ("inventory-events", written_at(4_000)),
        ("webhooks", "not an event".to_owned()),
        ("webhooks", written_at(2_000)),
    ] {
        let sql = "INSERT INTO messages (queue, routing_key, body) VALUES ($1, 'by-hand', $2)";
        db.admin.execute(sql, &[&queue, &body]).await.unwrap();
    }
    let fronts = || async {
        let mut fronts = db.store.stats().await.unwrap().oldest_messages;
        fronts.sort();
        fronts
    };
    // A queue whose front row is not an event has no age to report.
    assert_eq!(fronts().await, [("inventory-events".to_owned(), 5_000), ("order-events".to_owned(), 3_000)]);
    let taken = "DELETE FROM messages WHERE id IN (SELECT min(id) FROM messages GROUP BY queue)";
    db.admin.execute(taken, &[]).await.unwrap();
    let expected = [("inventory-events", 4_000), ("order-events", 1_000), ("webhooks", 2_000)];
    assert_eq!(fronts().await, expected.map(|(q, at)| (q.to_owned(), at)));
    assert_eq!(db.store.stats().await.unwrap().queued_messages, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_whose_front_was_consumed_is_counted_from_its_new_front() {
    let Some(db) = setup().await else { return };
    // The first 2,000 rows consumed: their index entries stay until VACUUM.
    let filler = |rows: i32| {
        format!(
            "INSERT INTO messages (queue, routing_key, body)
             SELECT 'order-events', 'filler', 'not an event' FROM generate_series(1, {rows})"
        )
    };
    let one = "INSERT INTO messages (queue, routing_key, body) VALUES ($1, 'by-hand', $2)";
    db.admin.batch_execute(&filler(2_000)).await.unwrap();
    db.admin.execute(one, &[&"order-events", &written_at(7_000)]).await.unwrap();
    db.admin.batch_execute(&filler(1_000)).await.unwrap();
    db.admin.execute(one, &[&"inventory-events", &written_at(8_000)]).await.unwrap();
    db.admin.batch_execute("DELETE FROM messages WHERE id <= 2000").await.unwrap();

    let stats = db.store.stats().await.unwrap();
    assert_eq!(stats.queued_messages, 1_002);
    let mut fronts = stats.oldest_messages;
    fronts.sort();
    assert_eq!(fronts, [("inventory-events".to_owned(), 8_000), ("order-events".to_owned(), 7_000)]);
}
