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

pub use event::{
    push_items_json, Event, EventType, ROUTE_INVENTORY_FAILED, ROUTE_INVENTORY_RESERVED, ROUTE_ORDER_PLACED,
};
pub use order::{
    CustomerId, IdempotencyKey, LineItem, NewOrder, OrderId, Quantity, Sku, Status, ValidationError, MAX_CUSTOMER_LEN,
    MAX_IDEMPOTENCY_KEY_LEN, MAX_ITEMS, MAX_QUANTITY, MAX_SKU_LEN,
};
pub use reservation::{Rejection, Reservation, StockLeft};

/// Milliseconds since the Unix epoch: the one clock every table uses.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Formats stored milliseconds as RFC 3339 for clients.
pub fn format_millis(ms: i64) -> String {
    let (seconds, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000) as u32);
    with_second_text(seconds, |second| {
        let Some(second) = second else {
            let at = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
            return at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        };
        let mut text = String::with_capacity(second.len() + 5);
        text.push_str(second);
        let _ = write_fraction(&mut text, millis, 3);
        text
    })
}

/// Writes the end of an RFC 3339 time after its second: `value` as a
/// fraction of `digits` digits (at most 9), then `Z`.
pub(crate) fn write_fraction(out: &mut impl std::fmt::Write, mut value: u32, digits: usize) -> std::fmt::Result {
    let mut text = *b".000000000Z";
    for digit in text[1..=digits].iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
    text.copy_within(10.., digits + 1);
    out.write_str(std::str::from_utf8(&text[..digits + 2]).expect("ASCII digits"))
}

/// Calls `f` with a second since the epoch as RFC 3339 text in UTC, up to
/// the fraction (`2026-11-28T00:49:12`), or with `None` outside the years 1970
/// to 9999. Formatting a date costs far more than the rest of a time, and the
/// writer and the log lines format the current second over and over: the
/// text of the last second is kept, per thread.
pub(crate) fn with_second_text<R>(seconds: i64, f: impl FnOnce(Option<&str>) -> R) -> R {
    use std::fmt::Write as _;
    thread_local! {
        static SECOND: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((-1, String::new())) };
    }
    /// 9999-12-31T23:59:59.
    const LAST: i64 = 253_402_300_799;
    if !(0..=LAST).contains(&seconds) {
        return f(None);
    }
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != seconds {
            text.clear();
            let at = chrono::DateTime::from_timestamp(seconds, 0).expect("a second within the years 1970 to 9999");
            let _ = write!(text, "{}", at.format("%Y-%m-%dT%H:%M:%S"));
            *second = seconds;
        }
        f(Some(text))
    })
}

#[cfg(test)]
mod tests {
    use super::{format_millis, now_millis};

    /// The same text as chrono's RFC 3339 with milliseconds, whether the
    /// second is new to the thread, the one before, or outside the years the
    /// cache holds (where chrono's own text is kept).
    #[test]
    fn format_millis_writes_what_chrono_writes() {
        let chrono = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        let now = now_millis();
        let last = 253_402_300_799_999;
        for ms in [now, now + 1, now + 999, now, now - 1, 0, 999, 1000, -1, -1001, last, last + 1, i64::MIN, i64::MAX]
            .into_iter()
            .chain((0..2000).map(|i| now - 5_000 + i * 7))
            .chain((0..200).map(|i| i * 86_399_997 + 951_782_400_000))
        {
            assert_eq!(format_millis(ms), chrono(ms), "{ms}");
        }
        assert_eq!(format_millis(1_764_290_952_045), "2025-11-28T00:49:12.045Z");
    }
}
