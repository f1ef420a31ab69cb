//! The webhook delivery queue: what the notifier's delivery task needs from
//! a store (docs/architecture.md#the-webhook-delivery-queue).
//!
//! The notifier writes a delivery with each notification, in the same
//! transaction, when it has a webhook URL (`Effect::Notify`). The delivery
//! task then claims due deliveries, POSTs them and settles each: deleted once
//! delivered, put back with a later due time, or moved to the dead letters.
//! Claiming leases a delivery (its due time moves past the lease), so two
//! notifier processes never send the same delivery at once, and one that
//! died mid-request leaves its deliveries to be taken again once the lease
//! ends: at least once, never lost.

use super::StoreError;
use async_trait::async_trait;
use serde::Serialize;
use std::time::Duration;

/// A delivery claimed for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    /// The `webhook-id`: the id of the event that made the notification,
    /// the same on every attempt.
    pub id: String,
    /// The JSON body, the same on every attempt.
    pub body: String,
    /// Failed attempts so far.
    pub attempts: i64,
    /// When the notification was recorded (ms since the epoch).
    pub created_at: i64,
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// The receiver took it (2xx): the delivery is deleted.
    Delivered,
    /// Try again, not before `at` (ms since the epoch).
    Retry { at: i64, error: String },
    /// Give up: kept as a dead letter with its error.
    Dead { error: String },
}

/// A delivery that was given up on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookDeadLetter {
    pub id: String,
    pub body: serde_json::Value,
    pub attempts: i64,
    pub error: String,
    pub created_at: String,
    pub failed_at: String,
}

#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// Claims up to `max` deliveries due now, oldest due first, each leased
    /// for `lease`: no other claim takes it before the lease ends.
    async fn claim_webhooks(&self, max: usize, lease: Duration) -> Result<Vec<WebhookDelivery>, StoreError>;
    /// Settles a claimed delivery; one settled already (by another process
    /// whose lease had ended) is left as it is.
    async fn settle_webhook(&self, id: &str, outcome: WebhookOutcome) -> Result<(), StoreError>;
    /// Deliveries waiting (due or not, claimed or not).
    async fn webhooks_waiting(&self) -> Result<i64, StoreError>;
    /// Dead-lettered deliveries, oldest first.
    async fn webhook_dead_letters(&self, limit: usize) -> Result<Vec<WebhookDeadLetter>, StoreError>;
    /// Puts dead-lettered deliveries back in the queue, due now, with their
    /// age and attempts reset; `None` replays them all. Returns how many.
    async fn replay_webhooks(&self, id: Option<String>) -> Result<u64, StoreError>;
}

/// A dead letter's body as stored: JSON, or (never written so) the text.
pub(crate) fn stored_body(body: String) -> serde_json::Value {
    serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body))
}
