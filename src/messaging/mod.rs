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

use crate::domain::{Event, EventType};
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
