//! The `db` broker: the database's own `messages` table is the queue.
//!
//! Events are written in the same transaction as the effect that caused them,
//! so there is nothing to relay, and consumers take them with
//! `QueueStore::consume`. This type gives the operator's view of that queue.
//! It is the one part of `broker` that imports the store (it wraps one), so
//! the store's errors become the broker's here.

use super::{Broker, Subscription};
use crate::messaging::{BrokerError, DeadLetter, Publisher};
use crate::store::{Database, StoreError};
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

/// An unavailable store is an unavailable broker; anything else keeps its text.
impl From<StoreError> for BrokerError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(why) => BrokerError::Unavailable(why),
            StoreError::Other(e) => BrokerError::Other(e),
            other => BrokerError::Other(other.into()),
        }
    }
}

#[async_trait]
impl Broker for DbBroker {
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BrokerError> {
        Ok(self.store.dead_letters(limit).await?)
    }

    async fn replay(&self, id: Option<String>) -> Result<u64, BrokerError> {
        let id = id.map(|s| s.parse::<i64>()).transpose().map_err(|_| {
            BrokerError::Other(anyhow::anyhow!("a dead letter id here is a number, as `dlq list` shows"))
        })?;
        Ok(self.store.replay(id).await?)
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        Ok(self.store.ping().await?)
    }

    async fn subscribe(&self, _queue: &str) -> Result<Option<Box<dyn Subscription>>, BrokerError> {
        Ok(None)
    }

    fn publisher(&self) -> Option<Arc<dyn Publisher>> {
        None
    }
}
