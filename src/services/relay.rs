//! The outbox relay: publishes `messages` rows to the broker.
//!
//! Each turn publishes a batch with confirms and deletes the rows only once
//! every message in it was confirmed, so a relay killed at any point loses
//! nothing (a batch may be published again; consumers skip what they have
//! seen). It wakes on the store's commit signal, so an order's event leaves
//! milliseconds after its commit, with a short poll for other processes'.
//! When spans are exported, each event's publishing has a span in its
//! order's trace, from the batch's start to the broker's confirm.

use crate::broker::Broker;
use crate::messaging::{BrokerError, OutboxMessage, Publisher};
use crate::store::Database;
use crate::traces;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const POLL: Duration = Duration::from_millis(50);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Relays until `shutdown`; returns at once for brokers without an outbox.
pub async fn run(
    store: Arc<dyn Database>,
    broker: Arc<dyn Broker>,
    batch_size: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(publisher) = broker.publisher() else {
        return Ok(());
    };
    let mut signal = store.message_signal();
    let mut backoff = FIRST_BACKOFF;
    tracing::info!("relaying the outbox");
    while !shutdown.is_cancelled() {
        signal.borrow_and_update();
        let relayed = if traces::exporting() {
            store.relay(batch_size, &Traced(publisher.as_ref())).await
        } else {
            store.relay(batch_size, publisher.as_ref()).await
        };
        match relayed {
            Ok(0) => {
                backoff = FIRST_BACKOFF;
                tokio::select! {
                    _ = signal.changed() => {}
                    _ = tokio::time::sleep(POLL) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
            Ok(n) => {
                backoff = FIRST_BACKOFF;
                metrics::counter!("orderflow_relayed_total").increment(n as u64);
            }
            Err(e) => {
                tracing::warn!(error = %e, pause = ?backoff, "relaying failed; backing off");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    tracing::info!("relay stopped");
    Ok(())
}

/// A publisher whose every message has a span while it is published.
struct Traced<'a>(&'a dyn Publisher);

#[async_trait]
impl Publisher for Traced<'_> {
    async fn publish(&self, batch: &[OutboxMessage]) -> Result<(), BrokerError> {
        let _spans: Vec<_> = batch.iter().filter_map(|m| traces::relay_span(&m.body)).collect();
        self.0.publish(batch).await
    }
}
