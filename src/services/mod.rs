//! The background services: inventory and notifier.
//!
//! Both are the same loop (`worker`) around a different "handle this batch"
//! step: the inventory service reserves stock for `OrderPlaced` events, the
//! notifier tells the customer the outcome and completes reserved orders.

mod worker;

pub use worker::WorkerSettings;

use crate::broker::Broker;
use crate::domain::Event;
use crate::store::{Handled, Store, StoreError, QUEUE_INVENTORY_EVENTS, QUEUE_ORDER_EVENTS};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A consuming role: which queue it reads and what it does with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Inventory,
    Notifier,
}

impl Service {
    /// The consumer name, also the inbox key of its applied events.
    pub fn name(self) -> &'static str {
        match self {
            Service::Inventory => "inventory",
            Service::Notifier => "notifier",
        }
    }

    pub fn queue(self) -> &'static str {
        match self {
            Service::Inventory => QUEUE_ORDER_EVENTS,
            Service::Notifier => QUEUE_INVENTORY_EVENTS,
        }
    }

    async fn apply(self, store: &dyn Store, events: Vec<Event>) -> Result<Vec<Handled>, StoreError> {
        match self {
            Service::Inventory => store.reserve(self.name(), events).await,
            Service::Notifier => store.notify(self.name(), events).await,
        }
    }

    /// Consumes until `shutdown` fires, then returns once its batch is settled.
    pub async fn run(
        self,
        store: Arc<dyn Store>,
        broker: Arc<dyn Broker>,
        settings: WorkerSettings,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        worker::run(self, store, broker, settings, shutdown).await
    }
}
