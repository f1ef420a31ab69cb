//! Events: the JSON envelopes that travel between the services.
//!
//! Every event carries its own id (the consumers' inbox key), its type, the
//! order it is about and the order's fields, so a consumer never has to read
//! the order back to act on it.

use super::{CustomerId, LineItem, OrderId, TraceId, TraceParent};
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
    /// The order's trace, its parent the span that caused this event.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "super::trace::lenient")]
    pub traceparent: Option<TraceParent>,
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
            traceparent: None,
        }
    }

    /// The event, in `trace`.
    pub fn in_trace(self, traceparent: Option<TraceParent>) -> Self {
        Self { traceparent, ..self }
    }

    /// The id of the order's trace, for log lines; `None` for events of old.
    pub fn trace_id(&self) -> Option<TraceId> {
        self.traceparent.map(|t| t.trace_id())
    }

    /// The event that follows this one, about the same order, in its trace.
    pub fn follow(&self, event_type: EventType, reason: Option<String>) -> Self {
        Self::new(event_type, self.order_id, self.customer_id.clone(), self.items.clone(), reason)
            .in_trace(self.traceparent)
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

    /// The event as JSON, the body it travels as.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an event serializes")
    }

    /// Parses a message body. A body that fails here is poison: retrying it
    /// cannot help, so callers dead-letter it at once.
    pub fn from_json(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The trace of the event `body` holds, read without the rest of it:
    /// what a relay sends as the message's own `traceparent`.
    pub fn traceparent_of(body: &str) -> Option<TraceParent> {
        #[derive(Deserialize)]
        struct Trace {
            #[serde(default, deserialize_with = "super::trace::lenient")]
            traceparent: Option<TraceParent>,
        }
        serde_json::from_str::<Trace>(body).ok()?.traceparent
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

    /// The wire format consumers read: field names, their order, and
    /// `reason` only when there is one.
    #[test]
    fn an_event_is_written_in_the_wire_format() {
        let items = vec![
            LineItem { sku: Sku::parse("tea").unwrap(), quantity: Quantity::parse(2).unwrap() },
            LineItem { sku: Sku::parse("quote\"d").unwrap(), quantity: Quantity::parse(1).unwrap() },
        ];
        let order = OrderId::new();
        let mut e = Event::new(EventType::InventoryFailed, order, CustomerId::parse("c1").unwrap(), items, None);
        e.event_id = Uuid::nil();
        e.timestamp = "2025-11-28T00:49:12.045Z".into();
        let head = format!(
            r#"{{"event_id":"00000000-0000-0000-0000-000000000000","event_type":"InventoryFailed","order_id":"{order}","timestamp":"2025-11-28T00:49:12.045Z","customer_id":"c1","items":[{{"sku":"tea","quantity":2}},{{"sku":"quote\"d","quantity":1}}]"#
        );
        assert_eq!(e.to_json(), format!("{head}}}"));
        e.reason = Some("out_of_stock:tea".into());
        assert_eq!(e.to_json(), format!(r#"{head},"reason":"out_of_stock:tea"}}"#));
        assert_eq!(Event::from_json(e.to_json().as_bytes()).unwrap(), e);
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        e.traceparent = TraceParent::parse(tp);
        let traced = format!(r#"{head},"reason":"out_of_stock:tea","traceparent":"{tp}"}}"#);
        assert_eq!(e.to_json(), traced);
        assert_eq!(Event::from_json(traced.as_bytes()).unwrap(), e);
        assert_eq!(e.follow(EventType::InventoryReserved, None).traceparent, e.traceparent, "the trace goes on");
        // A bad value written by some other program is dropped, not poison.
        assert_eq!(Event::traceparent_of(&traced), e.traceparent);
        assert_eq!(Event::traceparent_of(&head), None, "not JSON: the head alone");
        let odd = traced.replace(tp, "not-a-traceparent");
        assert_eq!(Event::from_json(odd.as_bytes()).unwrap().traceparent, None);
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
