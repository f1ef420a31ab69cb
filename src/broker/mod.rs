//! The Broker trait: where events wait between the services, and what
//! becomes of the ones that cannot be handled.
//!
//! Two shapes hide behind it. With the `db` broker the queue is the
//! database's `messages` table: a consumer takes a batch, applies it and
//! settles each message in the same transaction of the store as its effect
//! (`QueueStore::consume`), so nothing needs relaying and a worker killed
//! mid-batch leaves every message it had not settled where it was. With a
//! network broker (`amqp://`) the `messages` table is the outbox: a relay
//! publishes it with confirms (`Publisher`), and consumers take deliveries
//! from a `Subscription`, apply them in a store transaction and only then
//! acknowledge them.

pub mod amqp;
mod db;

pub use amqp::AmqpBroker;
pub use db::DbBroker;

use crate::store::{DeadLetter, OutboxMessage, StoreError};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;
    /// Sends dead letters back to their queues; `None` replays them all.
    async fn replay(&self, id: Option<String>) -> Result<u64, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
    /// Deliveries from `queue`, or `None` when consumers take the store's own
    /// queue in place (the `db` broker).
    async fn subscribe(&self, queue: &str) -> Result<Option<Box<dyn Subscription>>, StoreError>;
    /// Where the relay publishes the outbox, or `None` when there is no
    /// outbox to relay (the `db` broker).
    fn publisher(&self) -> Option<Arc<dyn Publisher>>;
}

/// One message handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub tag: u64,
    pub body: Vec<u8>,
}

/// How a consumer settles a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// The effect is committed: remove the message.
    Ack,
    /// Not applied: deliver it again (the broker dead-letters it once its
    /// delivery limit is reached).
    Retry,
    /// Retrying cannot help: dead-letter it now.
    DeadLetter,
}

#[async_trait]
pub trait Subscription: Send {
    /// Waits up to `wait` for a delivery, then takes up to `max` of those
    /// already at hand; an empty batch means none arrived in time.
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, StoreError>;
    async fn settle(&mut self, settled: Vec<(u64, Settle)>) -> Result<(), StoreError>;
}

#[async_trait]
pub trait Publisher: Send + Sync {
    /// Publishes every message and returns once the broker confirmed them all.
    async fn publish(&self, batch: &[OutboxMessage]) -> Result<(), StoreError>;
}

/// What to do with a message that was not handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Deliver it again after this delay.
    RetryAfter(Duration),
    /// Move it to the dead-letter queue: retrying cannot help.
    DeadLetter,
}

/// Retries with exponential backoff, then the dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Failed deliveries after which a message is dead-lettered.
    pub max_attempts: u32,
    /// Delay before the first retry; it doubles each time, up to a minute.
    pub base: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 5, base: Duration::from_millis(200) }
    }
}

impl RetryPolicy {
    /// What to do with a message that has now failed `attempts` times.
    pub fn after_failure(&self, attempts: u32) -> Reject {
        if attempts >= self.max_attempts {
            Reject::DeadLetter
        } else {
            let factor = 1u32 << attempts.saturating_sub(1).min(10);
            Reject::RetryAfter((self.base * factor).min(Duration::from_secs(60)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_dead_letters() {
        let p = RetryPolicy { max_attempts: 5, base: Duration::from_millis(100) };
        assert_eq!(p.after_failure(1), Reject::RetryAfter(Duration::from_millis(100)));
        assert_eq!(p.after_failure(2), Reject::RetryAfter(Duration::from_millis(200)));
        assert_eq!(p.after_failure(4), Reject::RetryAfter(Duration::from_millis(800)));
        assert_eq!(p.after_failure(5), Reject::DeadLetter);
        assert_eq!(p.after_failure(9), Reject::DeadLetter);
        let slow = RetryPolicy { max_attempts: 50, base: Duration::from_secs(1) };
        assert_eq!(slow.after_failure(30), Reject::RetryAfter(Duration::from_secs(60)));
    }
}
