//! The outbox's rows and what publishes them.
//!
//! The store's relay (`QueueStore::relay`) reads a batch of rows and hands it
//! to a `Publisher`, which a network broker provides; the rows are deleted
//! only once the publisher returns.

use super::BrokerError;
use async_trait::async_trait;

/// A row of the outbox, to be published by the relay.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    pub id: i64,
    pub routing_key: String,
    pub body: String,
    /// Carried as the AMQP `message_id`, so a dead letter can be named.
    pub message_id: String,
}

#[async_trait]
pub trait Publisher: Send + Sync {
    /// Publishes every message and returns once the broker confirmed them all.
    async fn publish(&self, batch: &[OutboxMessage]) -> Result<(), BrokerError>;
}
