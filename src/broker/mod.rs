//! The Broker trait: how events travel from the store to the consumers.
//!
//! A consumer takes batches of deliveries from one queue, acknowledges the
//! ones whose effects are committed, and rejects the rest for a later retry
//! or for the dead-letter queue. The services see only these traits, so the
//! `db` broker (the store's own queue) and a network broker are interchangeable.

mod db;

pub use db::DbBroker;

use crate::store::{DeadLetter, StoreError};
use async_trait::async_trait;
use std::time::Duration;

/// One message handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Identifies the delivery for `ack` and `reject`.
    pub tag: i64,
    pub body: Vec<u8>,
    /// How many times it has been delivered, this time included.
    pub attempts: u32,
}

/// What to do with a message that was not handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Deliver it again after this delay.
    RetryAfter(Duration),
    /// Move it to the dead-letter queue: retrying cannot help.
    DeadLetter,
}

#[async_trait]
pub trait Consumer: Send {
    /// Waits up to `wait` for messages and takes at most `max` of them; an
    /// empty batch means none arrived in time.
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, StoreError>;
    async fn ack(&mut self, tags: Vec<i64>) -> Result<(), StoreError>;
    async fn reject(&mut self, delivery: &Delivery, error: &str, action: Reject) -> Result<(), StoreError>;
}

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    async fn consumer(&self, queue: &str) -> Result<Box<dyn Consumer>, StoreError>;
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;
    /// Sends dead letters back to their queues; `None` replays them all.
    async fn replay(&self, id: Option<i64>) -> Result<u64, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
}
