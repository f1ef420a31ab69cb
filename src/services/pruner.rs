//! The pruner: keeps the inbox, the notifications and the idempotency keys
//! bounded by deleting what has outlived its window.
//!
//! Each role prunes what it writes: the API the idempotency keys, the
//! inventory service its inbox, the notifier the notifications (its inbox);
//! `run` all three. Every `--prune-interval` a pass deletes, table by table,
//! batches of `BATCH` rows older than the window, pausing between batches,
//! until a batch comes back short: no statement holds locks (or SQLite's one
//! writer) for long, and processes pruning together take different rows.
//!
//! The inbox window must outlast every redelivery, or a late copy of an
//! event would find its entry gone and be applied again: `check_inbox_window`
//! refuses a shorter one at start (docs/architecture.md#retention).

use crate::domain::{cutoff, now_millis};
use crate::messaging::RetryPolicy;
use crate::store::{Prunable, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Rows one statement deletes at most.
pub const BATCH: usize = 1000;
/// The pause between two batches of a pass, which leaves the database (and
/// SQLite's writer) to the orders most of the time while a backlog is pruned.
const PAUSE: Duration = Duration::from_millis(50);
/// How long a message held by a consumer that vanished stays with it when
/// nothing but the network tells: PostgreSQL's keepalives and RabbitMQ's
/// heartbeat both notice a lost peer within a minute.
const LOST_PEER: Duration = Duration::from_secs(60);

/// Prunes `tables`, each past its window, every `interval` until `shutdown`.
/// A failed pass is logged and tried again at the next interval.
pub async fn run(
    store: Arc<dyn Store>,
    tables: Vec<(Prunable, Duration)>,
    interval: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        for (table, window) in &tables {
            if let Err(e) = prune(store.as_ref(), table, *window, &shutdown).await {
                tracing::warn!(table = table.table(), error = %e, "pruning failed; trying again later");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

/// Deletes the rows of `table` older than `window`, a batch at a time, and
/// returns how many went.
pub async fn prune(
    store: &dyn Store,
    table: &Prunable,
    window: Duration,
    shutdown: &CancellationToken,
) -> Result<u64, StoreError> {
    let cutoff = cutoff(now_millis(), window);
    let mut total = 0;
    loop {
        let deleted = store.prune(table.clone(), cutoff, BATCH).await?;
        metrics::counter!("orderflow_pruned_rows_total", "table" => table.table()).increment(deleted);
        total += deleted;
        if deleted < BATCH as u64 {
            return Ok(total);
        }
        tokio::select! {
            _ = tokio::time::sleep(PAUSE) => {}
            _ = shutdown.cancelled() => return Ok(total),
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
