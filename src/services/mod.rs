//! The background services: inventory, notifier and relay.
//!
//! The inventory service and the notifier are the same loop (`worker`) around
//! a different effect: the inventory service reserves stock for `OrderPlaced`
//! events, the notifier tells the customer the outcome and completes reserved
//! orders. The relay publishes the outbox when a network broker carries the
//! events.

pub mod pruner;
mod relay;
pub mod replay;
mod worker;

pub use relay::run as run_relay;
pub use worker::WorkerSettings;

use crate::broker::Broker;
use crate::messaging::{QUEUE_INVENTORY_EVENTS, QUEUE_ORDER_EVENTS};
use crate::store::{Database, Effect};
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

    pub fn effect(self) -> Effect {
        match self {
            Service::Inventory => Effect::Reserve,
            Service::Notifier => Effect::Notify,
        }
    }

    /// Consumes until `shutdown` fires, then returns once its batch is settled.
    pub async fn run(
        self,
        store: Arc<dyn Database>,
        broker: Arc<dyn Broker>,
        settings: WorkerSettings,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        worker::run(self, store, broker, settings, shutdown).await
    }
}
