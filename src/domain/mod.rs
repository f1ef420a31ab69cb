//! The order domain: identifiers, validated input, statuses, events and the
//! business rules.
//!
//! Nothing here does I/O. Every type that comes from a client is parsed into a
//! newtype that cannot hold a bad value, so the rest of the system never has to
//! re-check a SKU or a quantity. The rules (all items or none, statuses move
//! only forward) are decided here; the stores persist what was decided.

mod event;
mod order;
mod reservation;
mod retention;
mod trace;

pub use event::{Event, EventType, ROUTE_INVENTORY_FAILED, ROUTE_INVENTORY_RESERVED, ROUTE_ORDER_PLACED};
pub use order::{
    CustomerId, IdempotencyKey, LineItem, NewOrder, OrderId, Quantity, Sku, Status, ValidationError, MAX_CUSTOMER_LEN,
    MAX_IDEMPOTENCY_KEY_LEN, MAX_ITEMS, MAX_QUANTITY, MAX_SKU_LEN,
};
pub use reservation::{Rejection, Reservation, StockLeft};
pub use retention::{
    cutoff, first_uuid_of, key_holds, replay_verdict, uuid_millis, ReplayVerdict, Retention, DEFAULT_INBOX_RETENTION,
    DEFAULT_KEY_TTL,
};
pub use trace::{TraceId, TraceParent};

/// Milliseconds since the Unix epoch: the one clock every table uses.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Formats stored milliseconds as RFC 3339 for clients, in UTC to the
/// millisecond (`2025-11-28T00:49:12.045Z`).
pub fn format_millis(ms: i64) -> String {
    let at = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::format_millis;

    #[test]
    fn times_are_rfc_3339_in_utc_to_the_millisecond() {
        assert_eq!(format_millis(1_764_290_952_045), "2025-11-28T00:49:12.045Z");
        assert_eq!(format_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_millis(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_millis(i64::MAX), "1970-01-01T00:00:00.000Z", "out of chrono's range");
    }
}
