//! The consumer loop shared by every service.
//!
//! It takes a batch, parses it (a body that is not a valid event is poison and
//! goes to the dead-letter queue at once), applies the batch in one store
//! transaction, and only then acknowledges. An event the store asks to retry
//! is rejected with exponential backoff until it has been delivered
//! `max_attempts` times, then dead-lettered. A store that fails as a whole is
//! retried with backoff while the batch is held, so an outage does not burn
//! the messages' attempts. Panics in the handler are caught and counted as a
//! failed delivery.

use super::Service;
use crate::broker::{Broker, Consumer, Delivery, Reject};
use crate::domain::Event;
use crate::store::{Handled, Store, StoreError};
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub batch_size: usize,
    pub max_attempts: u32,
    pub retry_base: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self { batch_size: 512, max_attempts: 5, retry_base: Duration::from_millis(200) }
    }
}

impl WorkerSettings {
    /// What to do with a delivery that failed on its `attempts`-th try.
    fn after_failure(&self, attempts: u32) -> Reject {
        if attempts >= self.max_attempts {
            Reject::DeadLetter
        } else {
            let factor = 1u32 << attempts.saturating_sub(1).min(10);
            Reject::RetryAfter((self.retry_base * factor).min(Duration::from_secs(60)))
        }
    }
}

/// How a batch went, for the logs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct BatchOutcome {
    pub acked: usize,
    pub retried: usize,
    pub dead_lettered: usize,
}

const IDLE_WAIT: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub(super) async fn run(
    service: Service,
    store: Arc<dyn Store>,
    broker: Arc<dyn Broker>,
    settings: WorkerSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(50);
    let mut consumer = loop {
        match broker.consumer(service.queue()).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(service = service.name(), error = %e, "cannot start consuming; retrying");
                if sleep_or_stop(&mut backoff, &shutdown).await {
                    return Ok(());
                }
            }
        }
    };
    tracing::info!(service = service.name(), queue = service.queue(), "consuming");
    while !shutdown.is_cancelled() {
        let batch = match consumer.next_batch(settings.batch_size, IDLE_WAIT).await {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(service = service.name(), error = %e, "receiving failed; backing off");
                sleep_or_stop(&mut backoff, &shutdown).await;
                continue;
            }
        };
        if batch.is_empty() {
            continue;
        }
        let (events, deliveries) = match set_poison_aside(service, consumer.as_mut(), &batch).await {
            Ok(parsed) => parsed,
            Err(e) => {
                tracing::warn!(service = service.name(), error = %e, "rejecting poison failed; the batch comes back later");
                continue;
            }
        };
        // Hold the batch until the store takes it; leaving on shutdown without
        // an ack is safe, the messages are delivered again.
        while !deliveries.is_empty() {
            match apply_batch(service, store.as_ref(), consumer.as_mut(), &deliveries, &events, &settings).await {
                Ok(outcome) => {
                    tracing::debug!(service = service.name(), ?outcome, "batch done");
                    backoff = Duration::from_millis(50);
                    break;
                }
                Err(e) => {
                    tracing::warn!(service = service.name(), error = %e, "batch failed; retrying");
                    if sleep_or_stop(&mut backoff, &shutdown).await {
                        break;
                    }
                }
            }
        }
    }
    tracing::info!(service = service.name(), "stopped");
    Ok(())
}

/// Sleeps for `backoff` (doubling it for next time); true if shutdown came first.
async fn sleep_or_stop(backoff: &mut Duration, shutdown: &CancellationToken) -> bool {
    let nap = *backoff;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    tokio::select! {
        _ = tokio::time::sleep(nap) => false,
        _ = shutdown.cancelled() => true,
    }
}

/// Dead-letters the deliveries that are not valid events and returns the rest, parsed.
async fn set_poison_aside<'a>(
    service: Service,
    consumer: &mut dyn Consumer,
    batch: &'a [Delivery],
) -> Result<(Vec<Event>, Vec<&'a Delivery>), StoreError> {
    let mut events = Vec::with_capacity(batch.len());
    let mut parsed = Vec::with_capacity(batch.len());
    for delivery in batch {
        match Event::from_json(&delivery.body) {
            Ok(event) => {
                events.push(event);
                parsed.push(delivery);
            }
            Err(e) => {
                tracing::warn!(service = service.name(), tag = delivery.tag, error = %e, "poison message dead-lettered");
                consumer.reject(delivery, &format!("invalid event: {e}"), Reject::DeadLetter).await?;
            }
        }
    }
    Ok((events, parsed))
}

/// Applies a batch of events in one store transaction, then settles every
/// delivery. Returns an error only when the store failed as a whole; then
/// nothing was acknowledged or rejected.
async fn apply_batch(
    service: Service,
    store: &dyn Store,
    consumer: &mut dyn Consumer,
    parsed: &[&Delivery],
    events: &[Event],
    settings: &WorkerSettings,
) -> Result<BatchOutcome, StoreError> {
    let mut outcome = BatchOutcome::default();
    let results = match AssertUnwindSafe(service.apply(store, events.to_vec())).catch_unwind().await {
        Ok(Ok(results)) => results,
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            tracing::error!(service = service.name(), "handler panicked; the batch will be retried");
            let reason = "handler panicked".to_owned();
            vec![Handled::Retry(reason); parsed.len()]
        }
    };
    let mut acks = Vec::with_capacity(parsed.len());
    for ((delivery, event), result) in parsed.iter().zip(events).zip(results) {
        match result {
            Handled::Done => {
                if service == Service::Notifier {
                    log_notification(event);
                }
                acks.push(delivery.tag)
            }
            Handled::Duplicate => acks.push(delivery.tag),
            Handled::Retry(reason) => {
                let action = settings.after_failure(delivery.attempts);
                tracing::warn!(service = service.name(), tag = delivery.tag, attempts = delivery.attempts, %reason, ?action, "event not applied");
                consumer.reject(delivery, &reason, action).await?;
                match action {
                    Reject::DeadLetter => outcome.dead_lettered += 1,
                    Reject::RetryAfter(_) => outcome.retried += 1,
                }
            }
        }
    }
    outcome.acked = acks.len();
    if !acks.is_empty() {
        consumer.ack(acks).await?;
    }
    metrics::counter!("orderflow_events_processed_total", "service" => service.name()).increment(outcome.acked as u64);
    Ok(outcome)
}

/// The notification itself: one log line per outcome, written after the
/// notifier's commit so a line is never logged for an effect that was lost.
fn log_notification(event: &Event) {
    if let Some((kind, message)) = event.notification() {
        tracing::info!(order_id = %event.order_id, customer_id = event.customer_id.as_str(), kind, "notification: {message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_dead_letters() {
        let s = WorkerSettings { batch_size: 10, max_attempts: 5, retry_base: Duration::from_millis(100) };
        assert_eq!(s.after_failure(1), Reject::RetryAfter(Duration::from_millis(100)));
        assert_eq!(s.after_failure(2), Reject::RetryAfter(Duration::from_millis(200)));
        assert_eq!(s.after_failure(4), Reject::RetryAfter(Duration::from_millis(800)));
        assert_eq!(s.after_failure(5), Reject::DeadLetter);
        assert_eq!(s.after_failure(9), Reject::DeadLetter);
    }
}
