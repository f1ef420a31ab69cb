//! What stores and brokers share: queues, outbox messages, dead letters, the
//! retry policy and the error a broker reports.
//!
//! A store writes events to its outbox and, with the `db` broker, is the queue
//! itself; a broker carries the outbox rows and keeps the dead letters. Both
//! need these types, so they live here, below both: the store never imports
//! the broker, and only the `db` broker (which wraps a store) imports the
//! store. This module does no I/O.

mod error;
mod outbox;
mod retry;

pub use error::BrokerError;
pub use outbox::{OutboxMessage, Publisher};
pub use retry::{Reject, RetryPolicy};

use crate::domain::{Event, EventType, OrderId};
use serde::Serialize;

/// Queue that `OrderPlaced`, `OrderCancelled` and `OrderShipped` events go
/// to; the inventory service consumes it.
pub const QUEUE_ORDER_EVENTS: &str = "order-events";
/// Queue that inventory outcomes go to; the notifier consumes it.
pub const QUEUE_INVENTORY_EVENTS: &str = "inventory-events";

/// The queue an event is delivered to.
pub fn queue_for(event: &Event) -> &'static str {
    match event.event_type {
        EventType::OrderPlaced | EventType::OrderCancelled | EventType::OrderShipped => QUEUE_ORDER_EVENTS,
        EventType::InventoryReserved
        | EventType::InventoryFailed
        | EventType::InventoryReleased
        | EventType::InventoryShipped => QUEUE_INVENTORY_EVENTS,
    }
}

/// The order a message body is about: the one every event it carries names.
/// `None` for a body of several orders' events, or one that is not events.
/// What a store writes as the message's `order_id`, by which an order's
/// trail finds its waiting messages.
pub fn order_of(body: &[u8]) -> Option<OrderId> {
    let events = Event::many_from_json(body).ok()?;
    let first = events.first()?.order_id;
    events.iter().all(|e| e.order_id == first).then_some(first)
}

/// Whether a message that names no order, and whose body holds the text of
/// `id`, is about that order: a body of events is when one of them is; one
/// that is not events cannot say otherwise, and is shown with the order it
/// names.
pub fn names_order(body: &[u8], id: OrderId) -> bool {
    Event::many_from_json(body).map_or(true, |events| events.iter().any(|e| e.order_id == id))
}

/// When the first event a message body carries was written (Unix
/// milliseconds); `None` for a body that is not an event.
pub fn written_millis(body: &str) -> Option<i64> {
    let events = Event::many_from_json(body.as_bytes()).ok()?;
    crate::domain::parse_millis(&events.first()?.timestamp)
}

/// A message that was given up on, as `dlq list` shows it: from the store's
/// dead-letter table or from a broker's dead-letter queues.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    pub id: String,
    pub queue: String,
    pub routing_key: String,
    pub attempts: u32,
    pub error: String,
    pub failed_at: String,
    pub body: String,
    /// The dead message's fields as they were, name and value, for brokers
    /// whose messages are field lists (Redis Streams).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<Vec<String>>, required = false)]
    pub fields: Option<Vec<(String, String)>>,
}

#[cfg(test)]
mod tests {
    use super::{names_order, order_of};
    use crate::domain::{CustomerId, Event, EventType, OrderId};

    fn event(order: OrderId, customer: &str) -> String {
        let customer = CustomerId::parse(customer).unwrap();
        Event::new(EventType::OrderPlaced, order, customer, Vec::new(), None).to_json()
    }

    /// A body names its order when every event in it is about that one.
    #[test]
    fn a_body_is_about_the_orders_of_its_events() {
        let (a, b) = (OrderId::new(), OrderId::new());
        let (ea, eb) = (event(a, "c"), event(b, &format!("customer of {a}")));
        assert_eq!(order_of(ea.as_bytes()), Some(a));
        assert_eq!(order_of(Event::pack_json([ea.as_str(), ea.as_str()].into_iter()).as_bytes()), Some(a));
        let both = Event::pack_json([ea.as_str(), eb.as_str()].into_iter());
        assert_eq!(order_of(both.as_bytes()), None);
        assert_eq!(order_of(format!("not an event, about {a}").as_bytes()), None);

        assert!(names_order(both.as_bytes(), a) && names_order(both.as_bytes(), b));
        assert!(!names_order(eb.as_bytes(), a), "naming the order in another field is not being about it");
        assert!(names_order(format!("not an event, about {a}").as_bytes(), a));
    }
}
