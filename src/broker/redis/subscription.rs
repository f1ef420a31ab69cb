//! Consuming one stream through its consumer group, in batches.
//!
//! `next_batch` first takes what is due again (`claim`), and otherwise reads
//! new entries with `XREADGROUP … COUNT n BLOCK ms`. An entry whose fields
//! are not the relay's, or delivered more than `--max-attempts` times, is
//! moved to the dead-letter stream there and then; the rest are handed to
//! the worker, which applies them in one database transaction and settles
//! them: `XACK` for the applied ones (one command for the batch), the
//! dead-letter stream for a body that is not an event, and for an entry
//! that failed, another delivery after the retry policy's backoff, or the
//! dead-letter stream once it has failed `--max-attempts` times. Whatever is
//! not settled (the process died, Redis went away) stays pending and is
//! claimed again after the idle timeout.
//!
//! Each subscription reads as a consumer of its own (`<group>-<pid>-<random>`),
//! so two processes never share a pending list, trims its stream now and
//! then once it has acknowledged entries, and deletes the names of the
//! group's consumers that are gone (`consumers`).

use super::claim::{no_group, Claimer};
use super::consumers;
use super::dlq::{self, Death};
use super::streams::{self, read_reply, Entry};
use super::{trim, Link, RedisSettings};
use crate::broker::{Delivery, Settle, Subscription};
use crate::messaging::{BrokerError, Reject};
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The error a dead letter records when its consumer kept failing it.
const DELIVERY_LIMIT: &str = "delivery_limit";

pub(super) struct RedisSubscription {
    link: Link,
    settings: Arc<RedisSettings>,
    claimer: Claimer,
    /// Entries handed out and not settled yet, by delivery tag, with the
    /// number of times they have been delivered.
    held: HashMap<u64, (Entry, u32)>,
    next_tag: u64,
    trimmed: Option<Instant>,
    /// Entries were acknowledged since the last trim: an idle turn trims,
    /// so a stream is trimmed once its consumers have caught up.
    untrimmed: bool,
    /// When to look for consumers of the group that are gone.
    next_sweep: Instant,
}

impl RedisSubscription {
    pub(super) fn new(link: Link, stream: &str, group: &'static str, settings: Arc<RedisSettings>) -> Self {
        let random = uuid::Uuid::now_v7().simple().to_string();
        let consumer = format!("{group}-{}-{}", std::process::id(), &random[random.len() - 8..]);
        tracing::info!(stream, group, consumer, "reading as a consumer of the group");
        let claimer = Claimer::new(stream, group, consumer, settings.claim_idle);
        Self {
            link,
            settings,
            claimer,
            held: HashMap::new(),
            next_tag: 0,
            trimmed: None,
            untrimmed: false,
            next_sweep: Instant::now(),
        }
    }

    fn death<'a>(&'a self, error: &'a str, attempts: u32) -> Death<'a> {
        Death { stream: &self.claimer.stream, group: self.claimer.group, error, attempts }
    }

    /// Hands `entry` out, or puts it with the dead when it is not an entry
    /// orderflow wrote.
    fn hand_out(
        &mut self,
        entry: Entry,
        attempts: u32,
        batch: &mut Vec<Delivery>,
        dead: &mut Vec<(Entry, &'static str, u32)>,
    ) {
        let Some(body) = entry.body().map(<[u8]>::to_vec) else {
            dead.push((entry, "not an orderflow entry: unexpected fields", attempts));
            return;
        };
        self.next_tag += 1;
        batch.push(Delivery { tag: self.next_tag, body });
        self.held.insert(self.next_tag, (entry, attempts));
    }

    /// Reads new entries, waiting up to `wait` for the first.
    async fn read_new(
        &self,
        conn: &mut ConnectionManager,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Entry>, redis::RedisError> {
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(self.claimer.group)
            .arg(&self.claimer.consumer)
            .arg("COUNT")
            .arg(max)
            .arg("BLOCK")
            .arg(wait.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&self.claimer.stream)
            .arg(">")
            .query_async(conn)
            .await?;
        Ok(read_reply(&reply).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "unreadable XREADGROUP reply");
            Vec::new()
        }))
    }

    async fn take(
        &mut self,
        conn: &mut ConnectionManager,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, redis::RedisError> {
        let mut batch = Vec::new();
        let mut dead = Vec::new();
        let limit = self.settings.retry.max_attempts;
        for (entry, attempts) in self.claimer.due(conn, max).await? {
            if attempts > limit {
                dead.push((entry, DELIVERY_LIMIT, attempts - 1));
            } else {
                self.hand_out(entry, attempts, &mut batch, &mut dead);
            }
        }
        if batch.is_empty() && dead.is_empty() {
            for entry in self.read_new(conn, max, wait).await? {
                self.hand_out(entry, 1, &mut batch, &mut dead);
            }
        }
        if !dead.is_empty() {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for (entry, error, attempts) in &dead {
                let trace_id = entry.trace_id().map(tracing::field::display);
                tracing::warn!(stream = %self.claimer.stream, id = %entry.id, trace_id, error, "entry dead-lettered");
                dlq::move_entry(&mut pipe, entry, &self.death(error, *attempts));
            }
            // Left pending if this fails: the next claim finds them again.
            if let Err(e) = pipe.query_async::<()>(conn).await {
                tracing::warn!(error = %e, "moving entries to the dead-letter stream failed");
                self.link.distrust();
            }
        }
        Ok(batch)
    }

    /// Trims the stream, at most once per trim interval.
    async fn trim_now_and_then(&mut self, conn: &mut ConnectionManager) {
        if !self.untrimmed || self.trimmed.is_some_and(|at| at.elapsed() < self.settings.trim_interval) {
            return;
        }
        self.trimmed = Some(Instant::now());
        self.untrimmed = false;
        if let Err(e) = trim::trim(conn, &self.claimer.stream).await {
            tracing::warn!(stream = %self.claimer.stream, error = %e, "trimming failed");
            self.link.distrust();
        }
    }

    /// Deletes the group's consumers that are gone, at most once per sweep
    /// interval; a failure waits for the next.
    async fn forget_gone_now_and_then(&mut self, conn: &mut ConnectionManager) {
        if Instant::now() < self.next_sweep {
            return;
        }
        self.next_sweep = Instant::now() + consumers::sweep_interval(self.settings.claim_idle);
        let Claimer { stream, group, consumer, .. } = &self.claimer;
        match consumers::sweep(conn, stream, group, consumer, self.settings.claim_idle).await {
            Ok(gone) if !gone.is_empty() => {
                tracing::info!(stream, group, ?gone, "deleted consumers that were gone (long idle, nothing pending)")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(stream, group, error = %e, "looking for consumers that are gone failed");
                self.link.distrust();
            }
        }
    }
}

#[async_trait]
impl Subscription for RedisSubscription {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BrokerError> {
        let mut conn = self.link.get().await?;
        match self.take(&mut conn, max, wait).await {
            Ok(batch) => {
                if batch.is_empty() {
                    self.trim_now_and_then(&mut conn).await;
                }
                self.forget_gone_now_and_then(&mut conn).await;
                Ok(batch)
            }
            Err(e) if no_group(&e) => {
                tracing::warn!(stream = %self.claimer.stream, "the consumer group is gone; declaring it again");
                streams::declare(&mut conn).await.inspect_err(|_| self.link.distrust())?;
                Ok(Vec::new())
            }
            Err(e) => Err(self.link.failed(e)),
        }
    }

    async fn settle(&mut self, settled: Vec<(u64, Settle)>) -> Result<(), BrokerError> {
        let mut conn = self.link.get().await?;
        let mut acks = Vec::new();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (tag, settle) in settled {
            let Some((entry, attempts)) = self.held.remove(&tag) else { continue };
            match settle {
                Settle::Ack => acks.push(entry.id),
                Settle::DeadLetter => dlq::move_entry(&mut pipe, &entry, &self.death("invalid event", attempts)),
                Settle::Retry => match self.settings.retry.after_failure(attempts) {
                    Reject::DeadLetter => {
                        let trace_id = entry.trace_id().map(tracing::field::display);
                        tracing::warn!(stream = %self.claimer.stream, id = %entry.id, trace_id, attempts, "entry dead-lettered");
                        dlq::move_entry(&mut pipe, &entry, &self.death(DELIVERY_LIMIT, attempts));
                    }
                    Reject::RetryAfter(delay) => self.claimer.retry_after(entry.id, delay),
                },
            }
        }
        if !acks.is_empty() {
            pipe.cmd("XACK").arg(&self.claimer.stream).arg(self.claimer.group).arg(&acks).ignore();
        }
        if pipe.is_empty() {
            return Ok(());
        }
        pipe.query_async::<()>(&mut conn).await.map_err(|e| self.link.failed(e))?;
        self.untrimmed = true;
        self.trim_now_and_then(&mut conn).await;
        Ok(())
    }
}
