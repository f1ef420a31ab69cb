//! The consumer loop shared by every service.
//!
//! Each turn hands one batch to the store, which takes, applies and settles
//! it in a single transaction (`QueueStore::consume`). When the queue is empty
//! the loop sleeps until a commit signals new messages, or a short poll finds
//! messages written by another process or retries whose delay has passed.
//! When the store fails as a whole the loop backs off, doubling the pause up
//! to a few seconds, so an outage neither spins nor burns retry attempts.

use super::Service;
use crate::broker::RetryPolicy;
use crate::domain::Event;
use crate::store::Database;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Most messages taken and applied in one transaction.
    pub batch_size: usize,
    pub retry: RetryPolicy,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self { batch_size: 512, retry: RetryPolicy::default() }
    }
}

/// Longest an idle worker sleeps before looking again without a signal.
const POLL: Duration = Duration::from_millis(100);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub(super) async fn run(
    service: Service,
    store: Arc<dyn Database>,
    settings: WorkerSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut signal = store.message_signal();
    let mut backoff = FIRST_BACKOFF;
    tracing::info!(service = service.name(), queue = service.queue(), "consuming");
    while !shutdown.is_cancelled() {
        // Mark the signal seen before looking, so a commit that races with
        // this turn still wakes the next wait.
        signal.borrow_and_update();
        let consumed =
            store.consume(service.name(), service.queue(), service.effect(), settings.batch_size, settings.retry).await;
        match consumed {
            Ok(batch) => {
                backoff = FIRST_BACKOFF;
                if service == Service::Notifier {
                    batch.applied.iter().for_each(log_notification);
                }
                if batch.taken > 0 {
                    metrics::counter!("orderflow_events_applied_total", "service" => service.name())
                        .increment(batch.applied.len() as u64);
                    tracing::debug!(
                        service = service.name(),
                        taken = batch.taken,
                        retried = batch.retried,
                        dead_lettered = batch.dead_lettered,
                        "batch settled"
                    );
                    continue;
                }
                tokio::select! {
                    _ = signal.changed() => {}
                    _ = tokio::time::sleep(POLL) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
            Err(e) => {
                tracing::warn!(service = service.name(), error = %e, pause = ?backoff, "batch failed; backing off");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    tracing::info!(service = service.name(), "stopped");
    Ok(())
}

/// The notification itself: one log line per outcome, written after the
/// notifier's commit so a line is never logged for an effect that was lost.
fn log_notification(event: &Event) {
    if let Some((kind, message)) = event.notification() {
        tracing::info!(order_id = %event.order_id, customer_id = event.customer_id.as_str(), kind, "notification: {message}");
    }
}
