//! A Redis cache of single orders (`--cache-url`), read through by
//! `GET /orders/{id}` and `GET /order/get/{id}`.
//!
//! A read looks in Redis first; on a miss the API reads the store, answers,
//! and fills the cache with what it read (`fill`). Every status change is
//! announced after its commit by the process that made it (`moved_past`:
//! the inventory service and the notifier), with a tombstone that outranks
//! every copy of the status the order left (`entry`). Both writes go
//! through one compare-and-set script, so a reader that read the old row
//! before the commit can never put it back after the tombstone: a cached
//! status never goes backwards. The scheme and its bounds are told in
//! docs/architecture.md#the-order-cache.
//!
//! The cache is never needed for correctness. Each call is bounded by a
//! timeout; a failure or a timeout is counted, answered as "not cached", and
//! opens a breaker that skips Redis for a second (`breaker`), so a Redis
//! that is down costs requests nothing. Redis need not persist anything.

mod breaker;
mod entry;
#[cfg(test)]
mod tests;

pub use entry::{FRESH_FOR, TERMINAL_FOR};

use crate::domain::{OrderId, Status};
use crate::telemetry::catalog::{CACHE_REQUESTS, CACHE_WRITES};
use breaker::Breaker;
use entry::Entry;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The cache's knobs.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    /// Longest one call to Redis may take before it counts as failed.
    pub timeout: Duration,
    /// How long the cache is skipped after a failure.
    pub pause: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self { timeout: Duration::from_millis(50), pause: Duration::from_secs(1) }
    }
}

/// The cache, shared by every task of a process (cheap to clone).
#[derive(Clone)]
pub struct OrderCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for OrderCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderCache").field("settings", &self.inner.settings).finish_non_exhaustive()
    }
}

struct Inner {
    /// Multiplexed: concurrent requests share one connection, which the
    /// manager reopens by itself after Redis comes back.
    conn: ConnectionManager,
    set_if_newer: redis::Script,
    settings: CacheSettings,
    breaker: Breaker,
}

/// What a cache call came to.
enum Outcome<T> {
    Done(T),
    /// Redis failed or was too slow.
    Failed,
    /// The breaker was open: Redis was not asked.
    Skipped,
}

impl OrderCache {
    /// A cache on the Redis at `url`. Fails only on a URL the `redis` crate
    /// cannot read; nothing is connected until first used, so a process
    /// starts while its cache is down. Needs a Tokio runtime.
    pub fn new(url: &str, settings: CacheSettings) -> anyhow::Result<OrderCache> {
        let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("cache URL: {e}"))?;
        // Each request is bounded by our own timeout; these only keep the
        // manager from waiting long on a connection no request awaits.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| anyhow::anyhow!("cache connection: {e}"))?;
        let inner = Inner {
            conn,
            set_if_newer: redis::Script::new(entry::SET_IF_NEWER),
            settings,
            breaker: Breaker::new(settings.pause),
        };
        Ok(OrderCache { inner: Arc::new(inner) })
    }

    /// The order's JSON as `GET /orders/{id}` answers it, when cached.
    /// `None` means "read the store": not cached, only a tombstone, or the
    /// cache failed or is skipped.
    pub async fn get(&self, id: OrderId) -> Option<String> {
        let mut conn = self.inner.conn.clone();
        let key = entry::key(id);
        let outcome =
            self.call(async move { redis::cmd("GET").arg(key).query_async::<Option<String>>(&mut conn).await });
        let (result, json) = match outcome.await {
            Outcome::Done(Some(value)) => match entry::json_of(&value) {
                Some(json) => ("hit", Some(json.to_owned())),
                None => ("miss", None),
            },
            Outcome::Done(None) => ("miss", None),
            Outcome::Failed => ("error", None),
            Outcome::Skipped => ("skipped", None),
        };
        count(CACHE_REQUESTS, &[("result", result)], 1);
        json
    }

    /// Caches the order read from the store at `read_at` (its status and its
    /// JSON), unless a newer copy or a tombstone is there. True if written.
    pub async fn fill(&self, id: OrderId, status: Status, json: &str, read_at: Instant) -> bool {
        let Some(entry) = Entry::copy(id, status, json, read_at.elapsed()) else {
            return false;
        };
        self.write("fill", vec![entry]).await == 1
    }

    /// Tells the cache, after their commit, that these orders have left the
    /// status each names; returns how many entries that wrote.
    pub async fn moved_past(&self, orders: impl IntoIterator<Item = (OrderId, Status)>) -> usize {
        let entries: Vec<Entry> = orders.into_iter().map(|(id, left)| Entry::moved_past(id, left)).collect();
        if entries.is_empty() {
            return 0;
        }
        self.write("tombstone", entries).await
    }

    async fn write(&self, kind: &'static str, entries: Vec<Entry>) -> usize {
        let mut invocation = self.inner.set_if_newer.prepare_invoke();
        for e in &entries {
            invocation.key(&e.key).arg(e.version).arg(&e.value).arg(e.ttl.as_millis() as u64);
        }
        let mut conn = self.inner.conn.clone();
        let outcome = self.call(async move { invocation.invoke_async::<usize>(&mut conn).await }).await;
        match outcome {
            Outcome::Done(stored) => {
                count(CACHE_WRITES, &[("kind", kind), ("result", "stored")], stored);
                count(CACHE_WRITES, &[("kind", kind), ("result", "refused")], entries.len() - stored);
                stored
            }
            Outcome::Failed => {
                count(CACHE_WRITES, &[("kind", kind), ("result", "error")], entries.len());
                0
            }
            Outcome::Skipped => {
                count(CACHE_WRITES, &[("kind", kind), ("result", "skipped")], entries.len());
                0
            }
        }
    }

    /// Runs one call to Redis within the timeout, unless the breaker is open.
    async fn call<T>(&self, f: impl std::future::Future<Output = redis::RedisResult<T>>) -> Outcome<T> {
        let breaker = &self.inner.breaker;
        if !breaker.allows() {
            return Outcome::Skipped;
        }
        match tokio::time::timeout(self.inner.settings.timeout, f).await {
            Ok(Ok(value)) => {
                breaker.succeeded();
                Outcome::Done(value)
            }
            Ok(Err(e)) => {
                breaker.failed(&e.to_string());
                Outcome::Failed
            }
            Err(_) => {
                breaker.failed("timed out");
                Outcome::Failed
            }
        }
    }
}

/// Adds `n` to a counter (`catalog::CACHE_*`).
fn count(name: &'static str, labels: &[(&'static str, &'static str)], n: usize) {
    let labels: Vec<metrics::Label> = labels.iter().map(|&(k, v)| metrics::Label::new(k, v)).collect();
    metrics::counter!(name, labels).increment(n as u64);
}
