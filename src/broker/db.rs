//! The `db` broker: the database's `messages` table used as the queue.
//!
//! Messages are written in the same transaction as the effect that caused
//! them, so there is nothing to relay. Consumers lease batches and are woken
//! by the store's commit signal, with a short poll as the fallback for
//! messages written by other processes and for retries whose delay has passed.

use super::{Broker, Consumer, Delivery, Reject};
use crate::store::{Database, DeadLetter, StoreError};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Longest a consumer sleeps before looking again without a signal.
const POLL: Duration = Duration::from_millis(100);

pub struct DbBroker {
    store: Arc<dyn Database>,
    lease: Duration,
}

impl DbBroker {
    /// `lease` is how long a taken message stays invisible to others; a
    /// consumer that dies holding it gets it redelivered after that.
    pub fn new(store: Arc<dyn Database>, lease: Duration) -> Self {
        Self { store, lease }
    }
}

#[async_trait]
impl Broker for DbBroker {
    async fn consumer(&self, queue: &str) -> Result<Box<dyn Consumer>, StoreError> {
        Ok(Box::new(DbConsumer {
            store: self.store.clone(),
            queue: queue.to_owned(),
            lease_ms: self.lease.as_millis() as i64,
            signal: self.store.message_signal(),
        }))
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.store.dead_letters(limit).await
    }

    async fn replay(&self, id: Option<i64>) -> Result<u64, StoreError> {
        self.store.replay(id).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
}

struct DbConsumer {
    store: Arc<dyn Database>,
    queue: String,
    lease_ms: i64,
    signal: watch::Receiver<u64>,
}

#[async_trait]
impl Consumer for DbConsumer {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Mark the signal seen before looking, so a commit racing with the
            // claim still wakes the next wait.
            self.signal.borrow_and_update();
            let claimed = self.store.claim(&self.queue, max, self.lease_ms).await?;
            if !claimed.is_empty() {
                return Ok(claimed
                    .into_iter()
                    .map(|m| Delivery { tag: m.id, body: m.body, attempts: m.attempts })
                    .collect());
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let nap = POLL.min(deadline - now);
            tokio::select! {
                _ = self.signal.changed() => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn ack(&mut self, tags: Vec<i64>) -> Result<(), StoreError> {
        self.store.ack(tags).await
    }

    async fn reject(&mut self, delivery: &Delivery, error: &str, action: Reject) -> Result<(), StoreError> {
        let retry_after_ms = match action {
            Reject::RetryAfter(d) => Some(d.as_millis() as i64),
            Reject::DeadLetter => None,
        };
        self.store.fail(delivery.tag, error.to_owned(), retry_after_ms).await
    }
}
