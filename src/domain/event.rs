//! Events: the JSON envelopes that travel between the services.
//!
//! Every event carries its own id (the consumers' inbox key), its type, the
//! order it is about and the order's fields, so a consumer never has to read
//! the order back to act on it.

use super::{CustomerId, LineItem, OrderId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const ROUTE_ORDER_PLACED: &str = "order.placed";
pub const ROUTE_INVENTORY_RESERVED: &str = "inventory.reserved";
pub const ROUTE_INVENTORY_FAILED: &str = "inventory.failed";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    OrderPlaced,
    InventoryReserved,
    InventoryFailed,
}

impl EventType {
    /// Its name in JSON, as serde writes it.
    fn as_str(self) -> &'static str {
        match self {
            EventType::OrderPlaced => "OrderPlaced",
            EventType::InventoryReserved => "InventoryReserved",
            EventType::InventoryFailed => "InventoryFailed",
        }
    }

    /// The routing key the event is published under.
    pub fn routing_key(self) -> &'static str {
        match self {
            EventType::OrderPlaced => ROUTE_ORDER_PLACED,
            EventType::InventoryReserved => ROUTE_INVENTORY_RESERVED,
            EventType::InventoryFailed => ROUTE_INVENTORY_FAILED,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: Uuid,
    pub event_type: EventType,
    pub order_id: OrderId,
    pub timestamp: String,
    pub customer_id: CustomerId,
    pub items: Vec<LineItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Event {
    pub fn new(
        event_type: EventType,
        order_id: OrderId,
        customer_id: CustomerId,
        items: Vec<LineItem>,
        reason: Option<String>,
    ) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type,
            order_id,
            timestamp: super::format_millis(super::now_millis()),
            customer_id,
            items,
            reason,
        }
    }

    /// The event that follows this one, about the same order.
    pub fn follow(&self, event_type: EventType, reason: Option<String>) -> Self {
        Self::new(event_type, self.order_id, self.customer_id.clone(), self.items.clone(), reason)
    }

    /// What the customer is told about this event, and its kind; `None` for
    /// events that are not outcomes.
    pub fn notification(&self) -> Option<(&'static str, String)> {
        let kind = self.notification_kind()?;
        let text = match self.event_type {
            EventType::InventoryReserved => format!("Your order {} is confirmed.", self.order_id),
            _ => format!(
                "Sorry, your order {} could not be fulfilled ({}).",
                self.order_id,
                self.reason.as_deref().unwrap_or("unknown reason")
            ),
        };
        Some((kind, text))
    }

    /// The kind of notification this event makes, without its text.
    pub fn notification_kind(&self) -> Option<&'static str> {
        match self.event_type {
            EventType::InventoryReserved => Some("confirmed"),
            EventType::InventoryFailed => Some("rejected"),
            EventType::OrderPlaced => None,
        }
    }

    /// The event as JSON: what serde writes for it, written directly. An
    /// event is written for every message queued, much of it on the store's
    /// writer thread, and serde spent most of its time there checking ids
    /// and times, which never need an escape, for characters to escape.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(256);
        let mut uuid = Uuid::encode_buffer();
        out.push_str(r#"{"event_id":""#);
        out.push_str(self.event_id.as_hyphenated().encode_lower(&mut uuid));
        out.push_str(r#"","event_type":""#);
        out.push_str(self.event_type.as_str());
        out.push_str(r#"","order_id":""#);
        out.push_str(self.order_id.as_uuid().as_hyphenated().encode_lower(&mut uuid));
        out.push_str(r#"","timestamp":"#);
        push_json_str(&mut out, &self.timestamp);
        out.push_str(r#","customer_id":"#);
        push_json_str(&mut out, self.customer_id.as_str());
        out.push_str(r#","items":"#);
        push_items_json(&mut out, &self.items);
        if let Some(reason) = &self.reason {
            out.push_str(r#","reason":"#);
            push_json_str(&mut out, reason);
        }
        out.push('}');
        out
    }

    /// Parses a message body. A body that fails here is poison: retrying it
    /// cannot help, so callers dead-letter it at once.
    pub fn from_json(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// Parses a message body that holds one event (an object) or several (a
    /// non-empty array of them). One bad event makes the whole body poison.
    pub fn many_from_json(body: &[u8]) -> Result<Vec<Self>, serde_json::Error> {
        if body.trim_ascii_start().first() != Some(&b'[') {
            return Self::from_json(body).map(|e| vec![e]);
        }
        let events: Vec<Self> = serde_json::from_slice(body)?;
        if events.is_empty() {
            return Err(serde::de::Error::invalid_length(0, &"at least one event"));
        }
        Ok(events)
    }

    /// The body of one message carrying `events`, each already JSON: the
    /// event itself when there is one, else an array of them.
    pub fn pack_json<'a>(events: impl ExactSizeIterator<Item = &'a str>) -> String {
        let mut events = events.peekable();
        if events.len() == 1 {
            return events.next().expect("one event").to_owned();
        }
        let mut body = String::from("[");
        while let Some(event) = events.next() {
            body.push_str(event);
            if events.peek().is_some() {
                body.push(',');
            }
        }
        body.push(']');
        body
    }
}

/// Appends `s` as a JSON string. One with nothing to escape is copied as
/// it is; serde_json escapes exactly the control characters, `"` and `\`.
fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).expect("a string serializes"));
    }
}

/// Appends `items` as JSON, as serde writes them.
pub fn push_items_json(out: &mut String, items: &[LineItem]) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"sku":"#);
        push_json_str(out, item.sku.as_str());
        out.push_str(r#","quantity":"#);
        out.push_str(itoa::Buffer::new().format(item.quantity.get()));
        out.push('}');
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Quantity, Sku};

    #[test]
    fn round_trips_and_rejects_garbage() {
        let items = vec![LineItem { sku: Sku::parse("tea").unwrap(), quantity: Quantity::parse(2).unwrap() }];
        let e = Event::new(EventType::OrderPlaced, OrderId::new(), CustomerId::parse("c1").unwrap(), items, None);
        let back = Event::from_json(e.to_json().as_bytes()).unwrap();
        assert_eq!(back, e);
        let next = e.follow(EventType::InventoryFailed, Some("out_of_stock:tea".into()));
        assert_eq!(next.order_id, e.order_id);
        assert_ne!(next.event_id, e.event_id);
        assert!(Event::from_json(b"{not json").is_err());
        assert!(Event::from_json(br#"{"event_id":"x"}"#).is_err());
        // A message whose items break the domain rules is refused too.
        let bad = e.to_json().replace("\"quantity\":2", "\"quantity\":0");
        assert!(Event::from_json(bad.as_bytes()).is_err());
    }

    /// The JSON written by hand is byte for byte what serde writes, also
    /// for strings that need escapes.
    #[test]
    fn to_json_writes_what_serde_writes() {
        let odd = ["plain", "quote\"d", "back\\slash", "ünïcödé ☕", "del\u{7f}", "tab\there", "nl\n", "/"];
        for (i, text) in odd.iter().enumerate() {
            let items: Vec<LineItem> = odd
                .iter()
                .take(i + 1)
                .map(|sku| LineItem {
                    sku: Sku::parse(*sku).unwrap_or_else(|_| Sku::parse("x").unwrap()),
                    quantity: Quantity::parse(i as i64 + 1).unwrap(),
                })
                .collect();
            let customer = CustomerId::parse(*text).unwrap_or_else(|_| CustomerId::parse("c").unwrap());
            for (event_type, reason) in [
                (EventType::OrderPlaced, None),
                (EventType::InventoryReserved, None),
                (EventType::InventoryFailed, Some(format!("out_of_stock:{text}"))),
            ] {
                let mut e = Event::new(event_type, OrderId::new(), customer.clone(), items.clone(), reason);
                e.timestamp = (*text).to_owned();
                assert_eq!(e.to_json(), serde_json::to_string(&e).unwrap());
                assert_eq!(Event::from_json(e.to_json().as_bytes()).unwrap(), e);
            }
            let mut written = String::new();
            push_items_json(&mut written, &items);
            assert_eq!(written, serde_json::to_string(&items).unwrap());
        }
        let mut empty = String::new();
        push_items_json(&mut empty, &[]);
        assert_eq!(empty, "[]");
    }

    #[test]
    fn a_body_carries_one_event_or_several() {
        let items = vec![LineItem { sku: Sku::parse("tea").unwrap(), quantity: Quantity::parse(1).unwrap() }];
        let customer = CustomerId::parse("c1").unwrap();
        let a = Event::new(EventType::OrderPlaced, OrderId::new(), customer.clone(), items.clone(), None);
        let b = Event::new(EventType::OrderPlaced, OrderId::new(), customer, items, None);
        let (ja, jb) = (a.to_json(), b.to_json());

        let one = Event::pack_json([ja.as_str()].into_iter());
        assert_eq!(one, ja, "a single event travels as itself");
        assert_eq!(Event::many_from_json(one.as_bytes()).unwrap(), vec![a.clone()]);

        let two = Event::pack_json([ja.as_str(), jb.as_str()].into_iter());
        assert_eq!(Event::many_from_json(two.as_bytes()).unwrap(), vec![a, b]);

        assert!(Event::many_from_json(b"[]").is_err(), "an empty pack is poison");
        assert!(Event::many_from_json(format!("[{ja},{{\"event_id\":1}}]").as_bytes()).is_err());
        assert!(Event::many_from_json(b" [not json").is_err());
    }
}
