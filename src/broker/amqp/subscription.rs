//! Consuming one queue in batches.
//!
//! A subscription owns a channel with a prefetch limit. `next_batch` waits for
//! the first delivery, then takes whatever else is already buffered, so a busy
//! queue is handled a few hundred messages per store transaction. `settle`
//! rejects what must be retried or dead-lettered one by one, then acknowledges
//! the rest with one multiple-ack. A broken channel is dropped and opened
//! again on the next call; RabbitMQ redelivers whatever was not acknowledged.

use super::{amqp_err, unavailable, Link};
use crate::broker::{Delivery, Settle, Subscription};
use crate::messaging::BrokerError;
use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use std::sync::Arc;
use std::time::Duration;

/// How long a batch waits for more deliveries after its first.
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

pub(super) struct AmqpSubscription {
    link: Arc<Link>,
    queue: String,
    prefetch: u16,
    live: Option<(Channel, Consumer)>,
}

impl AmqpSubscription {
    pub(super) fn new(link: Arc<Link>, queue: &str, prefetch: u16) -> Self {
        Self { link, queue: queue.to_owned(), prefetch, live: None }
    }

    async fn open(&mut self) -> Result<&mut (Channel, Consumer), BrokerError> {
        if self.live.as_ref().is_some_and(|(c, _)| !c.status().connected()) {
            self.live = None;
        }
        if self.live.is_none() {
            let channel = self.link.channel().await?;
            channel.basic_qos(self.prefetch, BasicQosOptions::default()).await.map_err(amqp_err)?;
            let consumer = channel
                .basic_consume(
                    self.queue.as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(amqp_err)?;
            tracing::info!(queue = %self.queue, "subscribed");
            self.live = Some((channel, consumer));
        }
        Ok(self.live.as_mut().expect("just opened"))
    }

    fn broken(&mut self, why: String) -> BrokerError {
        self.live = None;
        unavailable(why)
    }
}

fn to_delivery(d: lapin::message::Delivery) -> Delivery {
    Delivery { tag: d.delivery_tag, body: d.data }
}

#[async_trait]
impl Subscription for AmqpSubscription {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BrokerError> {
        let (_, consumer) = self.open().await?;
        let first = match tokio::time::timeout(wait, consumer.next()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(None) => return Err(self.broken("the consumer was cancelled".into())),
            Ok(Some(Err(e))) => return Err(self.broken(format!("consuming: {e}"))),
            Ok(Some(Ok(d))) => d,
        };
        // Linger a moment for the rest of a burst: one transaction for a
        // hundred deliveries costs about what one for a single delivery does.
        let mut batch = vec![to_delivery(first)];
        let linger = tokio::time::Instant::now() + LINGER;
        while batch.len() < max {
            let next = match consumer.next().now_or_never() {
                Some(next) => next,
                None => match tokio::time::timeout_at(linger, consumer.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
            };
            match next {
                Some(Ok(d)) => batch.push(to_delivery(d)),
                _ => break,
            }
        }
        Ok(batch)
    }

    async fn settle(&mut self, settled: Vec<(u64, Settle)>) -> Result<(), BrokerError> {
        let Some((channel, _)) = self.live.as_ref() else {
            return Err(unavailable("the channel closed before the batch was settled"));
        };
        let channel = channel.clone();
        let mut last_ack = None;
        for (tag, settle) in settled {
            let requeue = match settle {
                Settle::Ack => {
                    last_ack = last_ack.max(Some(tag));
                    continue;
                }
                Settle::Retry => true,
                Settle::DeadLetter => false,
            };
            if let Err(e) = channel.basic_nack(tag, BasicNackOptions { multiple: false, requeue }).await {
                return Err(self.broken(format!("rejecting: {e}")));
            }
        }
        if let Some(tag) = last_ack {
            if let Err(e) = channel.basic_ack(tag, BasicAckOptions { multiple: true }).await {
                return Err(self.broken(format!("acknowledging: {e}")));
            }
        }
        Ok(())
    }
}
