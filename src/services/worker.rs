//! The consumer loop shared by every service, in two shapes.
//!
//! With the `db` broker each turn hands one batch to the store, which takes,
//! applies and settles it, each message in the same transaction as its
//! effect (`QueueStore::consume`).
//! When the queue is empty the loop sleeps until a commit signals new
//! messages, or a short poll finds messages written by another process or
//! retries whose delay has passed.
//!
//! With a network broker each turn takes a batch of deliveries (a message
//! carries one event or several), dead-letters the ones that are not valid
//! events, applies the rest in store transactions of about `batch_size`
//! events, whole messages each, and settles each transaction's messages with
//! the broker only after it commits. A batch is held while the store is
//! down, so an outage does not burn delivery attempts.
//!
//! Every line logged about an event names its order and carries its
//! `trace_id`; when spans are exported each event's handling also gets a
//! span in the order's trace (`crate::traces`).
//!
//! Either way a failure backs off, doubling the pause up to a few seconds.
//! After each commit the orders whose status it changed are announced to the
//! order cache, when there is one (`crate::cache`).

use super::Service;
use crate::broker::{Broker, Delivery, Settle, Subscription};
use crate::cache::OrderCache;
use crate::domain::{Event, EventType, Status};
use crate::messaging::RetryPolicy;
use crate::store::{Database, Effect, Handled, Store, StoreError};
use crate::traces;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Most messages taken at once, and applied in one transaction (the
    /// SQLite store applies them in parts of its own).
    pub batch_size: usize,
    pub retry: RetryPolicy,
    /// Told of each status change after its commit (`--cache-url`).
    pub cache: Option<OrderCache>,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self { batch_size: 512, retry: RetryPolicy::default(), cache: None }
    }
}

/// Longest an idle worker sleeps before looking again without a signal.
const POLL: Duration = Duration::from_millis(100);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long a subscription waits for a delivery before looking at shutdown.
const RECEIVE_WAIT: Duration = Duration::from_millis(250);

pub(super) async fn run(
    service: Service,
    store: Arc<dyn Database>,
    broker: Arc<dyn Broker>,
    settings: WorkerSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = FIRST_BACKOFF;
    loop {
        match broker.subscribe(service.queue()).await {
            Ok(None) => return run_in_store(service, store, settings, shutdown).await,
            Ok(Some(subscription)) => return run_subscribed(service, store, subscription, settings, shutdown).await,
            Err(e) => {
                tracing::warn!(service = service.name(), error = %e, "cannot subscribe; backing off");
                if pause(&mut backoff, &shutdown).await {
                    return Ok(());
                }
            }
        }
    }
}

/// Sleeps for `backoff`, doubling it for next time; true if shutdown came first.
async fn pause(backoff: &mut Duration, shutdown: &CancellationToken) -> bool {
    let nap = *backoff;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    tokio::select! {
        _ = tokio::time::sleep(nap) => false,
        _ = shutdown.cancelled() => true,
    }
}

async fn run_in_store(
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
                // The store parsed and applied the events itself: their spans
                // only record that they were handled, and when.
                if traces::exporting() {
                    batch.applied.iter().for_each(|e| drop(traces::event_span(service.name(), &mut e.clone())));
                }
                announce(settings.cache.as_ref(), service, &batch.applied).await;
                log_applied(service, &batch.applied);
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
                pause(&mut backoff, &shutdown).await;
            }
        }
    }
    tracing::info!(service = service.name(), "stopped");
    Ok(())
}

async fn run_subscribed(
    service: Service,
    store: Arc<dyn Database>,
    mut subscription: Box<dyn Subscription>,
    settings: WorkerSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = FIRST_BACKOFF;
    tracing::info!(service = service.name(), queue = service.queue(), "consuming from the broker");
    while !shutdown.is_cancelled() {
        let batch = match subscription.next_batch(settings.batch_size, RECEIVE_WAIT).await {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(service = service.name(), error = %e, "receiving failed; backing off");
                pause(&mut backoff, &shutdown).await;
                continue;
            }
        };
        if batch.is_empty() {
            continue;
        }
        let mut settled = Vec::with_capacity(batch.len());
        let mut parsed = Vec::with_capacity(batch.len());
        for Delivery { tag, body } in batch {
            match Event::many_from_json(&body) {
                Ok(events) => parsed.push((tag, events)),
                Err(e) => {
                    tracing::warn!(service = service.name(), tag, error = %e, "poison message dead-lettered");
                    settled.push((tag, Settle::DeadLetter));
                }
            }
        }
        // A message may carry many events: apply them in transactions of
        // about `batch_size` events, whole messages each.
        let mut applied = Vec::new();
        let mut stopping = false;
        let mut rest = &parsed[..];
        while !rest.is_empty() {
            let mut take = 0;
            let mut events = Vec::new();
            while take < rest.len() && (take == 0 || events.len() + rest[take].1.len() <= settings.batch_size) {
                events.extend(rest[take].1.iter().cloned());
                take += 1;
            }
            // Each event's span lasts until its transaction is settled; the
            // events the effect causes are in that span's trace.
            let spans: Vec<_> = events.iter_mut().filter_map(|e| traces::event_span(service.name(), e)).collect();
            let (messages, tail) = rest.split_at(take);
            rest = tail;
            // Hold the messages until the store takes them. Leaving on shutdown
            // without settling them is safe: the broker delivers them again.
            let mut results = loop {
                match apply(store.as_ref(), service, events.clone()).await {
                    Ok(results) => break results.into_iter(),
                    Err(e) => {
                        tracing::warn!(service = service.name(), error = %e, "store failed; holding the batch");
                        if pause(&mut backoff, &shutdown).await {
                            stopping = true;
                            break Vec::new().into_iter();
                        }
                    }
                }
            };
            if stopping {
                break;
            }
            let applied_before = applied.len();
            for (tag, events) in messages {
                // A message is redelivered whole if any of its events must be
                // tried again; the ones applied now are skipped as duplicates then.
                let mut settle = Settle::Ack;
                for event in events {
                    match results.next().expect("a result for every event") {
                        Handled::Done => applied.push(event.clone()),
                        Handled::Duplicate => {}
                        Handled::Retry(reason) => {
                            tracing::warn!(
                                service = service.name(),
                                tag,
                                order_id = %event.order_id,
                                trace_id = event.trace_id().map(display),
                                %reason,
                                "event not applied; redelivering"
                            );
                            settle = Settle::Retry;
                        }
                    }
                }
                settled.push((*tag, settle));
            }
            announce(settings.cache.as_ref(), service, &applied[applied_before..]).await;
            log_applied(service, &applied[applied_before..]);
            // Settle as each transaction commits, so the broker can deliver
            // more while the rest of the batch is applied.
            settle(subscription.as_mut(), std::mem::take(&mut settled), &mut backoff, service).await;
            drop(spans);
        }
        settle(subscription.as_mut(), settled, &mut backoff, service).await;
        if service == Service::Notifier {
            applied.iter().for_each(log_notification);
        }
        metrics::counter!("orderflow_events_applied_total", "service" => service.name())
            .increment(applied.len() as u64);
        if stopping {
            break;
        }
    }
    tracing::info!(service = service.name(), "stopped");
    Ok(())
}

async fn settle(
    subscription: &mut dyn Subscription,
    settled: Vec<(u64, Settle)>,
    backoff: &mut Duration,
    service: Service,
) {
    if settled.is_empty() {
        return;
    }
    match subscription.settle(settled).await {
        Ok(()) => *backoff = FIRST_BACKOFF,
        Err(e) => tracing::warn!(service = service.name(), error = %e, "settling failed; the broker redelivers"),
    }
}

/// Tells the cache which orders `applied` (just committed) moved on from
/// which status. Best effort: a failure is counted by the cache, and the
/// entry it leaves expires (`cache::FRESH_FOR`).
async fn announce(cache: Option<&OrderCache>, service: Service, applied: &[Event]) {
    let Some(cache) = cache else { return };
    let moved = applied.iter().filter_map(|e| status_left(service, e.event_type).map(|left| (e.order_id, left)));
    cache.moved_past(moved).await;
}

/// The status an order leaves when `service` applies an event of this type:
/// the inventory service decides placed orders, the notifier completes
/// reserved ones (a rejection it only reports).
fn status_left(service: Service, event: EventType) -> Option<Status> {
    match (service, event) {
        (Service::Inventory, EventType::OrderPlaced) => Some(Status::Placed),
        (Service::Notifier, EventType::InventoryReserved) => Some(Status::Reserved),
        _ => None,
    }
}

async fn apply(store: &dyn Store, service: Service, events: Vec<Event>) -> Result<Vec<Handled>, StoreError> {
    match service.effect() {
        Effect::Reserve => store.reserve(service.name(), events).await,
        Effect::Notify => store.notify(service.name(), events).await,
    }
}

/// A debug line per event applied, for following one order through the
/// services; skipped whole when debug lines are off.
fn log_applied(service: Service, applied: &[Event]) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    for event in applied {
        tracing::debug!(
            service = service.name(),
            order_id = %event.order_id,
            event_type = ?event.event_type,
            trace_id = event.trace_id().map(display),
            "event applied"
        );
    }
}

/// The notification itself: one log line per outcome, written after the
/// notifier's commit so a line is never logged for an effect that was lost.
/// Its fields say what the customer is told (the `notifications` table keeps
/// the text). The message is a fixed word and the fields are quoted only where
/// they may hold spaces: the log formatter escapes a message character by
/// character and quotes a text field through `Debug`. With the text as its
/// message a line took 12,400 instructions; this one takes 8,200.
fn log_notification(event: &Event) {
    let Some(kind) = event.notification_kind() else { return };
    tracing::info!(
        order_id = %event.order_id,
        trace_id = event.trace_id().map(display),
        customer_id = event.customer_id.as_str(),
        kind = %kind,
        reason = event.reason.as_deref(),
        "notification"
    );
}
