//! Retention: what outlives its window is pruned, an expired idempotency key
//! places a new order, a window a redelivery could outlast is refused at
//! start, and a dead letter older than the inbox window is replayed only
//! when its order shows the effect still to apply.

use crate::helpers::{eventually, order, Env, Mode, Server, BIN, SETTLE};
use serde_json::json;
use std::time::Duration;

/// A UUIDv7 made `days` ago: an event id older than the inbox window.
fn event_id_days_ago(days: u64) -> String {
    let at = std::time::SystemTime::now() - Duration::from_secs(days * 86_400);
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap();
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, since.as_secs(), since.subsec_nanos());
    uuid::Uuid::new_v7(ts).to_string()
}

fn event(event_id: &str, event_type: &str, order_id: &str) -> String {
    json!({
        "event_id": event_id, "event_type": event_type, "order_id": order_id,
        "timestamp": "2026-01-01T00:00:00Z", "customer_id": "old", "items": [{"sku": "lamp", "quantity": 2}]
    })
    .to_string()
}

/// Two events a month old, dead-lettered (their order was missing), whose
/// order then turns up completed, as when the events were applied from
/// another copy whose inbox entries have long been pruned: replaying them
/// would reserve the stock again and tell the customer twice. Both replays
/// skip them, say why, and keep them; the stock and the order stay as they were.
pub async fn old_dead_letters_whose_effect_was_applied_are_not_applied_twice(mode: Mode) {
    let Some((env, app)) = mode.start().await else { return };
    env.set_stock("lamp", 10);
    let order_id = uuid::Uuid::now_v7().to_string();
    let placed = event(&event_id_days_ago(30), "OrderPlaced", &order_id);
    let reserved = event(&event_id_days_ago(30), "InventoryReserved", &order_id);
    env.sql(&format!(
        "INSERT INTO messages (queue, routing_key, body) VALUES ('order-events', 'order.placed', '{placed}'),
         ('inventory-events', 'inventory.reserved', '{reserved}')"
    ));
    eventually(SETTLE, "both events in the dead-letter queue", || async { env.dead_letters().len() == 2 }).await;

    env.sql(&format!(
        "INSERT INTO orders (id, customer_id, status, items, created_at, updated_at, reserved_at, completed_at)
         VALUES ('{order_id}', 'old', 'completed', '[{{\"sku\":\"lamp\",\"quantity\":2}}]', 0, 0, 0, 0)"
    ));
    let replayed = env.cli(&["dlq", "replay", "--all"]);
    assert!(replayed.contains("replayed 0 message"), "{replayed}");
    assert!(replayed.contains(&format!("order {order_id} is completed: its OrderPlaced was applied")), "{replayed}");
    assert!(replayed.contains("its InventoryReserved was applied"), "{replayed}");
    let by_id = env.dead_letters()[0]["id"].as_str().unwrap().to_owned();
    let one = env.cli(&["dlq", "replay", &by_id]);
    assert!(one.contains(&format!("skipped {by_id}: ")) && one.contains("replayed 0"), "{one}");

    // Nothing was sent back: a second reservation or notification would show by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.dead_letters().len(), 2, "skipped letters are kept");
    assert_eq!(env.stock("lamp"), (10, 0), "the stock is unchanged");
    assert_eq!(env.sql(&format!("SELECT count(*) FROM notifications WHERE order_id = '{order_id}'")), "0");
    let (_, view) = app.client().get(&format!("/orders/{order_id}")).await;
    assert_eq!(view["status"], "completed");
}

/// The operator's HTTP replay screens the same way: a letter whose order
/// shows it applied is reported as skipped, and stays.
#[tokio::test]
async fn the_http_replay_skips_an_applied_dead_letter() {
    let env = Env::embedded();
    let token = "retention-operator-token";
    let server = Server::start_with(&env, "run", &[], &[("ORDERFLOW_OPERATOR_TOKEN", token)]).await;
    env.set_stock("lamp", 10);
    let order_id = uuid::Uuid::now_v7().to_string();
    let placed = event(&event_id_days_ago(30), "OrderPlaced", &order_id);
    env.sql(&format!(
        "INSERT INTO messages (queue, routing_key, body) VALUES ('order-events', 'order.placed', '{placed}')"
    ));
    eventually(SETTLE, "the event in the dead-letter queue", || async { env.dead_letters().len() == 1 }).await;
    env.sql(&format!(
        "INSERT INTO orders (id, customer_id, status, items, created_at, updated_at, reserved_at)
         VALUES ('{order_id}', 'old', 'reserved', '[{{\"sku\":\"lamp\",\"quantity\":2}}]', 0, 0, 0)"
    ));
    let response = server
        .client
        .http
        .post(server.client.url("/admin/dead-letters/replay"))
        .bearer_auth(token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let outcome: serde_json::Value = response.json().await.unwrap();
    assert_eq!((outcome["matched"].as_u64(), outcome["replayed"].as_u64()), (Some(1), Some(0)), "{outcome}");
    let reason = outcome["skipped"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("is reserved: its OrderPlaced was applied"), "{outcome}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(env.stock("lamp"), (10, 0));
    assert_eq!(env.dead_letters().len(), 1);
}

/// With short windows the embedded mode prunes what outlived them, counts
/// it in `/metrics`, and a key past its time to live places a new order.
#[tokio::test]
async fn short_windows_prune_and_expire() {
    let env = Env::embedded();
    let windows = ["--idempotency-key-ttl", "2s", "--inbox-retention", "2s", "--prune-interval", "1s"];
    let server = Server::start(&env, "run", &windows).await;
    let api = &server.client;
    env.set_stock("tea", 10);
    let body = order("keyed", &[("tea", 1)]);
    let first = api.post("/orders", &body, Some("key-1")).await;
    assert_eq!(first.status(), 202);
    let first: serde_json::Value = first.json().await.unwrap();
    let id = first["order_id"].as_str().unwrap().to_owned();
    let again: serde_json::Value = api.post("/orders", &body, Some("key-1")).await.json().await.unwrap();
    assert_eq!(again["order_id"], id.as_str(), "within its time to live the key holds");
    api.wait_terminal(std::slice::from_ref(&id), SETTLE).await;
    assert_eq!(env.sql("SELECT count(*) FROM inbox"), "1");

    eventually(SETTLE, "the inbox, the notification and the key pruned", || async {
        env.sql(
            "SELECT (SELECT count(*) FROM inbox) + (SELECT count(*) FROM notifications)
                 + (SELECT count(*) FROM idempotency_keys)",
        ) == "0"
    })
    .await;
    let text = api.http.get(api.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for table in ["inbox", "notifications", "idempotency_keys"] {
        let line = format!("orderflow_pruned_rows_total{{table=\"{table}\"}} 1");
        assert!(text.contains(&line), "no {line} in:\n{text}");
    }
    let later: serde_json::Value = api.post("/orders", &body, Some("key-1")).await.json().await.unwrap();
    assert_ne!(later["order_id"], id.as_str(), "past its time to live the key is unknown");
    let (_, view) = api.get(&format!("/orders/{id}")).await;
    assert_eq!(view["status"], "completed", "the order itself is kept");
}

/// Old rows piled up in all three tables, several batches each (as after a
/// drained backlog): one pass takes them all, the tables in turn, and keeps
/// every row still inside its window.
#[tokio::test]
async fn a_pile_of_old_rows_goes_from_every_table_and_the_young_stay() {
    const OLD: usize = 2_500;
    let env = Env::embedded();
    env.set_stock("tea", 1);
    let many = format!("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {OLD}) SELECT");
    // Event ids that sort below any made since 1970, and keys made at 0 ms.
    let old_id = "'00000000-0000-7000-8000-' || printf('%012d', i)";
    env.sql(&format!("INSERT INTO inbox (consumer, event_id, processed_at) {many} 'inventory', {old_id}, 0 FROM n"));
    env.sql(&format!(
        "INSERT INTO notifications (event_id, order_id, consumer, kind, message, sent_at)
         {many} {old_id}, 'o', 'notifier', 'confirmed', 'm', 0 FROM n"
    ));
    env.sql(&format!(
        "INSERT INTO idempotency_keys (key, request_hash, order_id, created_at) {many} 'old-' || i, 'h', 'o', 0 FROM n"
    ));
    let young = uuid::Uuid::now_v7().to_string();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    env.sql(&format!("INSERT INTO inbox (consumer, event_id, processed_at) VALUES ('inventory', '{young}', {now})"));
    env.sql(&format!(
        "INSERT INTO notifications (event_id, order_id, consumer, kind, message, sent_at)
         VALUES ('{young}', 'o', 'notifier', 'confirmed', 'm', {now})"
    ));
    env.sql(&format!("INSERT INTO idempotency_keys VALUES ('young', 'h', 'o', {now})"));

    let windows = ["--idempotency-key-ttl", "1h", "--inbox-retention", "1h", "--prune-interval", "1h"];
    let server = Server::start(&env, "run", &windows).await;
    let counts = "SELECT (SELECT count(*) FROM inbox) || ' ' || (SELECT count(*) FROM notifications)
                  || ' ' || (SELECT count(*) FROM idempotency_keys)";
    // The first pass runs at start; the next would come an hour later.
    eventually(SETTLE, "every old row pruned", || async { env.sql(counts) == "1 1 1" }).await;
    assert_eq!(env.sql("SELECT event_id FROM inbox"), young);
    assert_eq!(env.sql("SELECT event_id FROM notifications"), young);
    assert_eq!(env.sql("SELECT key FROM idempotency_keys"), "young");
    let text = server.client.http.get(server.client.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for table in ["inbox", "notifications", "idempotency_keys"] {
        let line = format!("orderflow_pruned_rows_total{{table=\"{table}\"}} {OLD}");
        assert!(text.contains(&line), "no {line} in:\n{text}");
    }
}

/// A window shorter than the longest a redelivery can take is refused at
/// start, saying what it would take.
#[test]
fn an_inbox_window_a_redelivery_could_outlast_is_refused() {
    let env = Env::embedded();
    let out = std::process::Command::new(BIN)
        .args(["--database-url", &env.database_url, "--max-attempts", "10", "--inbox-retention", "30s", "run"])
        .args(["--listen", "127.0.0.1:0", "--retry-base-ms", "1000"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--inbox-retention 30s is shorter than"), "{stderr}");
    assert!(stderr.contains("Set it to at least"), "{stderr}");
    let bad = std::process::Command::new(BIN).args(["--inbox-retention", "soon", "dlq", "list"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected e.g. 30s, 24h, 7d"));
}
