//! What every mode promises end to end, whatever its store and broker: one
//! set of tests, run by `in_every_mode!` on each combination (SQLite and
//! PostgreSQL, each with its own queue, with RabbitMQ and with Redis Streams;
//! PostgreSQL's with every role its own process). A test speaks to the API, the operator
//! commands and SQL both dialects share; where a broker does something its
//! own way (RabbitMQ carries a pack of events in one message), the test
//! says so. What the stores promise below the API is `store::contract`.

use crate::helpers::{eventually, order, Broker, Deployment, Env, Mode, SETTLE};
use crate::retention::old_dead_letters_whose_effect_was_applied_are_not_applied_twice;
use serde_json::{json, Value};
use std::time::Duration;

macro_rules! in_every_mode {
    ($($name:ident),* $(,)?) => {
        in_every_mode!(@mode sqlite_db, SqliteDb; $($name),*);
        in_every_mode!(@mode sqlite_rabbitmq, SqliteRabbitmq; $($name),*);
        in_every_mode!(@mode postgres_db, PostgresDb; $($name),*);
        in_every_mode!(@mode postgres_rabbitmq, PostgresRabbitmq; $($name),*);
        in_every_mode!(@mode sqlite_redis, SqliteRedis; $($name),*);
        in_every_mode!(@mode postgres_redis, PostgresRedis; $($name),*);
    };
    (@mode $mode:ident, $variant:ident; $($name:ident),*) => {
        mod $mode { $(
            #[tokio::test]
            async fn $name() {
                super::$name(crate::helpers::Mode::$variant).await;
            }
        )* }
    };
}

in_every_mode!(
    lifecycle,
    no_oversell,
    idempotency,
    paging,
    competing_workers,
    duplicates_and_poison,
    a_failing_event_beside_a_good_one,
    dead_letters_are_replayed,
    old_dead_letters_whose_effect_was_applied_are_not_applied_twice,
    live_status,
);

fn statuses(order: &Value) -> Vec<String> {
    order["history"].as_array().expect("history").iter().map(|t| t["status"].as_str().unwrap().to_owned()).collect()
}

/// An order goes placed → reserved → completed, one with an unknown SKU is
/// rejected without taking any stock, and the compatible routes work.
/// Returns the orders, terminal, in the order they were placed.
async fn lifecycle(mode: Mode) {
    let Some((env, app)) = mode.start().await else { return };
    let api = app.client();
    env.set_stock("burger", 10);
    env.set_stock("fries", 5);
    let ok = api.place(&order("alice", &[("burger", 2), ("fries", 1)])).await;
    let unknown = api.place(&order("alice", &[("burger", 1), ("caviar", 1)])).await;
    let short = api.post("/order", &serde_json::json!({"user_id": "bob", "item": "fries", "quantity": 9}), None).await;
    assert_eq!(short.status(), 202);
    let short: Value = short.json().await.unwrap();
    assert_eq!(short["status"], "accepted");
    let short_id = short["order_id"].as_str().unwrap().to_owned();
    let empty = api.http.post(api.url("/order/place")).send().await.unwrap();
    assert_eq!(empty.status(), 202);
    let empty_id = empty.json::<Value>().await.unwrap()["order_id"].as_str().unwrap().to_owned();

    let done = api.wait_terminal(&[ok.clone(), unknown.clone(), short_id.clone(), empty_id.clone()], SETTLE).await;
    assert_eq!(done[0]["status"], "completed");
    assert_eq!(statuses(&done[0]), ["placed", "reserved", "completed"]);
    assert_eq!(done[0]["items"][0]["sku"], "burger");
    assert_eq!(done[1]["status"], "rejected");
    assert_eq!(done[1]["reason"], "unknown_sku:caviar");
    assert_eq!(statuses(&done[1]), ["placed", "rejected"]);
    assert_eq!(done[2]["status"], "rejected");
    assert_eq!(done[2]["reason"], "out_of_stock:fries");
    assert_eq!(done[3]["status"], "completed", "an order with no items reserves trivially");

    // Only the completed order took stock.
    assert_eq!(env.stock("burger"), (8, 2));
    assert_eq!(env.stock("fries"), (4, 1));
    let (status, compat) = api.get(&format!("/order/get/{ok}")).await;
    assert_eq!(status, 200);
    assert_eq!(compat, serde_json::json!({"order_id": ok, "status": "completed"}));
    notified(&app, &done).await;
    // The order's trail holds the notification about it, and nothing waits.
    let (status, trail) = api.get(&format!("/orders/{ok}/trail")).await;
    assert_eq!(status, 200, "{trail}");
    assert_eq!(trail["notifications"][0]["kind"], "confirmed", "{trail}");
    assert_eq!(api.get(&format!("/orders/{}/trail", uuid::Uuid::now_v7())).await.0, 404);
    eventually(SETTLE, "every event delivered: no message left in the queue or the outbox", || async {
        env.sql("SELECT count(*) FROM messages") == "0"
    })
    .await;
}

/// The notifier logs one line per outcome, once its commit is durable.
async fn notified(app: &Deployment, orders: &[Value]) {
    let deadline = std::time::Instant::now() + SETTLE;
    let lines = loop {
        let log = app.notifier_log();
        let lines: Vec<String> = log.lines().filter(|l| l.contains(" notification ")).map(str::to_owned).collect();
        if lines.len() >= orders.len() || std::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(lines.len(), orders.len(), "one notification line per order:\n{}", lines.join("\n"));
    for order in orders {
        let id = order["order_id"].as_str().unwrap();
        let line = lines.iter().find(|l| l.contains(&format!("order_id={id} "))).expect("a line for every order");
        assert!(line.contains(&format!("customer_id={}", order["customer_id"])), "{line}");
        match order["status"].as_str() {
            Some("completed") => assert!(line.contains("kind=confirmed") && !line.contains("reason="), "{line}"),
            _ => assert!(line.contains(&format!("kind=rejected reason={}", order["reason"])), "{line}"),
        }
    }
}

/// 300 concurrent orders for 100 in stock: exactly 100 reserved, never more.
async fn no_oversell(mode: Mode) {
    let Some((env, app)) = mode.start().await else { return };
    let api = app.client();
    env.set_stock("widget", 100);
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move { api.place(&order(&format!("buyer{}", i % 7), &[("widget", 1)])).await })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    let done = api.wait_terminal(&ids, SETTLE).await;
    let completed = done.iter().filter(|o| o["status"] == "completed").count();
    let rejected: Vec<_> = done.iter().filter(|o| o["status"] == "rejected").collect();
    assert_eq!(completed, 100);
    assert_eq!(rejected.len(), 200);
    assert!(rejected.iter().all(|o| o["reason"] == "out_of_stock:widget"));
    assert_eq!(env.stock("widget"), (0, 100));
}

/// A repeated Idempotency-Key returns the first order; with another body it
/// is refused; concurrent repeats make one order.
async fn idempotency(mode: Mode) {
    let Some((env, app)) = mode.start().await else { return };
    let api = app.client();
    env.set_stock("tea", 1000);
    let body = order("idem", &[("tea", 1)]);
    let first = api.post("/orders", &body, Some("key-1")).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let again = api.post("/orders", &body, Some("key-1")).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["order_id"], first["order_id"]);

    let other = api.post("/orders", &order("idem", &[("tea", 2)]), Some("key-1")).await;
    assert_eq!(other.status(), 409);
    let other: Value = other.json().await.unwrap();
    assert_eq!(other["error"]["code"], "idempotency_key_reused");

    let racers: Vec<_> = (0..20)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move {
                let resp = api.post("/orders", &order("idem", &[("tea", 3)]), Some("key-race")).await;
                assert_eq!(resp.status(), 202);
                resp.json::<Value>().await.unwrap()["order_id"].as_str().unwrap().to_owned()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for r in racers {
        ids.push(r.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "concurrent requests with one key made one order");
    assert_eq!(api.orders_of("idem").await.len(), 2, "one order per key, nothing for the refused body");
}

/// Paging newest first returns every order once, and filters narrow it.
async fn paging(mode: Mode) {
    let Some((env, app)) = mode.start().await else { return };
    let api = app.client();
    env.set_stock("pen", 1_000);
    let mut placed = Vec::new();
    for i in 0..45 {
        placed.push(api.place(&order(if i % 3 == 0 { "pager-a" } else { "pager-b" }, &[("pen", 1)])).await);
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = api.get(&format!("/orders?limit=7&cursor={cursor}")).await;
        assert_eq!(status, 200);
        let orders = page["orders"].as_array().unwrap();
        assert!(orders.len() <= 7);
        seen.extend(orders.iter().map(|o| o["order_id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    let mut newest_first = placed.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first, "every order once, newest first");
    let a = api.orders_of("pager-a").await;
    assert_eq!(a.len(), 15);
    assert!(a.iter().all(|o| o["customer_id"] == "pager-a"));
    api.wait_terminal(&placed, SETTLE).await;
    let (_, done) = api.get("/orders?status=completed&customer_id=pager-b&limit=1000").await;
    assert_eq!(done["orders"].as_array().unwrap().len(), 30);
    let (_, none) = api.get("/orders?status=placed&customer_id=pager-b").await;
    assert_eq!(none["orders"].as_array().unwrap().len(), 0);

    // By status alone, page by page, and counted in the metrics.
    let mut rejected = Vec::new();
    for _ in 0..3 {
        rejected.push(api.place(&order("pager-c", &[("no-such-pen", 1)])).await);
    }
    api.wait_terminal(&rejected, SETTLE).await;
    rejected.reverse();
    let ids = |orders: Vec<Value>| -> Vec<String> {
        orders.iter().map(|o| o["order_id"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(ids(api.list("status=completed", 4).await), newest_first, "completed, newest first");
    assert_eq!(ids(api.list("status=rejected", 2).await), rejected, "rejected, newest first");
    for status in ["placed", "reserved"] {
        assert_eq!(api.list(&format!("status={status}"), 10).await.len(), 0, "{status}");
    }
    let metrics = api.http.get(api.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for (status, n) in [("placed", 0), ("reserved", 0), ("completed", 45), ("rejected", 3)] {
        let line = format!("orderflow_orders{{status=\"{status}\"}} {n}\n");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
}

/// Two inventory processes compete for the same queue: every order is
/// reserved once and stock is conserved.
async fn competing_workers(mode: Mode) {
    let Some((env, mut app)) = mode.start().await else { return };
    env.set_stock("gizmo", 250);
    app.add(&env, "inventory", &["--batch-size", "16"]).await;
    app.add(&env, "inventory", &["--batch-size", "16"]).await;
    let api = app.client();
    let mut ids = Vec::new();
    for chunk in 0..10 {
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let c = api.clone();
                tokio::spawn(async move { c.place(&order(&format!("c{chunk}-{i}"), &[("gizmo", 1)])).await })
            })
            .collect();
        for t in tasks {
            ids.push(t.await.unwrap());
        }
    }
    let done = api.wait_terminal(&ids, SETTLE).await;
    let completed = done.iter().filter(|o| o["status"] == "completed").count();
    assert_eq!(completed, 250);
    assert_eq!(env.stock("gizmo"), (0, 250));
    let reservations: i64 = env.sql("SELECT count(*) FROM inbox WHERE consumer = 'inventory'").parse().unwrap();
    assert_eq!(reservations, 500, "each event applied once");
}

/// An `OrderPlaced` event written by hand, as JSON.
fn order_placed(event_id: &str, order_id: &str, customer: &str, (sku, quantity): (&str, i64)) -> String {
    json!({
        "event_id": event_id, "event_type": "OrderPlaced", "order_id": order_id,
        "timestamp": "2026-01-01T00:00:00Z", "customer_id": customer, "items": [{"sku": sku, "quantity": quantity}]
    })
    .to_string()
}

/// Queues messages by hand, in one statement: into the queue itself with
/// the `db` broker, into the outbox the relay publishes with RabbitMQ.
fn queue_by_hand(env: &Env, bodies: &[&str]) {
    let rows: Vec<String> =
        bodies.iter().map(|body| format!("('order-events', 'order.placed', '{}')", body.replace('\'', "''"))).collect();
    env.sql(&format!("INSERT INTO messages (queue, routing_key, body) VALUES {}", rows.join(", ")));
}

/// The same OrderPlaced event delivered twice reserves once; a poison message
/// lands in the dead-letter queue while the orders around it finish, and
/// replayed, lands there again.
async fn duplicates_and_poison(mode: Mode) {
    let Some((env, app)) = mode.start().await else { return };
    let api = app.client();
    env.set_stock("lamp", 10);
    let first = api.place(&order("dup", &[("lamp", 4)])).await;
    api.wait_terminal(std::slice::from_ref(&first), SETTLE).await;
    let event_id = env.sql("SELECT event_id FROM inbox WHERE consumer = 'inventory'");
    queue_by_hand(&env, &[&order_placed(&event_id, &first, "dup", ("lamp", 4))]);
    queue_by_hand(&env, &["not json"]);
    let second = api.place(&order("dup", &[("lamp", 4)])).await;
    let done = api.wait_terminal(&[first, second], SETTLE).await;
    assert!(done.iter().all(|o| o["status"] == "completed"), "{done:?}");
    eventually(SETTLE, "the poison message in the dead-letter queue", || async {
        env.dead_letters().iter().any(|l| l["body"] == "not json")
    })
    .await;
    let poison = env.dead_letters().into_iter().find(|l| l["body"] == "not json").unwrap();
    assert_eq!(poison["attempts"], 1, "dead-lettered at once: {poison}");
    // RabbitMQ records why a message was dead-lettered, not the consumer's words.
    let why = if mode.broker() == Broker::Rabbitmq { "rejected" } else { "invalid event" };
    assert!(poison["error"].as_str().unwrap().contains(why), "{poison}");
    // Replayed, it goes back to its queue and, still poison, to the DLQ again.
    let replayed = env.cli(&["dlq", "replay", "--all"]);
    assert!(replayed.contains("replayed 1 message"), "{replayed}");
    eventually(SETTLE, "the replayed poison message back in the dead-letter queue", || async {
        env.dead_letters().iter().filter(|l| l["body"] == "not json").count() == 1
    })
    .await;
    eventually(SETTLE, "the duplicate delivered and skipped", || async {
        env.sql("SELECT count(*) FROM messages") == "0"
    })
    .await;
    assert_eq!(env.stock("lamp"), (2, 8), "the duplicate reserved nothing");
    assert_eq!(env.sql("SELECT count(*) FROM inbox WHERE consumer = 'inventory'"), "2");
}

/// Two events written in one statement, so the RabbitMQ relay carries them in
/// one message: a repeat of an applied event, and one for an order that does
/// not exist. The second is retried up to the limit, then dead-lettered (with
/// RabbitMQ, its whole message: the repeat with it); the repeat reserves
/// nothing, and orders placed afterwards finish.
async fn a_failing_event_beside_a_good_one(mode: Mode) {
    let Some((env, app)) = mode.start().await else { return };
    let api = app.client();
    env.set_stock("kettle", 10);
    let first = api.place(&order("pack", &[("kettle", 3)])).await;
    api.wait_terminal(std::slice::from_ref(&first), SETTLE).await;
    let applied = env.sql("SELECT event_id FROM inbox WHERE consumer = 'inventory'");
    let missing = uuid::Uuid::now_v7().to_string();
    let event = |event_id: &str, order_id: &str| order_placed(event_id, order_id, "pack", ("kettle", 3));
    queue_by_hand(&env, &[&event(&applied, &first), &event(&uuid::Uuid::now_v7().to_string(), &missing)]);
    eventually(SETTLE, "the missing order's event in the dead-letter queue", || async {
        env.dead_letters().iter().any(|l| l["body"].as_str().is_some_and(|b| b.contains(&missing)))
    })
    .await;
    let letters = env.dead_letters();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let body: Value = serde_json::from_str(letters[0]["body"].as_str().unwrap()).unwrap();
    if mode.broker() == Broker::Rabbitmq {
        let carried: Vec<&str> =
            body.as_array().expect("a pack").iter().map(|e| e["order_id"].as_str().unwrap()).collect();
        assert_eq!(carried, [first.as_str(), missing.as_str()], "one message carried both events");
    } else {
        assert_eq!(body["order_id"], missing.as_str(), "the failing event alone");
    }
    match mode.broker() {
        Broker::Db => assert_eq!(letters[0]["error"], format!("order {missing} not found"), "{letters:?}"),
        // Retried to the limit, not refused as unreadable.
        Broker::Rabbitmq | Broker::Redis => assert_eq!(letters[0]["error"], "delivery_limit", "{letters:?}"),
    }
    if mode.broker() != Broker::Rabbitmq {
        assert_eq!(letters[0]["attempts"], 3, "retried up to --max-attempts: {letters:?}");
    }
    let second = api.place(&order("pack", &[("kettle", 3)])).await;
    let done = api.wait_terminal(&[second], SETTLE).await;
    assert_eq!(done[0]["status"], "completed");
    assert_eq!(env.stock("kettle"), (4, 6), "the repeat reserved nothing");
}

/// An event for an order that does not exist (yet) is dead-lettered after
/// its retries; once the order arrives (say, restored from a backup),
/// `dlq replay` sends it back and the order completes.
async fn dead_letters_are_replayed(mode: Mode) {
    let Some((env, app)) = mode.start().await else { return };
    let api = app.client();
    env.set_stock("burger", 100);
    let missing = uuid::Uuid::now_v7().to_string();
    let event = order_placed(&uuid::Uuid::now_v7().to_string(), &missing, "dlq", ("burger", 1));
    queue_by_hand(&env, &[&event]);
    eventually(SETTLE, "the orphan in the dead-letter queue", || async { env.dead_letters().len() == 1 }).await;

    env.sql(&format!(
        "INSERT INTO orders (id, customer_id, status, items, created_at, updated_at)
         VALUES ('{missing}', 'dlq', 'placed', '[{{\"sku\":\"burger\",\"quantity\":1}}]', 0, 0)"
    ));
    let replayed = env.cli(&["dlq", "replay", "--all"]);
    assert!(replayed.contains("replayed 1"), "{replayed}");
    let done = api.wait_terminal(&[missing], SETTLE).await;
    assert_eq!(done[0]["status"], "completed");
    eventually(SETTLE, "the dead-letter queue empty", || async { env.dead_letters().is_empty() }).await;
    assert_eq!(env.stock("burger"), (99, 1));
}

/// An order's stream shows each of its statuses once, numbered, and ends
/// after the last; `Last-Event-ID` resumes after the one named.
async fn live_status(mode: Mode) {
    let Some((env, app)) = mode.start().await else { return };
    let api = app.client();
    env.set_stock("tea", 5);
    let id = api.place(&order("watcher", &[("tea", 1)])).await;
    let seen = api.events(&id, None).await.rest(SETTLE).await;
    let statuses: Vec<&str> = seen.iter().map(|e| e.data["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["placed", "reserved", "completed"]);
    assert_eq!(seen.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["1", "2", "3"]);
    let resumed = api.events(&id, Some("1")).await.rest(SETTLE).await;
    assert_eq!(resumed.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["2", "3"]);
    assert!(api.events(&id, Some("3")).await.rest(SETTLE).await.is_empty(), "nothing after the last");

    let rejected = api.place(&order("watcher", &[("caviar", 1)])).await;
    let seen = api.events(&rejected, None).await.rest(SETTLE).await;
    assert_eq!(seen.last().unwrap().data["status"], "rejected");
    assert_eq!(seen.last().unwrap().data["reason"], "unknown_sku:caviar");

    let (status, body) = api.get(&format!("/orders/{}/events", uuid::Uuid::now_v7())).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    let bad = api.http.get(api.url(&format!("/orders/{id}/events"))).header("Last-Event-ID", "x").send().await.unwrap();
    assert_eq!(bad.status(), 400);
}
