//! The distributed mode: PostgreSQL, with the database as the queue or with
//! RabbitMQ, every role its own process; and a SQLite file with RabbitMQ.
//! Skipped when the servers are absent (a failure under
//! ORDERFLOW_REQUIRE_SERVICES=1).

use crate::helpers::{eventually, order, Env, Server};
use crate::scenarios::SETTLE;
use serde_json::json;

/// API, inventory and notifier as separate processes.
async fn cluster(env: &Env) -> (Server, Vec<Server>) {
    let api = Server::start(env, "api", &[]).await;
    let workers = vec![Server::start(env, "inventory", &[]).await, Server::start(env, "notifier", &[]).await];
    (api, workers)
}

macro_rules! in_every_distributed_mode {
    ($($name:ident),*) => {
        mod postgres_db { $(
            #[tokio::test]
            async fn $name() {
                let Some(env) = crate::helpers::Env::postgres(false) else { return };
                let (api, _workers) = super::cluster(&env).await;
                crate::scenarios::$name(&env, &api.client).await;
            }
        )* }
        mod postgres_rabbitmq { $(
            #[tokio::test]
            async fn $name() {
                let Some(env) = crate::helpers::Env::postgres(true) else { return };
                let (api, _workers) = super::cluster(&env).await;
                crate::scenarios::$name(&env, &api.client).await;
            }
        )* }
    };
}

in_every_distributed_mode!(lifecycle, no_oversell, idempotency, paging);

/// A SQLite file with RabbitMQ as the broker, in one process: the outbox is
/// relayed to RabbitMQ and the services consume from there.
mod sqlite_rabbitmq {
    use crate::helpers::{Env, Server};

    #[tokio::test]
    async fn lifecycle() {
        let Some(env) = Env::sqlite_rabbitmq() else { return };
        let server = Server::start(&env, "run", &[]).await;
        crate::scenarios::lifecycle(&env, &server.client).await;
        assert!(server.log().contains("relaying the outbox"), "the relay ran");
    }

    #[tokio::test]
    async fn no_oversell() {
        let Some(env) = Env::sqlite_rabbitmq() else { return };
        let server = Server::start(&env, "run", &[]).await;
        crate::scenarios::no_oversell(&env, &server.client).await;
    }
}

/// Two inventory processes compete for the same queue: every order is
/// reserved once and stock is conserved.
async fn competing_workers(rabbitmq: bool) {
    let Some(env) = Env::postgres(rabbitmq) else { return };
    env.set_stock("gizmo", 250);
    let api = Server::start(&env, "api", &[]).await;
    let _workers = [
        Server::start(&env, "inventory", &["--batch-size", "16"]).await,
        Server::start(&env, "inventory", &["--batch-size", "16"]).await,
        Server::start(&env, "notifier", &[]).await,
    ];
    let mut ids = Vec::new();
    for chunk in 0..10 {
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let c = api.client.clone();
                tokio::spawn(async move { c.place(&order(&format!("c{chunk}-{i}"), &[("gizmo", 1)])).await })
            })
            .collect();
        for t in tasks {
            ids.push(t.await.unwrap());
        }
    }
    let done = api.client.wait_terminal(&ids, SETTLE).await;
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

/// The same OrderPlaced event delivered twice reserves once; a poison message
/// lands in the dead-letter queue while the orders around it finish. Both go
/// in through the `messages` table: the queue itself with the `db` broker, the
/// outbox the relay publishes with RabbitMQ.
async fn duplicates_and_poison(rabbitmq: bool) {
    let Some(env) = Env::postgres(rabbitmq) else { return };
    env.set_stock("lamp", 10);
    let (api, _workers) = cluster(&env).await;
    let first = api.client.place(&order("dup", &[("lamp", 4)])).await;
    api.client.wait_terminal(std::slice::from_ref(&first), SETTLE).await;
    let event_id = env.sql("SELECT event_id FROM inbox WHERE consumer = 'inventory'");
    let again = order_placed(&event_id, &first, "dup", ("lamp", 4));
    for body in [again, "not json".to_owned()] {
        env.sql(&format!(
            "INSERT INTO messages (queue, routing_key, body) VALUES ('order-events', 'order.placed', '{}')",
            body.replace('\'', "''")
        ));
    }
    let second = api.client.place(&order("dup", &[("lamp", 4)])).await;
    let done = api.client.wait_terminal(&[first, second], SETTLE).await;
    assert!(done.iter().all(|o| o["status"] == "completed"), "{done:?}");
    eventually(SETTLE, "the poison message in the dead-letter queue", || async {
        env.dead_letters().iter().any(|l| l["body"] == "not json")
    })
    .await;
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
async fn a_failing_event_beside_a_good_one(rabbitmq: bool) {
    let Some(env) = Env::postgres(rabbitmq) else { return };
    env.set_stock("kettle", 10);
    let (api, _workers) = cluster(&env).await;
    let first = api.client.place(&order("pack", &[("kettle", 3)])).await;
    api.client.wait_terminal(std::slice::from_ref(&first), SETTLE).await;
    let applied = env.sql("SELECT event_id FROM inbox WHERE consumer = 'inventory'");
    let missing = uuid::Uuid::now_v7().to_string();
    let event = |event_id: &str, order_id: &str| order_placed(event_id, order_id, "pack", ("kettle", 3));
    env.sql(&format!(
        "INSERT INTO messages (queue, routing_key, body)
         VALUES ('order-events', 'order.placed', '{}'), ('order-events', 'order.placed', '{}')",
        event(&applied, &first),
        event(&uuid::Uuid::now_v7().to_string(), &missing)
    ));
    eventually(SETTLE, "the missing order's event in the dead-letter queue", || async {
        env.dead_letters().iter().any(|l| l["body"].as_str().is_some_and(|b| b.contains(&missing)))
    })
    .await;
    let letters = env.dead_letters();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let body: serde_json::Value = serde_json::from_str(letters[0]["body"].as_str().unwrap()).unwrap();
    if rabbitmq {
        let carried: Vec<&str> =
            body.as_array().expect("a pack").iter().map(|e| e["order_id"].as_str().unwrap()).collect();
        assert_eq!(carried, [first.as_str(), missing.as_str()], "one message carried both events");
        // Retried to the limit, not refused as unreadable.
        assert_eq!(letters[0]["error"], "delivery_limit", "{letters:?}");
    } else {
        assert_eq!(body["order_id"], missing.as_str());
        assert_eq!(letters[0]["error"], format!("order {missing} not found"), "{letters:?}");
    }
    let second = api.client.place(&order("pack", &[("kettle", 3)])).await;
    let done = api.client.wait_terminal(&[second], SETTLE).await;
    assert_eq!(done[0]["status"], "completed");
    assert_eq!(env.stock("kettle"), (4, 6), "the repeat reserved nothing");
}

#[tokio::test]
async fn a_failing_event_beside_a_good_one_postgres_db() {
    a_failing_event_beside_a_good_one(false).await;
}

#[tokio::test]
async fn a_failing_event_beside_a_good_one_postgres_rabbitmq() {
    a_failing_event_beside_a_good_one(true).await;
}

#[tokio::test]
async fn competing_workers_postgres_db() {
    competing_workers(false).await;
}

#[tokio::test]
async fn competing_workers_postgres_rabbitmq() {
    competing_workers(true).await;
}

#[tokio::test]
async fn duplicates_and_poison_postgres_db() {
    duplicates_and_poison(false).await;
}

#[tokio::test]
async fn duplicates_and_poison_postgres_rabbitmq() {
    duplicates_and_poison(true).await;
}
