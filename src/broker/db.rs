//! The `db` broker: the database's own `messages` table is the queue.
//!
//! Events are written in the same transaction as the effect that caused them,
//! so there is nothing to relay, and consumers take them with
//! `QueueStore::consume`. This type gives the operator's view of that queue.

use super::{Broker, Publisher, Subscription};
use crate::store::{Database, DeadLetter, StoreError};
use async_trait::async_trait;
use std::sync::Arc;

pub struct DbBroker {
    store: Arc<dyn Database>,
}

impl DbBroker {
    pub fn new(store: Arc<dyn Database>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl Broker for DbBroker {
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.store.dead_letters(limit).await
    }

    async fn replay(&self, id: Option<String>) -> Result<u64, StoreError> {
        let id = id.map(|s| s.parse::<i64>()).transpose().map_err(|_| {
            StoreError::Other(anyhow::anyhow!("a dead letter id here is a number, as `dlq list` shows"))
        })?;
        self.store.replay(id).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    async fn subscribe(&self, _queue: &str) -> Result<Option<Box<dyn Subscription>>, StoreError> {
        Ok(None)
    }

    fn publisher(&self) -> Option<Arc<dyn Publisher>> {
        None
    }
}
