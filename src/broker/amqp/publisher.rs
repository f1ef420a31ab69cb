//! Publishing with confirms, many in flight.
//!
//! A batch is published on one confirm-mode channel without waiting between
//! messages; then every confirm is awaited together. Awaiting each confirm
//! before the next publish would cap throughput at a few hundred per second.
//! Messages are persistent and carry their event id as `message_id`.

use super::{amqp_err, exchange_for, unavailable, Link};
use crate::broker::Publisher;
use crate::store::{OutboxMessage, StoreError};
use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel};
use std::sync::Arc;
use tokio::sync::Mutex;

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
    async fn publish(&self, batch: &[OutboxMessage]) -> Result<(), StoreError> {
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

async fn publish_all(channel: &Channel, batch: &[OutboxMessage]) -> Result<(), StoreError> {
    // Every publish is started before any is awaited: lapin then writes the
    // whole batch to the socket in a few system calls, instead of one
    // hand-over to its I/O thread (and back) per message.
    let publishes = batch.iter().map(|m| {
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(m.message_id.as_str().into());
        channel.basic_publish(
            exchange_for(&m.routing_key).into(),
            m.routing_key.as_str().into(),
            BasicPublishOptions::default(),
            m.body.as_bytes(),
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
