//! The contract of an order's trail: it lists the messages about the order
//! still waiting, every one of them and no other, whoever wrote them: the
//! store (as it places and moves the order), an operator by hand, or a relay
//! packing several orders' events into one message.

use super::{drain, order, Fixture};
use crate::domain::{CustomerId, Event, EventType, OrderId, Request};
use crate::messaging::{QUEUE_INVENTORY_EVENTS, QUEUE_ORDER_EVENTS};
use crate::store::{Database, Effect};

/// The ids of the order's waiting messages, as its trail lists them.
async fn waiting(store: &dyn Database, id: OrderId) -> Vec<i64> {
    store.order_trail(id).await.unwrap().waiting.iter().map(|m| m.id).collect()
}

/// The routing keys of the order's waiting messages, oldest first.
async fn keys(store: &dyn Database, id: OrderId) -> Vec<String> {
    store.order_trail(id).await.unwrap().waiting.into_iter().map(|m| m.routing_key).collect()
}

fn event(order: OrderId, customer: &str) -> String {
    let customer = CustomerId::parse(customer).unwrap();
    Event::new(EventType::InventoryReserved, order, customer, Vec::new(), None).to_json()
}

/// Queues `body` by hand and returns its message's id.
async fn by_hand(db: &impl Fixture, body: &str) -> i64 {
    db.queue_message(QUEUE_INVENTORY_EVENTS, body).await;
    db.count("SELECT max(id) FROM messages").await
}

/// Messages the store queued and messages queued by hand, one event or
/// several orders' events, are listed with the orders they are about; one
/// that only names an order in another field is not; one that is not
/// events is listed with the order it names. A body rewritten by hand moves
/// its message to the order it is now about.
pub async fn an_orders_trail_lists_exactly_its_waiting_messages(db: &impl Fixture) {
    let store = db.store();
    store.set_stock("tea", 10).await.unwrap();
    let one = store.place_order(order("c", &[("tea", 1)], None)).await.unwrap().id;
    let placed_one = db.count("SELECT max(id) FROM messages").await;
    let two = store.place_order(order("c", &[("tea", 1)], None)).await.unwrap().id;
    let placed_two = db.count("SELECT max(id) FROM messages").await;
    let (a, b) = (event(one, "c"), event(two, "c"));

    let single = by_hand(db, &a).await;
    let pack = by_hand(db, &Event::pack_json([b.as_str(), a.as_str()].into_iter())).await;
    let pack_of_two = by_hand(db, &Event::pack_json([b.as_str(), event(two, "c").as_str()].into_iter())).await;
    let names_one = by_hand(db, &event(two, &format!("customer of {one}"))).await;
    let poison = by_hand(db, &format!("not an event, about {one}")).await;
    by_hand(db, "not an event").await;
    assert_eq!(waiting(&*store, one).await, [placed_one, single, pack, poison]);
    assert_eq!(waiting(&*store, two).await, [placed_two, pack, pack_of_two, names_one]);

    // Its placement handled, each order waits for the inventory's answer.
    drain(&*store, "inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 10).await;
    let answered = waiting(&*store, one).await;
    assert_eq!(answered[..4], [single, pack, poison, answered[3]]);
    assert_eq!(keys(&*store, one).await[3], "inventory.reserved");
    assert!(answered[3] > poison && !waiting(&*store, two).await.contains(&answered[3]));

    // A client's cancel, then the inventory's answer to it.
    store.request(one, Request::Cancel).await.unwrap().expect("the order exists");
    assert_eq!(keys(&*store, one).await[4..], ["order.cancelled"]);
    drain(&*store, "inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 10).await;
    assert_eq!(keys(&*store, one).await[4..], ["inventory.released"]);

    // The store's message rewritten by hand to be about the other order.
    let rewritten = answered[3];
    db.execute(&format!("UPDATE messages SET body = '{b}' WHERE id = {rewritten}")).await;
    assert!(!waiting(&*store, one).await.contains(&rewritten));
    assert!(waiting(&*store, two).await.contains(&rewritten));
    let written = store.place_order(order("c", &[("tea", 1)], None)).await.unwrap().id;
    assert_eq!(keys(&*store, written).await, ["order.placed"], "nothing else is about a new order");
}
