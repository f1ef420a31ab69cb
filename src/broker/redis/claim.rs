//! Entries delivered again: a consumer's own retries, and the entries that
//! other consumers left pending.
//!
//! An entry a consumer could not apply stays pending with it, and comes back
//! to it after the retry policy's backoff: `XCLAIM` of its own id, which
//! counts one more delivery. An entry pending with a consumer that died
//! (`kill -9`, a lost host) has no one to come back to: every consumer scans
//! its group's pending entries now and then with `XAUTOCLAIM` and takes those
//! idle for longer than `--redis-claim-idle-ms`, so a dead worker's entries
//! are delayed, never lost. Neither command returns delivery counts; they
//! come from the extended form of `XPENDING`, one pipelined query per entry,
//! and an entry delivered more than `--max-attempts` times is dead-lettered
//! instead of being tried again (as when it kills every worker that takes it).

use super::streams::{entries, int, items, text, Entry};
use redis::aio::ConnectionManager;
use redis::Value;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// Where one subscription reads its group's pending entries.
pub(super) struct Claimer {
    /// The stream, group and consumer this subscription reads as.
    pub stream: String,
    pub group: &'static str,
    pub consumer: String,
    idle: Duration,
    /// Where the next `XAUTOCLAIM` scan starts (it walks the pending list).
    cursor: String,
    next_scan: Instant,
    /// This consumer's own entries to try again, and when.
    retries: Vec<(Instant, String)>,
}

impl Claimer {
    pub fn new(stream: &str, group: &'static str, consumer: String, idle: Duration) -> Self {
        Self {
            stream: stream.to_owned(),
            group,
            consumer,
            idle,
            cursor: "0-0".into(),
            next_scan: Instant::now(),
            retries: Vec::new(),
        }
    }

    /// Scans for other consumers' entries a few times per idle period: an
    /// entry waits at most about one and a half idle periods.
    fn scan_interval(&self) -> Duration {
        (self.idle / 2).clamp(Duration::from_millis(20), Duration::from_secs(5))
    }

    pub fn retry_after(&mut self, id: String, delay: Duration) {
        self.retries.push((Instant::now() + delay, id));
    }

    /// Entries to deliver again now, at most `max`, each with the number of
    /// times Redis has delivered it (this delivery included).
    pub async fn due(
        &mut self,
        conn: &mut ConnectionManager,
        max: usize,
    ) -> Result<Vec<(Entry, u32)>, redis::RedisError> {
        let now = Instant::now();
        let mut found = Vec::new();
        let due: Vec<String> = {
            let (due, later) = self.retries.drain(..).partition(|(at, _)| *at <= now);
            self.retries = later;
            due.into_iter().map(|(_, id)| id).collect()
        };
        if !due.is_empty() {
            let reply: Value = redis::cmd("XCLAIM")
                .arg(&self.stream)
                .arg(self.group)
                .arg(&self.consumer)
                .arg(0)
                .arg(&due)
                .query_async(conn)
                .await?;
            found.extend(entries(&reply).map(|(e, _)| e).unwrap_or_default());
        }
        if found.len() < max && now >= self.next_scan {
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(&self.stream)
                .arg(self.group)
                .arg(&self.consumer)
                .arg(self.idle.as_millis() as u64)
                .arg(&self.cursor)
                .arg("COUNT")
                .arg(max - found.len())
                .query_async(conn)
                .await?;
            let parts = items(&reply).unwrap_or_default();
            self.cursor = parts.first().and_then(text).unwrap_or_else(|| "0-0".into());
            let claimed = parts.get(1).and_then(|e| entries(e).ok()).map(|(e, _)| e).unwrap_or_default();
            // A scan that stopped mid-list goes on at once; one that reached
            // the end starts over after a pause.
            self.next_scan = if self.cursor == "0-0" { now + self.scan_interval() } else { now };
            if !claimed.is_empty() {
                tracing::info!(stream = %self.stream, claimed = claimed.len(), "claimed entries left pending by another consumer");
            }
            self.retries.retain(|(_, id)| !claimed.iter().any(|e| &e.id == id));
            found.extend(claimed);
        }
        let counts = self.delivery_counts(conn, &found).await?;
        Ok(found
            .into_iter()
            .map(|e| {
                let n = counts.get(&e.id).copied().unwrap_or(1);
                (e, n)
            })
            .collect())
    }

    /// Delivery counts from `XPENDING stream group id id 1`, pipelined.
    async fn delivery_counts(
        &self,
        conn: &mut ConnectionManager,
        found: &[Entry],
    ) -> Result<HashMap<String, u32>, redis::RedisError> {
        if found.is_empty() {
            return Ok(HashMap::new());
        }
        let mut pipe = redis::pipe();
        for e in found {
            pipe.cmd("XPENDING").arg(&self.stream).arg(self.group).arg(&e.id).arg(&e.id).arg(1);
        }
        let replies: Vec<Value> = pipe.query_async(conn).await?;
        let mut counts = HashMap::new();
        for reply in &replies {
            for row in items(reply).unwrap_or_default() {
                if let Some([id, _consumer, _idle, count]) = items(row) {
                    if let (Some(id), Some(count)) = (text(id), int(count)) {
                        counts.insert(id, count.clamp(1, u32::MAX as i64) as u32);
                    }
                }
            }
        }
        Ok(counts)
    }
}

/// True when Redis no longer knows the group (its data was lost, or the
/// stream deleted): the groups are declared again.
pub(super) fn no_group(e: &redis::RedisError) -> bool {
    e.code() == Some("NOGROUP")
}
