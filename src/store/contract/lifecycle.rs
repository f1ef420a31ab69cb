//! The contract of cancel and ship: a request moves the order at once and
//! queues its event; the inventory service gives back or sends out exactly
//! the stock the order holds, whatever the order of events and however many
//! workers race; repeats change nothing.

use super::{drain, order, status_count, Fixture};
use crate::domain::{Decision, OrderId, Request, Status};
use crate::messaging::{RetryPolicy, QUEUE_INVENTORY_EVENTS, QUEUE_ORDER_EVENTS};
use crate::store::{Database, Effect, OrderFilter, StockLevel};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

async fn request(store: &dyn Database, id: OrderId, request: Request) -> Decision {
    store.request(id, request).await.unwrap().expect("the order exists").decision
}

async fn status(store: &dyn Database, id: OrderId) -> Status {
    store.get_order(id).await.unwrap().expect("the order exists").status
}

async fn level(store: &dyn Database, sku: &str) -> StockLevel {
    store.list_stock().await.unwrap().into_iter().find(|l| l.sku == sku).expect("the sku")
}

/// The ids of the orders listed with `status`, sorted.
async fn listed(store: &dyn Database, status: Status) -> Vec<OrderId> {
    let filter = OrderFilter { status: Some(status), limit: 100, ..OrderFilter::default() };
    let mut ids: Vec<OrderId> = store.list_orders(filter).await.unwrap().orders.iter().map(|o| o.order_id).collect();
    ids.sort();
    ids
}

async fn inventory(store: &dyn Database) -> usize {
    drain(store, "inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 10).await
}

async fn notifier(store: &dyn Database) -> usize {
    drain(store, "notifier", QUEUE_INVENTORY_EVENTS, Effect::Notify { webhooks: false }, 10).await
}

/// Cancel before, after the reservation and after completion, then ship;
/// each repeated; each refused move refused.
pub async fn cancel_and_ship_move_stock_once(db: &impl Fixture) {
    let store = db.store();
    store.set_stock("tea", 20).await.unwrap();
    let early = store.place_order(order("c", &[("tea", 2)], None)).await.unwrap().id;

    // Cancelled before the inventory saw it: the reservation takes nothing.
    let cancelled = request(&*store, early, Request::Cancel).await;
    assert_eq!(cancelled, Decision::Move { from: Status::Placed, to: Status::Cancelled });
    assert_eq!(status(&*store, early).await, Status::Cancelled);
    assert_eq!(request(&*store, early, Request::Cancel).await, Decision::Already);
    assert_eq!(db.count("SELECT count(*) FROM messages WHERE queue = 'order-events'").await, 2, "one cancel event");
    assert_eq!(inventory(&*store).await, 1, "the cancel is handled, the placement skipped");
    assert_eq!(level(&*store, "tea").await, StockLevel { sku: "tea".into(), available: 20, reserved: 0, shipped: 0 });

    // Reserved, then cancelled: its stock goes back.
    let reserved = store.place_order(order("c", &[("tea", 3)], None)).await.unwrap().id;
    inventory(&*store).await;
    assert_eq!(level(&*store, "tea").await.reserved, 3);
    let decision = request(&*store, reserved, Request::Cancel).await;
    assert_eq!(decision, Decision::Move { from: Status::Reserved, to: Status::Cancelled });
    inventory(&*store).await;
    assert_eq!(level(&*store, "tea").await, StockLevel { sku: "tea".into(), available: 20, reserved: 0, shipped: 0 });

    // Completed, then shipped: its stock leaves for good; a cancel now is refused.
    let shipped = store.place_order(order("c", &[("tea", 4), ("tea", 1)], None)).await.unwrap().id;
    let completed = store.place_order(order("c", &[("tea", 6)], None)).await.unwrap().id;
    inventory(&*store).await;
    notifier(&*store).await;
    assert_eq!(status(&*store, shipped).await, Status::Completed);
    let decision = request(&*store, shipped, Request::Ship).await;
    assert_eq!(decision, Decision::Move { from: Status::Completed, to: Status::Shipped });
    assert_eq!(request(&*store, shipped, Request::Ship).await, Decision::Already);
    let refused = request(&*store, shipped, Request::Cancel).await;
    assert_eq!(refused, Decision::Refuse { from: Status::Shipped, to: Status::Cancelled });
    // Completed, then cancelled: back to available; shipping it is refused.
    let decision = request(&*store, completed, Request::Cancel).await;
    assert_eq!(decision, Decision::Move { from: Status::Completed, to: Status::Cancelled });
    assert_eq!(
        request(&*store, completed, Request::Ship).await,
        Decision::Refuse { from: Status::Cancelled, to: Status::Shipped }
    );
    inventory(&*store).await;
    assert_eq!(level(&*store, "tea").await, StockLevel { sku: "tea".into(), available: 15, reserved: 0, shipped: 5 });

    // Placed and reserved orders cannot ship; an unknown order is no order.
    let placed = store.place_order(order("c", &[("tea", 1)], None)).await.unwrap().id;
    assert_eq!(
        request(&*store, placed, Request::Ship).await,
        Decision::Refuse { from: Status::Placed, to: Status::Shipped }
    );
    inventory(&*store).await;
    assert_eq!(
        request(&*store, placed, Request::Ship).await,
        Decision::Refuse { from: Status::Reserved, to: Status::Shipped }
    );
    assert!(store.request(OrderId::new(), Request::Cancel).await.unwrap().is_none());

    // The history shows each move once, in order; the notifier tells each.
    let view = store.get_order(shipped).await.unwrap().unwrap();
    let path: Vec<Status> = view.history.iter().map(|t| t.status).collect();
    assert_eq!(path, [Status::Placed, Status::Reserved, Status::Completed, Status::Shipped]);
    notifier(&*store).await;
    for (id, kinds) in [
        (early, vec!["cancelled"]),
        // Cancelled before the notifier completed it: never told it was confirmed.
        (reserved, vec!["cancelled"]),
        (shipped, vec!["confirmed", "shipped"]),
        (completed, vec!["cancelled", "confirmed"]),
    ] {
        let trail = store.order_trail(id).await.unwrap();
        // Sorted: two notifications of one batch share their time.
        let mut told: Vec<&str> = trail.notifications.iter().map(|n| n.kind.as_str()).collect();
        told.sort();
        assert_eq!(told, kinds, "{id}");
    }
    assert_eq!(status(&*store, reserved).await, Status::Cancelled, "the confirmation did not complete it");
    assert_eq!(db.count("SELECT count(*) FROM orders WHERE holds_stock").await, 1, "only the last order's");

    // Listed and counted by their status alone, whatever they passed through.
    assert_eq!(listed(&*store, Status::Cancelled).await, [early, reserved, completed]);
    assert_eq!(listed(&*store, Status::Shipped).await, [shipped]);
    // The last order, reserved before the notifier ran, is completed.
    assert_eq!(listed(&*store, Status::Completed).await, [placed]);
    assert_eq!(listed(&*store, Status::Reserved).await, []);
    let stats = store.stats().await.unwrap();
    let counts: Vec<i64> = ["placed", "reserved", "completed", "rejected", "cancelled", "shipped"]
        .iter()
        .map(|s| status_count(&stats, s))
        .collect();
    assert_eq!(counts, [0, 0, 1, 0, 3, 1], "{stats:?}");
}

/// A cancel delivered twice, as an at-least-once relay may, gives back once.
pub async fn a_repeated_cancel_event_gives_back_once(db: &impl Fixture) {
    let store = db.store();
    store.set_stock("tea", 5).await.unwrap();
    let id = store.place_order(order("c", &[("tea", 2)], None)).await.unwrap().id;
    inventory(&*store).await;
    request(&*store, id, Request::Cancel).await;
    let body = db.text("SELECT body FROM messages WHERE routing_key = 'order.cancelled'").await;
    db.queue_message(QUEUE_ORDER_EVENTS, &body).await;
    assert_eq!(inventory(&*store).await, 1, "the copy is a duplicate");
    assert_eq!(level(&*store, "tea").await, StockLevel { sku: "tea".into(), available: 5, reserved: 0, shipped: 0 });
    assert_eq!(db.count("SELECT count(*) FROM messages WHERE routing_key = 'inventory.released'").await, 1);
}

/// Cancels racing the reservations of two inventory workers (two stores on
/// one database, as two processes): whatever wins, no cancelled order holds
/// stock, and every unit is available, reserved or shipped.
pub async fn cancels_racing_reservations_leave_no_stock_held(db: &impl Fixture) {
    const ORDERS: usize = 120;
    let store = db.store();
    store.set_stock("tea", 1000).await.unwrap();
    let other = db.another().await;
    let done = Arc::new(AtomicBool::new(false));
    let mut workers = JoinSet::new();
    for store in [store.clone(), other.clone()] {
        let done = done.clone();
        workers.spawn(async move {
            loop {
                let finished = done.load(Ordering::SeqCst);
                // A batch that met an order cancelled under it fails whole and is tried again.
                let batch = store.consume("inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 8, RetryPolicy::default());
                match batch.await {
                    Ok(batch) if batch.taken == 0 && finished => return,
                    Ok(batch) if batch.taken == 0 => tokio::time::sleep(Duration::from_millis(2)).await,
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
                }
            }
        });
    }
    let mut clients = JoinSet::new();
    for i in 0..ORDERS {
        let store = if i % 2 == 0 { store.clone() } else { other.clone() };
        clients.spawn(async move {
            let id = store.place_order(order("c", &[("tea", 1 + (i % 3) as i64)], None)).await.unwrap().id;
            // Cancel two orders in three, some at once and some a little later.
            if i % 3 != 0 {
                tokio::time::sleep(Duration::from_millis((i % 7) as u64)).await;
                request(&*store, id, Request::Cancel).await;
            }
        });
    }
    clients.join_all().await;
    done.store(true, Ordering::SeqCst);
    workers.join_all().await;

    let tea = level(&*store, "tea").await;
    assert_eq!(tea.available + tea.reserved + tea.shipped, 1000, "{tea:?}");
    assert_eq!(db.count("SELECT count(*) FROM orders WHERE status = 'cancelled' AND holds_stock").await, 0);
    assert_eq!(db.count("SELECT count(*) FROM orders WHERE status = 'cancelled'").await, (ORDERS - ORDERS / 3) as i64);
    assert_eq!(db.count("SELECT count(*) FROM orders WHERE status = 'placed'").await, 0);
    let kept: i64 = (0..ORDERS).filter(|i| i % 3 == 0).map(|i| 1 + (i % 3) as i64).sum();
    assert_eq!(tea.reserved, kept, "only the orders not cancelled hold stock");
    assert_eq!(db.count("SELECT count(*) FROM messages WHERE queue = 'order-events'").await, 0);
}
