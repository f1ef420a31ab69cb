//! What every mode must do, whatever its store and broker.

use crate::helpers::{order, Client, Env};
use serde_json::Value;
use std::time::Duration;

pub const SETTLE: Duration = Duration::from_secs(30);

fn statuses(order: &Value) -> Vec<String> {
    order["history"].as_array().expect("history").iter().map(|t| t["status"].as_str().unwrap().to_owned()).collect()
}

/// An order goes placed → reserved → completed, one with an unknown SKU is
/// rejected without taking any stock, and the compatible routes work.
/// Returns the orders, terminal, in the order they were placed.
pub async fn lifecycle(env: &Env, api: &Client) -> Vec<Value> {
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
    done
}

/// 300 concurrent orders for 100 in stock: exactly 100 reserved, never more.
pub async fn no_oversell(env: &Env, api: &Client) {
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
pub async fn idempotency(env: &Env, api: &Client) {
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
pub async fn paging(env: &Env, api: &Client) {
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
