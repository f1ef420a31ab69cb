//! Listing and replaying the dead-letter queues.
//!
//! Listing takes messages with `basic.get` without acknowledging them and
//! closes the channel, which returns them all to the queue in order. Replay
//! publishes a copy to the queue it came from (through the default exchange,
//! with confirms) and only then acknowledges the dead letter.

use super::{amqp_err, dead_letter_queue, unavailable};
use crate::messaging::{BrokerError, DeadLetter, QUEUE_INVENTORY_EVENTS, QUEUE_ORDER_EVENTS};
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel};
use sha2::{Digest, Sha256};

/// Most messages one call looks at per dead-letter queue.
const SCAN_LIMIT: usize = 10_000;

/// A dead letter's id: its `message_id`, or a digest of its body for messages
/// published without one.
fn id_of(d: &lapin::message::Delivery) -> String {
    match d.properties.message_id() {
        Some(id) => id.as_str().to_owned(),
        None => format!("sha256:{:.16x}", Sha256::digest(&d.data)),
    }
}

fn death_reason(headers: Option<&FieldTable>) -> (String, u32) {
    let deaths = headers.and_then(|h| h.inner().get("x-death"));
    if let Some(AMQPValue::FieldArray(deaths)) = deaths {
        if let Some(AMQPValue::FieldTable(first)) = deaths.as_slice().first() {
            let reason = match first.inner().get("reason") {
                Some(AMQPValue::LongString(s)) => s.to_string(),
                Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
                _ => "dead-lettered".to_owned(),
            };
            let count = match first.inner().get("count") {
                Some(AMQPValue::LongLongInt(n)) => *n as u32,
                Some(AMQPValue::LongInt(n)) => *n as u32,
                _ => 1,
            };
            return (reason, count);
        }
    }
    ("dead-lettered".to_owned(), 1)
}

async fn take_all(channel: &Channel, queue: &str, limit: usize) -> Result<Vec<lapin::message::Delivery>, BrokerError> {
    let mut taken = Vec::new();
    while taken.len() < limit {
        match channel.basic_get(queue.into(), BasicGetOptions { no_ack: false }).await.map_err(amqp_err)? {
            Some(message) => taken.push(message.delivery),
            None => break,
        }
    }
    Ok(taken)
}

pub(super) async fn list(channel: &Channel, limit: usize) -> Result<Vec<DeadLetter>, BrokerError> {
    let mut letters = Vec::new();
    for queue in [QUEUE_ORDER_EVENTS, QUEUE_INVENTORY_EVENTS] {
        for d in take_all(channel, &dead_letter_queue(queue), limit.saturating_sub(letters.len())).await? {
            let (error, attempts) = death_reason(d.properties.headers().as_ref());
            letters.push(DeadLetter {
                id: id_of(&d),
                queue: queue.to_owned(),
                routing_key: d.routing_key.as_str().to_owned(),
                attempts,
                error,
                failed_at: String::new(),
                body: String::from_utf8_lossy(&d.data).into_owned(),
                fields: None,
            });
        }
    }
    // Closing the channel hands every unacknowledged message back.
    let _ = channel.close(200, "listed".into()).await;
    Ok(letters)
}

pub(super) async fn replay(channel: &Channel, id: Option<String>) -> Result<u64, BrokerError> {
    channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(amqp_err)?;
    let mut replayed = 0;
    for queue in [QUEUE_ORDER_EVENTS, QUEUE_INVENTORY_EVENTS] {
        for d in take_all(channel, &dead_letter_queue(queue), SCAN_LIMIT).await? {
            if id.as_ref().is_some_and(|want| *want != id_of(&d)) {
                continue;
            }
            let mut props = BasicProperties::default().with_delivery_mode(2);
            if let Some(message_id) = d.properties.message_id() {
                props = props.with_message_id(message_id.clone());
            }
            let confirm = channel
                .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), &d.data, props)
                .await
                .map_err(amqp_err)?
                .await
                .map_err(amqp_err)?;
            if !matches!(confirm, Confirmation::Ack(_)) {
                return Err(unavailable("RabbitMQ did not confirm a replayed message"));
            }
            channel.basic_ack(d.delivery_tag, BasicAckOptions::default()).await.map_err(amqp_err)?;
            replayed += 1;
        }
    }
    let _ = channel.close(200, "replayed".into()).await;
    Ok(replayed)
}
