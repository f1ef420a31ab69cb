//! Cancel and ship, end to end in every mode: what the client is answered,
//! and the stock that follows each order exactly once, whatever the races
//! between clients and two inventory processes.

use crate::helpers::{eventually, order, Client, Env, Mode, SETTLE};
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn statuses(order: &Value) -> Vec<&str> {
    order["history"].as_array().expect("history").iter().map(|t| t["status"].as_str().unwrap()).collect()
}

/// Waits until the order leaves `placed` and `reserved`; returns it.
async fn decided(api: &Client, id: &str) -> Value {
    let deadline = Instant::now() + SETTLE;
    loop {
        let (status, body) = api.get(&format!("/orders/{id}")).await;
        assert_eq!(status, 200, "{body}");
        if !matches!(body["status"].as_str(), Some("placed" | "reserved")) {
            return body;
        }
        assert!(Instant::now() < deadline, "order {id} is still {}", body["status"]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The kinds of notification recorded about an order, sorted.
async fn told(api: &Client, id: &str) -> Vec<String> {
    let (_, trail) = api.get(&format!("/orders/{id}/trail")).await;
    let mut kinds: Vec<String> =
        trail["notifications"].as_array().unwrap().iter().map(|n| n["kind"].as_str().unwrap().to_owned()).collect();
    kinds.sort();
    kinds
}

/// Cancel before or during the reservation and after it, ship, repeat
/// each, and every move the lifecycle refuses.
pub(super) async fn cancel_and_ship(mode: Mode) {
    let Some((env, app)) = mode.start().await else { return };
    let api = app.client();
    env.set_stock("tea", 10);

    // Cancelled as soon as it is accepted: before or while it is reserved.
    let early = api.place(&order("alice", &[("tea", 2)])).await;
    let (status, body) = api.cancel(&early).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("cancelled")), "{body}");
    assert_eq!(api.cancel(&early).await, (200, body.clone()), "a repeat answers the same");
    let (status, refused) = api.ship(&early).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("invalid_transition")), "{refused}");

    // Completed, then cancelled; completed, then shipped.
    let back = api.place(&order("bob", &[("tea", 3)])).await;
    let gone = api.place(&order("bob", &[("tea", 4)])).await;
    assert_eq!(decided(api, &back).await["status"], "completed");
    assert_eq!(decided(api, &gone).await["status"], "completed");
    let (status, cancelled) = api.cancel(&back).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(statuses(&cancelled), ["placed", "reserved", "completed", "cancelled"]);
    assert_eq!(api.cancel(&back).await, (200, cancelled));
    let (status, shipped) = api.ship(&gone).await;
    assert_eq!(status, 200, "{shipped}");
    assert_eq!(statuses(&shipped), ["placed", "reserved", "completed", "shipped"]);
    assert_eq!(api.ship(&gone).await, (200, shipped.clone()));
    let (status, refused) = api.cancel(&gone).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("invalid_transition")), "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("shipped"), "{refused}");
    assert_eq!(api.get(&format!("/orders/{gone}")).await.1, shipped, "a refused move changed nothing");

    // A rejected order cannot be cancelled; an order not completed cannot ship.
    let rejected = api.place(&order("carol", &[("caviar", 1)])).await;
    assert_eq!(decided(api, &rejected).await["status"], "rejected");
    assert_eq!(api.cancel(&rejected).await.0, 409);
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_eq!(api.cancel(&unknown).await.1["error"]["code"], "not_found");
    assert_eq!(api.ship(&unknown).await.0, 404);
    assert_eq!(api.cancel("nope").await.1["error"]["code"], "invalid_order_id");
    let anonymous = api.http.post(api.url(&format!("/admin/orders/{back}/ship"))).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "shipping needs the operator");

    // The stock follows: the early and the cancelled orders' back, the shipped one's gone.
    eventually(SETTLE, "the stock of each order moved", || async { env.stock_levels("tea") == (6, 0, 4) }).await;
    eventually(SETTLE, "every outcome notified", || async {
        told(api, &back).await == ["cancelled", "confirmed"] && told(api, &gone).await == ["confirmed", "shipped"]
    })
    .await;
    assert!(told(api, &early).await.contains(&"cancelled".to_owned()));
    assert_eq!(env.sql("SELECT count(*) FROM orders WHERE holds_stock"), "0");
    assert!(env.dead_letters().is_empty(), "{:?}", env.dead_letters());
}

/// A small generator, seeded from the clock and printed, so a failing
/// interleaving can be told apart.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Many clients place, cancel and ship at random moments while two
/// inventory processes race; then, for every SKU, what was stocked is
/// available + reserved + shipped, and no cancelled order holds stock.
pub(super) async fn stock_follows_every_order(mode: Mode) {
    const CLIENTS: u64 = 48;
    let Some((env, mut app)) = mode.start().await else { return };
    app.add(&env, "inventory", &["--batch-size", "8"]).await;
    app.add(&env, "inventory", &["--batch-size", "8"]).await;
    let stocked = [("a", 40), ("b", 40)];
    for (sku, n) in stocked {
        env.set_stock(sku, n);
    }
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("interleaving seed {seed}");
    let mut rng = Rng(seed);
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let api = app.client().clone();
        let items: Vec<(&str, i64)> = match rng.below(3) {
            0 => vec![("a", 1 + rng.below(4) as i64)],
            1 => vec![("b", 1 + rng.below(4) as i64)],
            _ => vec![("a", 1 + rng.below(3) as i64), ("b", 1 + rng.below(3) as i64)],
        };
        let (plan, pause) = (rng.below(5), Duration::from_millis(rng.below(30)));
        clients.push(tokio::spawn(async move {
            let id = api.place(&order(&format!("c{i}"), &items)).await;
            tokio::time::sleep(pause).await;
            match plan {
                // Cancelled at once, or after a pause: before, during or after the
                // reservation; refused only when the order was rejected first.
                0 | 1 => {
                    let (status, body) = api.cancel(&id).await;
                    let rejected = api.get(&format!("/orders/{id}")).await.1["status"] == "rejected";
                    assert!(status == 200 || (status == 409 && rejected), "{status} {body}");
                }
                // Shipped once completed, and a cancel then refused; or cancelled after completion.
                2 | 3 if decided(&api, &id).await["status"] == "completed" => {
                    if plan == 2 {
                        assert_eq!(api.ship(&id).await.0, 200);
                        assert_eq!(api.cancel(&id).await.0, 409);
                    } else {
                        assert_eq!(api.cancel(&id).await.0, 200);
                    }
                }
                _ => {}
            }
            (id, items)
        }));
    }
    let mut orders = Vec::new();
    for client in clients {
        orders.push(client.await.expect("a client"));
    }
    let all: Vec<String> = orders.iter().map(|(id, _)| id.clone()).collect();
    eventually(SETTLE, "every order decided and every stock move applied", || async {
        env.sql("SELECT count(*) FROM orders WHERE status IN ('placed', 'reserved')") == "0"
            && holding(&env) == env.sql("SELECT count(*) FROM orders WHERE status = 'completed'")
            && env.sql("SELECT count(*) FROM notifications").parse::<usize>().unwrap() >= outcomes(&env)
    })
    .await;

    // What each order holds, from its status; what each SKU has, from the stock.
    let mut held: HashMap<&str, i64> = HashMap::new();
    let mut sent: HashMap<&str, i64> = HashMap::new();
    for (id, items) in &orders {
        let (_, order) = app.client().get(&format!("/orders/{id}")).await;
        let into = match order["status"].as_str().unwrap() {
            "completed" => &mut held,
            "shipped" => &mut sent,
            "cancelled" | "rejected" => continue,
            other => panic!("order {id} is still {other}"),
        };
        for (sku, n) in items {
            *into.entry(sku).or_default() += n;
        }
    }
    for (sku, initial) in stocked {
        let (available, reserved, shipped) = env.stock_levels(sku);
        assert_eq!(available + reserved + shipped, initial, "{sku}: stock conserved (seed {seed})");
        assert_eq!(reserved, held.get(sku).copied().unwrap_or(0), "{sku}: reserved by completed orders only");
        assert_eq!(shipped, sent.get(sku).copied().unwrap_or(0), "{sku}: shipped by shipped orders only");
    }
    assert_eq!(env.sql("SELECT count(*) FROM orders WHERE status = 'cancelled' AND holds_stock"), "0");
    assert!(env.dead_letters().is_empty(), "{:?}", env.dead_letters());
    assert_eq!(all.len() as u64, CLIENTS);
}

fn holding(env: &Env) -> String {
    env.sql("SELECT count(*) FROM orders WHERE holds_stock")
}

/// The notifications the orders' outcomes make: a confirmation for each
/// order that completed (one cancelled while reserved never completes, and
/// is not told it was confirmed), one per rejection, and one per cancel and
/// per shipment.
fn outcomes(env: &Env) -> usize {
    let count = |sql: &str| env.sql(sql).parse::<usize>().unwrap();
    count("SELECT count(*) FROM orders WHERE completed_at IS NOT NULL")
        + count("SELECT count(*) FROM orders WHERE status IN ('rejected', 'cancelled', 'shipped')")
}
