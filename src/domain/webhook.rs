//! What a webhook says: the JSON body the notifier POSTs for a notification.
//!
//! The body follows the Standard Webhooks shape (`type`, `timestamp`, `data`).
//! Its type is `order.` and the notification's kind, so a new kind of
//! notification becomes a new webhook type with no change here. It is written
//! once, when the notification is recorded, and sent as is on every attempt:
//! a receiver that sees a delivery twice sees the same bytes under the same
//! `webhook-id` (only the signature's timestamp changes).

use super::{format_millis, CustomerId, Event, LineItem, OrderId, Status};
use serde::Serialize;

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    timestamp: String,
    data: Data<'a>,
}

#[derive(Serialize)]
struct Data<'a> {
    order_id: OrderId,
    customer_id: &'a CustomerId,
    status: Status,
    /// Always present (`null` when there is none), so receivers need not guess.
    reason: Option<&'a str>,
    items: &'a [LineItem],
}

/// The webhook body for the notification `event` makes, with the order now
/// in `status`, at `at_millis`; `None` for events that notify no one.
pub fn webhook_body(event: &Event, status: Status, at_millis: i64) -> Option<String> {
    let kind = event.notification_kind()?;
    let body = Body {
        kind: format!("order.{kind}"),
        timestamp: format_millis(at_millis),
        data: Data {
            order_id: event.order_id,
            customer_id: &event.customer_id,
            status,
            reason: event.reason.as_deref(),
            items: &event.items,
        },
    };
    Some(serde_json::to_string(&body).expect("a webhook body serializes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EventType, Quantity, Sku};

    fn event(event_type: EventType, reason: Option<&str>) -> Event {
        let items = vec![LineItem { sku: Sku::parse("tea").unwrap(), quantity: Quantity::parse(2).unwrap() }];
        let order = OrderId::new();
        Event::new(event_type, order, CustomerId::parse("c1").unwrap(), items, reason.map(str::to_owned))
    }

    #[test]
    fn a_body_names_the_kind_and_carries_the_order() {
        let confirmed = event(EventType::InventoryReserved, None);
        let body = webhook_body(&confirmed, Status::Completed, 1_764_290_952_045).unwrap();
        let expected = format!(
            r#"{{"type":"order.confirmed","timestamp":"2025-11-28T00:49:12.045Z","data":{{"order_id":"{}","customer_id":"c1","status":"completed","reason":null,"items":[{{"sku":"tea","quantity":2}}]}}}}"#,
            confirmed.order_id
        );
        assert_eq!(body, expected);

        let rejected = event(EventType::InventoryFailed, Some("out_of_stock:tea"));
        let body: serde_json::Value =
            serde_json::from_str(&webhook_body(&rejected, Status::Rejected, 0).unwrap()).unwrap();
        assert_eq!(body["type"], "order.rejected");
        assert_eq!(body["data"]["status"], "rejected");
        assert_eq!(body["data"]["reason"], "out_of_stock:tea");
    }

    #[test]
    fn an_event_that_notifies_no_one_has_no_body() {
        assert_eq!(webhook_body(&event(EventType::OrderPlaced, None), Status::Placed, 0), None);
    }
}
