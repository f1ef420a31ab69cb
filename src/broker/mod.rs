//! The Broker trait: where events wait between the services, and what
//! becomes of the ones that cannot be handled.
//!
//! Two shapes hide behind it. With the `db` broker the queue is the
//! database's `messages` table: a consumer takes a batch, applies it and
//! settles each message in the same transaction of the store as its effect
//! (`QueueStore::consume`), so nothing needs relaying and a worker killed
//! mid-batch leaves every message it had not settled where it was. With a
//! network broker (`amqp://`, `redis://`) the `messages` table is the
//! outbox: a relay publishes it with confirms (`Publisher`), and consumers
//! take deliveries
//! from a `Subscription`, apply them in a store transaction and only then
//! acknowledge them.
//!
//! What the store shares with brokers (the queue names, outbox rows, dead
//! letters, the retry policy, `Publisher` and `BrokerError`) is in
//! [`crate::messaging`]. Only the `db` broker imports the store, because it
//! wraps one; the store never imports this module.

pub mod amqp;
mod db;
mod redis;

pub use self::redis::{RedisBroker, RedisSettings};
pub use amqp::AmqpBroker;
pub use db::DbBroker;

use crate::messaging::{BrokerError, DeadLetter, Publisher};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BrokerError>;
    /// Sends dead letters back to their queues; `None` replays them all.
    async fn replay(&self, id: Option<String>) -> Result<u64, BrokerError>;
    async fn ping(&self) -> Result<(), BrokerError>;
    /// Checks, before a process starts its roles, that the broker may be
    /// used at all: `Refused` stops the process (a Redis that could lose
    /// acknowledged events); an unreachable broker is only waited for.
    async fn preflight(&self) -> Result<(), BrokerError> {
        Ok(())
    }
    /// Deliveries from `queue`, or `None` when consumers take the store's own
    /// queue in place (the `db` broker).
    async fn subscribe(&self, queue: &str) -> Result<Option<Box<dyn Subscription>>, BrokerError>;
    /// Where the relay publishes the outbox, or `None` when there is no
    /// outbox to relay (the `db` broker).
    fn publisher(&self) -> Option<Arc<dyn Publisher>>;
    /// Per queue this broker can look into, when its oldest message still
    /// waiting was written (Unix milliseconds), or `None` when none waits.
    /// Empty for a broker that cannot tell (RabbitMQ) and for the `db` broker,
    /// whose queues the store reports (`PipelineStats::oldest_messages`).
    async fn waiting_since(&self) -> Result<Vec<(&'static str, Option<i64>)>, BrokerError> {
        Ok(Vec::new())
    }
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
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BrokerError>;
    async fn settle(&mut self, settled: Vec<(u64, Settle)>) -> Result<(), BrokerError>;
}
