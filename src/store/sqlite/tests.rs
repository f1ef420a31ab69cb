//! Tests of what only the SQLite store does: its writer's rounds, its
//! message ids and its migrations. What every store promises is in
//! `store::contract`, run here on a temporary file.

use super::connection::MIGRATIONS;
use super::SqliteStore;
use crate::domain::{CustomerId, LineItem, NewOrder, OrderId, Quantity, Sku, Status};
use crate::store::contract::Fixture;
use crate::store::{Database, OrderFilter, PlaceOrder, Store};
use async_trait::async_trait;
use rusqlite::Connection;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A store on a new file, and a plain connection beside it.
struct TestDb {
    path: String,
    store: Arc<SqliteStore>,
    admin: Mutex<Connection>,
    _dir: tempfile::TempDir,
}

async fn setup() -> Option<TestDb> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.db").to_string_lossy().into_owned();
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    let admin = Connection::open(&path).unwrap();
    admin.busy_timeout(Duration::from_secs(10)).unwrap();
    Some(TestDb { path, store, admin: Mutex::new(admin), _dir: dir })
}

#[async_trait]
impl Fixture for TestDb {
    fn store(&self) -> Arc<dyn Database> {
        self.store.clone()
    }

    async fn another(&self) -> Arc<dyn Database> {
        Arc::new(SqliteStore::open(&self.path).await.expect("opening another store"))
    }

    async fn text(&self, sql: &str) -> String {
        let admin = self.admin.lock().unwrap();
        let value = admin.query_row(sql, [], |r| r.get::<_, rusqlite::types::Value>(0));
        match value.unwrap_or_else(|e| panic!("{sql}: {e}")) {
            rusqlite::types::Value::Integer(n) => n.to_string(),
            rusqlite::types::Value::Text(text) => text,
            other => panic!("{sql} gave {other:?}"),
        }
    }

    async fn queue_message(&self, queue: &str, body: &str) {
        let sql = "INSERT INTO messages (queue, routing_key, body) VALUES (?1, 'by-hand', ?2)";
        self.admin.lock().unwrap().execute(sql, [queue, body]).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn execute(&self, sql: &str) {
        self.admin.lock().unwrap().execute(sql, []).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

crate::store::contract::suite!(setup);

/// A database made by an earlier version keeps its orders, loses the
/// index on `status`, and still finds its orders by status.
#[tokio::test]
async fn a_version_1_database_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    let (done, failed) = (OrderId::new(), OrderId::new());
    let v1 = Connection::open(&path).unwrap();
    v1.execute_batch(&format!("{} PRAGMA user_version = 1;", MIGRATIONS[0])).unwrap();
    for (id, status, at) in [(done, "completed", "completed_at"), (failed, "rejected", "rejected_at")] {
        v1.execute(
            &format!(
                "INSERT INTO orders (id, customer_id, status, items, created_at, updated_at, {at})
                 VALUES (?1, 'c1', ?2, '[]', 1, 2, 2)"
            ),
            [id.to_string(), status.to_owned()],
        )
        .unwrap();
    }
    drop(v1);

    let store = SqliteStore::open(&path.to_string_lossy()).await.unwrap();
    for (status, id) in [(Status::Completed, Some(done)), (Status::Rejected, Some(failed)), (Status::Placed, None)] {
        let filter = OrderFilter { status: Some(status), customer_id: None, before: None, limit: 10 };
        let found: Vec<OrderId> = store.list_orders(filter).await.unwrap().orders.iter().map(|o| o.order_id).collect();
        assert_eq!(found, Vec::from_iter(id), "{status}");
    }
    assert_current(&path);
}

/// After some errors SQLite rolls the whole transaction back by itself
/// (here an interrupt, as an I/O error or a full disk would). The round
/// it happened in fails whole: no job of it runs on outside the
/// transaction, nothing of it is stored, every caller hears it failed,
/// and the writer goes on with a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_sqlite_rolled_back_fails_its_whole_round() {
    use super::{outcome, Guard, Job};
    use crate::store::StoreError;
    use std::sync::mpsc::channel;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("orders.db").to_str().unwrap()).await.unwrap();
    // Holds the writer, so that the jobs below make up one round.
    let (running, started) = channel::<()>();
    let (go, wait_for_go) = channel::<()>();
    let held = store
        .send(Guard::AbortOnError, Job::Background, move |_| {
            running.send(()).unwrap();
            wait_for_go
                .recv_timeout(Duration::from_secs(30))
                .map_err(|e| StoreError::Other(anyhow::anyhow!("not told to go on: {e}")))
        })
        .unwrap();
    started.recv_timeout(Duration::from_secs(10)).expect("the holding job runs");
    let place = |store: &SqliteStore| {
        let order = super::super::PreparedOrder::new(order());
        let id = order.id;
        (id, store.send(Guard::AbortOnError, Job::Urgent, move |c| super::orders::place(c, order)).unwrap())
    };
    let (before, placed_before) = place(&store);
    let interrupted = store
        .send(Guard::Savepoint, Job::Urgent, |c| {
            // Interrupts the next statement as it runs.
            c.progress_handler(1, Some(|| true));
            let result = c
                .execute("INSERT INTO inventory (sku, available, reserved, updated_at) VALUES ('tea', 1, 0, 0)", [])
                .map_err(super::db_err);
            c.progress_handler(0, None::<fn() -> bool>);
            result
        })
        .unwrap();
    let (after, placed_after) = place(&store);
    go.send(()).unwrap();
    outcome(held).await.unwrap();

    assert!(outcome(interrupted).await.is_err());
    // The order placed before the failure was in its transaction; the
    // one after it either ran there too, or in a round of its own. Either
    // way, an order is stored, with its event, exactly when its caller
    // heard it was.
    let before = (before, outcome(placed_before).await);
    assert!(matches!(before.1, Err(StoreError::Unavailable(_))), "{before:?}");
    let mut stored = 0;
    for (id, answer) in [before, (after, outcome(placed_after).await)] {
        let found = store.get_order(id).await.unwrap().is_some();
        assert_eq!(found, answer.is_ok(), "{id}: stored {found}, answered {answer:?}");
        stored += found as i64;
    }
    let raw = Connection::open(dir.path().join("orders.db")).unwrap();
    let queued: i64 = raw.query_row("SELECT count(*) FROM queue_order_events", [], |r| r.get(0)).unwrap();
    assert_eq!(queued, stored, "every stored order has its event, and only those");
    assert!(store.list_stock().await.unwrap().is_empty(), "the interrupted insert left nothing");
    // The writer goes on.
    let id = store.place_order(order()).await.unwrap().id;
    assert_eq!(store.get_order(id).await.unwrap().unwrap().status, Status::Placed);
}

/// A batch larger than a part is applied and settled part by part, in
/// order, as one call: every order reserved, every message gone, and the
/// stock taken once per order.
#[tokio::test]
async fn a_batch_of_many_parts_is_applied_and_settled_whole() {
    use crate::messaging::{RetryPolicy, QUEUE_ORDER_EVENTS};
    use crate::store::{Effect, QueueStore};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("orders.db").to_str().unwrap()).await.unwrap();
    store.set_stock("tea", 1000).await.unwrap();
    let n = 3 * super::traits::SETTLE_PART + 5;
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(store.place_order(order()).await.unwrap().id);
    }
    let consumed =
        store.consume("inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 512, RetryPolicy::default()).await.unwrap();
    assert_eq!((consumed.taken, consumed.applied.len()), (n, n));
    let applied: Vec<OrderId> = consumed.applied.iter().map(|e| e.order_id).collect();
    assert_eq!(applied, ids, "applied in the order placed");
    for id in ids {
        assert_eq!(store.get_order(id).await.unwrap().unwrap().status, Status::Reserved);
    }
    assert_eq!(store.list_stock().await.unwrap()[0].available, 1000 - n as i64);
    let again =
        store.consume("inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 512, RetryPolicy::default()).await.unwrap();
    assert_eq!(again.taken, 0, "every message was settled");
}

fn order() -> PlaceOrder {
    let items = vec![LineItem { sku: Sku::parse("tea").unwrap(), quantity: Quantity::parse(1).unwrap() }];
    let order = NewOrder::new(CustomerId::parse("c1").unwrap(), items).unwrap();
    PlaceOrder { id: OrderId::new(), order, idempotency: None, trace: None }
}

/// The ids of every queued message, in order.
pub(super) fn message_ids(conn: &Connection) -> Vec<i64> {
    conn.prepare("SELECT id FROM messages ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A consumer deletes the messages it settled by id, so no id is given
/// out twice: not after the queue drains, not by another process's
/// writer, and not after a migration from the schema that used
/// AUTOINCREMENT.
#[tokio::test]
async fn message_ids_are_never_given_out_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ids.db");
    // A version 2 database whose newest messages were consumed: SQLite's
    // own counter is ahead of every id left.
    let v2 = Connection::open(&path).unwrap();
    v2.execute_batch(&format!("{} {} PRAGMA user_version = 2;", MIGRATIONS[0], MIGRATIONS[1])).unwrap();
    for _ in 0..3 {
        v2.execute("INSERT INTO messages (queue, routing_key, body) VALUES ('order-events', 'order.placed', '{}')", [])
            .unwrap();
    }
    v2.execute("DELETE FROM messages WHERE id > 1", []).unwrap();
    drop(v2);

    let name = path.to_string_lossy();
    let store = SqliteStore::open(&name).await.unwrap();
    let raw = Connection::open(&path).unwrap();
    assert_eq!(message_ids(&raw), [1], "a queued message keeps its id");
    store.place_order(order()).await.unwrap();
    assert_eq!(message_ids(&raw), [1, 4]);

    // The queue drains; the next id is still a new one.
    raw.execute("DELETE FROM messages", []).unwrap();
    store.place_order(order()).await.unwrap();
    assert_eq!(message_ids(&raw), [5]);

    // A second store on the same file, as another process would open it.
    let other = SqliteStore::open(&name).await.unwrap();
    raw.execute("DELETE FROM messages", []).unwrap();
    other.place_order(order()).await.unwrap();
    store.place_order(order()).await.unwrap();
    assert_eq!(message_ids(&raw), [6, 7]);
}

/// Schema version 4 moves each queue's messages to a table of its own,
/// with their delivery state; messages of a queue no consumer reads
/// become dead letters. The `messages` view still takes hand-written
/// messages, with new ids, and refuses a queue that does not exist.
#[tokio::test]
async fn a_version_3_queue_is_split_into_a_table_per_queue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v3.db");
    let v3 = Connection::open(&path).unwrap();
    v3.execute_batch(&format!("{} {} {} PRAGMA user_version = 3;", MIGRATIONS[0], MIGRATIONS[1], MIGRATIONS[2]))
        .unwrap();
    v3.execute_batch(
        "INSERT INTO messages (id, queue, routing_key, body, attempts, available_at, last_error) VALUES
             (3, 'inventory-events', 'inventory.reserved', '{\"a\":1}', 2, 99, 'order not found'),
             (5, 'order-events', 'order.placed', '{\"b\":2}', 0, 0, NULL),
             (7, 'audit', 'order.placed', '{\"c\":3}', 1, 0, NULL);
         UPDATE message_ids SET last = 9;",
    )
    .unwrap();
    drop(v3);

    let store = SqliteStore::open(&path.to_string_lossy()).await.unwrap();
    let raw = Connection::open(&path).unwrap();
    let rows = |sql: &str| -> Vec<String> {
        raw.prepare(sql).unwrap().query_map([], |r| r.get::<_, String>(0)).unwrap().collect::<Result<_, _>>().unwrap()
    };
    assert_eq!(
        rows("SELECT id || ' ' || routing_key || ' ' || attempts || ' ' || available_at || ' ' || coalesce(last_error, '-') FROM queue_inventory_events"),
        ["3 inventory.reserved 2 99 order not found"]
    );
    assert_eq!(rows("SELECT id || ' ' || body FROM queue_order_events"), ["5 {\"b\":2}"]);
    assert_eq!(
        rows("SELECT queue || ' ' || body || ' ' || error FROM dead_letters"),
        ["audit {\"c\":3} no such queue"]
    );
    assert_eq!(rows("SELECT id || ' ' || queue FROM messages ORDER BY id"), ["3 inventory-events", "5 order-events"]);
    assert_eq!(rows("SELECT name FROM sqlite_master WHERE name = 'messages_by_queue'"), Vec::<String>::new());

    // A message written by hand gets an id after every one given out,
    // and the writer's next one comes after it.
    raw.execute("INSERT INTO messages (queue, routing_key, body) VALUES ('order-events', 'order.placed', '{}')", [])
        .unwrap();
    assert_eq!(rows("SELECT CAST(id AS TEXT) FROM queue_order_events ORDER BY id"), ["5", "10"]);
    store.place_order(order()).await.unwrap();
    assert_eq!(rows("SELECT CAST(id AS TEXT) FROM queue_order_events ORDER BY id"), ["5", "10", "11"]);
    let refused = raw.execute("INSERT INTO messages (queue, routing_key, body) VALUES ('audit', 'x', '{}')", []);
    assert!(refused.unwrap_err().to_string().contains("no such queue"));

    // Updates and deletes through the view reach the queue's table.
    raw.execute("UPDATE messages SET attempts = 4 WHERE id = 3", []).unwrap();
    raw.execute("DELETE FROM messages WHERE id = 5", []).unwrap();
    assert_eq!(rows("SELECT id || ' ' || attempts FROM messages ORDER BY id"), ["3 4", "10 0", "11 0"]);
    assert_current(&path);
}

/// Schema version 9 lists the messages already queued with their orders,
/// by the order their body names, and marks the others unnamed: the trail
/// finds each as before, and consumers still settle them.
#[tokio::test]
async fn a_version_8_queue_is_listed_with_its_orders() {
    use crate::domain::{Event, EventType};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v8.db");
    let v8 = Connection::open(&path).unwrap();
    v8.execute_batch(&format!("{} PRAGMA user_version = 8;", MIGRATIONS[..8].join("\n"))).unwrap();
    let (a, b, gone) = (OrderId::new(), OrderId::new(), OrderId::new());
    let body = |order: OrderId| {
        Event::new(EventType::OrderPlaced, order, CustomerId::parse("c1").unwrap(), vec![], None).to_json()
    };
    for id in [a, b] {
        v8.execute(
            "INSERT INTO orders (id, customer_id, status, items, created_at, updated_at) VALUES (?1, 'c1', 'placed', '[]', 1, 1)",
            [id.to_string()],
        )
        .unwrap();
    }
    let pack = format!("[{},{}]", body(a), body(b));
    for (queue, body) in [
        ("order-events", body(a)),
        ("inventory-events", pack),
        ("order-events", body(b).replace(&b.to_string(), &b.to_string().to_uppercase())),
        ("inventory-events", format!("not an event, about {a}")),
        ("order-events", body(gone)),
    ] {
        v8.execute("INSERT INTO messages (queue, routing_key, body) VALUES (?1, 'by-hand', ?2)", [queue, &body])
            .unwrap();
    }
    drop(v8);

    let store = SqliteStore::open(&path.to_string_lossy()).await.unwrap();
    for (id, waiting) in [(a, vec![1, 2, 4]), (b, vec![2, 3])] {
        let trail = store.order_trail(id).await.unwrap();
        assert_eq!(trail.waiting.iter().map(|m| m.id).collect::<Vec<_>>(), waiting);
    }
    let raw = Connection::open(&path).unwrap();
    let text = |sql: &str| raw.query_row(sql, [], |r| r.get::<_, String>(0)).unwrap();
    assert_eq!(text(&format!("SELECT messages FROM orders WHERE id = '{a}'")), "1");
    assert_eq!(text(&format!("SELECT messages FROM orders WHERE id = '{b}'")), "3");
    assert_eq!(text("SELECT group_concat(id, ' ') FROM unnamed_messages"), "2 4 5");

    // Unnamed messages the notifier settles (the pack and the text are
    // poison; a hand-written outcome is a duplicate) leave the list.
    let outcome = Event::new(EventType::InventoryReserved, a, CustomerId::parse("c1").unwrap(), vec![], None);
    raw.execute(
        "INSERT INTO messages (queue, routing_key, body) VALUES ('inventory-events', 'by-hand', ?1)",
        [outcome.to_json()],
    )
    .unwrap();
    let notify = crate::store::Effect::Notify { webhooks: false };
    crate::store::contract::drain(&store, "notifier", crate::messaging::QUEUE_INVENTORY_EVENTS, notify, 10).await;
    assert_eq!(text("SELECT group_concat(id, ' ') FROM unnamed_messages"), "5");
    assert_current(&path);
}

#[tokio::test]
async fn stores_opened_together_on_a_new_database_all_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    let name = path.to_string_lossy();
    let opened = futures::future::join_all((0..4).map(|_| SqliteStore::open(&name))).await;
    for result in opened {
        if let Err(e) = result {
            panic!("a store did not open: {e:#}");
        }
    }
    assert_current(&path);
}

/// The database is at the latest version, with the latest indexes.
fn assert_current(path: &std::path::Path) {
    let conn = Connection::open(path).unwrap();
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, MIGRATIONS.len() as i64);
    let indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'orders' AND sql IS NOT NULL ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        indexes,
        [
            "orders_by_customer",
            "orders_cancelled",
            "orders_completed",
            "orders_open",
            "orders_rejected",
            "orders_shipped"
        ]
    );
}
