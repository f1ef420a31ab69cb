//! Publishing with confirms, many in flight, several events per message.
//!
//! A relay batch is packed into messages of up to `EVENTS_PER_MESSAGE`
//! events with the same routing key (a JSON array; a lone event travels as
//! itself). RabbitMQ's cost is mostly per message: a quorum queue writes,
//! replicates, confirms, delivers and acknowledges each one, so packing cuts
//! its share of an order's work several times over under load, while a quiet
//! system still sends every event at once, alone. Consumers apply a pack in
//! one transaction and settle it as one message.
//!
//! The messages are published on one confirm-mode channel without waiting
//! between them; then every confirm is awaited together. Awaiting each
//! confirm before the next publish would cap throughput at a few hundred per
//! second. Messages are persistent and carry the outbox id of their first
//! event as `message_id`, which names them in the dead-letter queue. A
//! message that carries one event also carries its trace as the header
//! `traceparent`; in a pack each event has its own, in its body.

use super::{amqp_err, exchange_for, unavailable, Link};
use crate::domain::{Event, TraceParent};
use crate::messaging::{BrokerError, OutboxMessage, Publisher};
use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel};
use std::sync::Arc;
use tokio::sync::Mutex;

/// Most events carried by one message.
const EVENTS_PER_MESSAGE: usize = 64;

pub(super) struct AmqpPublisher {
    link: Arc<Link>,
    channel: Mutex<Option<Channel>>,
}

impl AmqpPublisher {
    pub(super) fn new(link: Arc<Link>) -> Self {
        Self { link, channel: Mutex::new(None) }
    }
}

#[async_trait]
impl Publisher for AmqpPublisher {
    async fn publish(&self, batch: &[OutboxMessage]) -> Result<(), BrokerError> {
        // The lock only hands out the channel: batches from several relay
        // loops are published on it at the same time.
        let channel = {
            let mut slot = self.channel.lock().await;
            match slot.as_ref().filter(|c| c.status().connected()) {
                Some(c) => c.clone(),
                None => {
                    let c = self.link.channel().await?;
                    c.confirm_select(ConfirmSelectOptions::default()).await.map_err(amqp_err)?;
                    *slot = Some(c.clone());
                    c
                }
            }
        };
        let result = publish_all(&channel, batch).await;
        if result.is_err() {
            // Start over on a fresh channel next time.
            *self.channel.lock().await = None;
        }
        result
    }
}

async fn publish_all(channel: &Channel, batch: &[OutboxMessage]) -> Result<(), BrokerError> {
    // Every publish is started before any is awaited: lapin then writes the
    // whole batch to the socket in a few system calls, instead of one
    // hand-over to its I/O thread (and back) per message.
    let packs = pack(batch);
    let publishes = packs.iter().map(|(first, body)| {
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(first.message_id.as_str().into());
        if let Some(trace) = lone_trace(body) {
            let mut headers = FieldTable::default();
            headers.insert("traceparent".into(), AMQPValue::LongString(trace.to_string().into()));
            props = props.with_headers(headers);
        }
        channel.basic_publish(
            exchange_for(&first.routing_key).into(),
            first.routing_key.as_str().into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            props,
        )
    });
    let confirms = futures::future::try_join_all(publishes).await.map_err(amqp_err)?;
    for confirm in futures::future::join_all(confirms).await {
        match confirm.map_err(amqp_err)? {
            Confirmation::Ack(_) => {}
            other => return Err(unavailable(format!("RabbitMQ did not confirm a message: {other:?}"))),
        }
    }
    Ok(())
}

/// The trace of the event a message carries, when it carries one.
fn lone_trace(body: &str) -> Option<TraceParent> {
    if body.trim_ascii_start().starts_with('[') {
        return None;
    }
    Event::traceparent_of(body)
}

/// Groups a batch by routing key, in order, into message bodies of up to
/// `EVENTS_PER_MESSAGE` events, each with the first outbox row it carries.
/// A row that is not a valid event travels alone, so that it reaches the
/// dead-letter queue by itself instead of taking its neighbours with it.
fn pack(batch: &[OutboxMessage]) -> Vec<(&OutboxMessage, String)> {
    let mut packs = Vec::new();
    let mut groups: Vec<(&str, Vec<&OutboxMessage>)> = Vec::new();
    for m in batch {
        if Event::from_json(m.body.as_bytes()).is_err() {
            packs.push((m, m.body.clone()));
            continue;
        }
        match groups.iter_mut().find(|(key, _)| *key == m.routing_key) {
            Some((_, rows)) => rows.push(m),
            None => groups.push((&m.routing_key, vec![m])),
        }
    }
    for (_, rows) in groups {
        for chunk in rows.chunks(EVENTS_PER_MESSAGE) {
            packs.push((chunk[0], Event::pack_json(chunk.iter().map(|m| m.body.as_str()))));
        }
    }
    packs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CustomerId, EventType, OrderId};

    fn row(id: i64, key: &str) -> OutboxMessage {
        let customer = CustomerId::parse(format!("c{id}")).unwrap();
        let event = Event::new(EventType::OrderPlaced, OrderId::new(), customer, Vec::new(), None);
        OutboxMessage { id, routing_key: key.into(), body: event.to_json(), message_id: id.to_string() }
    }

    /// (first row id, routing key, the customers of the events carried)
    fn shape(packs: &[(&OutboxMessage, String)]) -> Vec<(i64, String, Vec<String>)> {
        packs
            .iter()
            .map(|(first, body)| {
                let customers = match Event::many_from_json(body.as_bytes()) {
                    Ok(events) => events.iter().map(|e| e.customer_id.as_str().to_owned()).collect(),
                    Err(_) => vec![body.clone()],
                };
                (first.id, first.routing_key.clone(), customers)
            })
            .collect()
    }

    #[test]
    fn packs_by_routing_key_in_order_and_bounded() {
        let n = EVENTS_PER_MESSAGE as i64;
        let mut batch: Vec<OutboxMessage> = (1..=n + 1).map(|i| row(i, "order.placed")).collect();
        batch.insert(1, row(1000, "inventory.reserved"));
        let packs = pack(&batch);
        let full: Vec<String> = (1..=n).map(|i| format!("c{i}")).collect();
        assert_eq!(
            shape(&packs),
            vec![
                (1, "order.placed".into(), full),
                (n + 1, "order.placed".into(), vec![format!("c{}", n + 1)]),
                (1000, "inventory.reserved".into(), vec!["c1000".into()]),
            ]
        );
        assert_eq!(packs[1].1, batch[n as usize + 1].body, "a lone event travels as itself");
        assert_eq!(lone_trace(&packs[0].1), None, "a pack has no one trace");
    }

    #[test]
    fn a_lone_event_carries_its_trace_outside_its_body_too() {
        let mut lone = row(1, "order.placed");
        let trace = TraceParent::start();
        let event = Event::from_json(lone.body.as_bytes()).unwrap().in_trace(Some(trace));
        lone.body = event.to_json();
        assert_eq!(lone_trace(&lone.body), Some(trace));
        assert_eq!(lone_trace(&row(2, "order.placed").body), None, "an event of old has none");
    }

    #[test]
    fn a_row_that_is_no_event_travels_alone() {
        let mut batch = vec![row(1, "order.placed"), row(2, "order.placed"), row(3, "order.placed")];
        batch[1].body = "not json".into();
        assert_eq!(
            shape(&pack(&batch)),
            vec![
                (2, "order.placed".into(), vec!["not json".into()]),
                (1, "order.placed".into(), vec!["c1".into(), "c3".into()])
            ]
        );
    }
}
