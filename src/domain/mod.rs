//! The order domain: identifiers, validated input, statuses and events.
//!
//! Nothing here does I/O. Every type that comes from a client is parsed into a
//! newtype that cannot hold a bad value, so the rest of the system never has to
//! re-check a SKU or a quantity.

mod event;
mod order;

pub use event::{
    push_items_json, Event, EventType, ROUTE_INVENTORY_FAILED, ROUTE_INVENTORY_RESERVED, ROUTE_ORDER_PLACED,
};
pub use order::{
    CustomerId, IdempotencyKey, LineItem, NewOrder, OrderId, Quantity, Sku, Status, ValidationError, MAX_ITEMS,
};

/// Milliseconds since the Unix epoch: the one clock every table uses.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Formats stored milliseconds as RFC 3339 for clients.
pub fn format_millis(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
