//! The pruner: keeps the inbox, the notifications and the idempotency keys
//! bounded by deleting what has outlived its window.
//!
//! Each role prunes what it writes: the API the idempotency keys, the
//! inventory service its inbox, the notifier the notifications (its inbox);
//! `run` all three. Every `--prune-interval` a pass deletes batches of
//! `BATCH` rows older than the window, a batch of each table in turn,
//! pausing between rounds, until every batch comes back short: no statement
//! holds locks (or SQLite's one writer) for long, and processes pruning
//! together take different rows.
//!
//! The inbox window must outlast every redelivery, or a late copy of an
//! event would find its entry gone and be applied again: `check_inbox_window`
//! refuses a shorter one at start (docs/architecture.md#retention).

use crate::domain::{cutoff, now_millis};
use crate::messaging::RetryPolicy;
use crate::store::{Prunable, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Rows one statement deletes at most.
pub const BATCH: usize = 1000;
/// The shortest pause between two rounds of batches.
const MIN_PAUSE: Duration = Duration::from_millis(5);
/// How long a message held by a consumer that vanished stays with it when
/// nothing but the network tells: PostgreSQL's keepalives and RabbitMQ's
/// heartbeat both notice a lost peer within a minute.
const LOST_PEER: Duration = Duration::from_secs(60);

/// Prunes `tables`, each past its window, every `interval` until `shutdown`.
pub async fn run(
    store: Arc<dyn Store>,
    tables: Vec<(Prunable, Duration)>,
    interval: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        pass(store.as_ref(), &tables, &shutdown).await;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

/// One pass: rounds of a batch from each table, each past a cutoff taken
/// anew, with a pause as long as the round took, until a round finds every
/// table's batch short. Every table has a batch in every round, so a pile
/// in one does not hold up the others, and rows that outlive their window
/// while a pile goes are taken in the same pass. The pause leaves the
/// database to the orders at least half of the time, however long a batch
/// takes. A failed batch is logged and tried again in the next round or
/// pass.
async fn pass(store: &dyn Store, tables: &[(Prunable, Duration)], shutdown: &CancellationToken) {
    loop {
        let began = Instant::now();
        let now = now_millis();
        let mut more = false;
        for (table, window) in tables {
            match store.prune(table.clone(), cutoff(now, *window), BATCH).await {
                Ok(deleted) => {
                    metrics::counter!(crate::telemetry::catalog::PRUNED_ROWS, "table" => table.table())
                        .increment(deleted);
                    more |= deleted == BATCH as u64;
                }
                Err(e) => tracing::warn!(table = table.table(), error = %e, "pruning failed; trying again later"),
            }
        }
        if !more {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(began.elapsed().max(MIN_PAUSE)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// What decides how late a copy of an event can reach its consumer.
#[derive(Debug, Clone, Copy)]
pub struct Redelivery<'a> {
    pub database_url: &'a str,
    pub broker_url: &'a str,
    pub retry: RetryPolicy,
    pub redis_claim_idle: Duration,
}

impl Redelivery<'_> {
    /// How long a delivery can stay with a consumer that died before it is
    /// delivered again: Redis's claim idle time; the network's notice of a
    /// lost peer for PostgreSQL and RabbitMQ; nothing for SQLite, whose
    /// locks go with the process.
    fn held(&self) -> Duration {
        if self.broker_url.starts_with("redis") {
            self.redis_claim_idle
        } else if self.broker_url == "db" && self.database_url.starts_with("sqlite") {
            Duration::ZERO
        } else {
            LOST_PEER
        }
    }

    /// The longest after an event's first delivery that a copy of it can
    /// still arrive: every retry's backoff, and each delivery held that long.
    pub fn horizon(&self) -> Duration {
        self.retry.retry_span() + self.held() * self.retry.max_attempts
    }
}

/// Refuses an inbox window that a redelivery could outlast.
pub fn check_inbox_window(inbox: Duration, redelivery: Redelivery<'_>) -> anyhow::Result<()> {
    let horizon = redelivery.horizon();
    if inbox < horizon {
        anyhow::bail!(
            "--inbox-retention {} is shorter than the longest a redelivered event can take to arrive with these \
             settings ({}: {} of retry backoff, and {} deliveries each held up to {} by a consumer that died); \
             a copy arriving later would be applied twice. Set it to at least {}, or lower --max-attempts, \
             --retry-base-ms or --redis-claim-idle-ms",
            humantime::format_duration(inbox),
            humantime::format_duration(horizon),
            humantime::format_duration(redelivery.retry.retry_span()),
            redelivery.retry.max_attempts,
            humantime::format_duration(redelivery.held()),
            humantime::format_duration(horizon),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redelivery<'a>(database_url: &'a str, broker_url: &'a str) -> Redelivery<'a> {
        Redelivery {
            database_url,
            broker_url,
            retry: RetryPolicy { max_attempts: 5, base: Duration::from_millis(200) },
            redis_claim_idle: Duration::from_secs(30),
        }
    }

    #[test]
    fn the_horizon_counts_every_retry_and_every_held_delivery() {
        let retries = Duration::from_millis(200 + 400 + 800 + 1600);
        assert_eq!(redelivery("sqlite://o.db", "db").horizon(), retries);
        assert_eq!(redelivery("postgres://h/db", "db").horizon(), retries + Duration::from_secs(300));
        assert_eq!(redelivery("sqlite://o.db", "redis://h").horizon(), retries + Duration::from_secs(150));
        assert_eq!(redelivery("sqlite://o.db", "amqp://h").horizon(), retries + Duration::from_secs(300));
    }

    #[test]
    fn a_window_shorter_than_the_horizon_is_refused_with_what_to_change() {
        let refused = check_inbox_window(Duration::from_secs(60), redelivery("sqlite://o.db", "redis://h"));
        let message = format!("{:#}", refused.unwrap_err());
        assert!(message.contains("--inbox-retention 1m"), "{message}");
        assert!(message.contains("at least 2m 33s"), "{message}");
        assert!(check_inbox_window(Duration::from_secs(153), redelivery("sqlite://o.db", "redis://h")).is_ok());
    }
}
