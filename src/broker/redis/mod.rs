//! The Redis Streams broker (`redis://…`, `rediss://…`), built on the
//! `redis` crate's connection manager.
//!
//! The outbox and the inbox stay in the database; Redis carries the events.
//! The relay appends one stream entry per outbox row (`publisher`); each
//! service reads its stream through a consumer group in batches, under a
//! consumer name of its own, and acknowledges a batch after the database
//! committed it (`subscription`). Entries a dead consumer left pending are
//! claimed by the others after `--redis-claim-idle-ms` (`claim`); entries
//! delivered too often, or not written by orderflow, go to a dead-letter
//! stream (`dlq`). Streams are trimmed up to the oldest entry some group
//! has not acknowledged (`trim`); consumers gone for long are forgotten
//! (`consumers`). Redis must persist every write before answering to lose
//! nothing; each connection checks, and checks again after a reconnect
//! (`durability`, `link`).
//!
//! Each subscription has a connection of its own, because its blocking read
//! holds the connection while it waits; the relay, the dead-letter tools and
//! readiness checks share one. A connection is opened on first use (`link`),
//! then the connection manager reconnects it by itself with backoff; a call
//! made while Redis is down fails at once as unavailable and the caller backs
//! off, as with RabbitMQ.

mod claim;
mod consumers;
mod dlq;
mod durability;
mod lag;
mod link;
mod publisher;
mod streams;
mod subscription;
mod trim;

use super::{Broker, Publisher, Subscription};
use crate::messaging::{BrokerError, DeadLetter, RetryPolicy};
use async_trait::async_trait;
use link::Link;
use std::sync::Arc;
use std::time::Duration;

/// The knobs of the Redis broker, from the command line.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Deliveries of an entry before it is dead-lettered, and the backoff
    /// between a consumer's own retries.
    pub retry: RetryPolicy,
    /// How long an entry stays pending with a consumer before others claim it.
    pub claim_idle: Duration,
    /// Least time between two trims of a stream.
    pub trim_interval: Duration,
    /// Use a Redis that could lose acknowledged events (the operator accepts it).
    pub allow_volatile: bool,
}

pub struct RedisBroker {
    client: redis::Client,
    settings: Arc<RedisSettings>,
    /// The relay, the dead-letter tools and readiness checks.
    shared: Arc<Link>,
    publisher: Arc<publisher::RedisPublisher>,
}

impl RedisBroker {
    /// Fails only on a URL the `redis` crate cannot read; nothing is
    /// connected until first used.
    pub fn new(url: &str, settings: RedisSettings) -> Result<Self, BrokerError> {
        let client = redis::Client::open(url).map_err(|e| BrokerError::Other(anyhow::anyhow!("broker URL: {e}")))?;
        let settings = Arc::new(settings);
        let shared = Arc::new(Link::new(client.clone(), settings.clone()));
        let publisher = Arc::new(publisher::RedisPublisher::new(shared.clone(), settings.trim_interval));
        Ok(Self { client, settings, shared, publisher })
    }
}

pub(crate) fn unavailable(why: impl Into<String>) -> BrokerError {
    BrokerError::Unavailable(why.into())
}

/// Every failure Redis reports is treated as passing: a connection lost or
/// refused, a timeout, a server still loading its append-only file. The
/// caller backs off and calls again.
pub(crate) fn redis_err(e: redis::RedisError) -> BrokerError {
    BrokerError::Unavailable(format!("Redis: {e}"))
}

#[async_trait]
impl Broker for RedisBroker {
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BrokerError> {
        dlq::list(&mut self.shared.get().await?, limit).await.inspect_err(|_| self.shared.distrust())
    }

    async fn replay(&self, id: Option<String>) -> Result<u64, BrokerError> {
        dlq::replay(&mut self.shared.get().await?, id).await.inspect_err(|_| self.shared.distrust())
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        let mut conn = self.shared.get().await?;
        let pong = redis::cmd("PING").query_async::<()>(&mut conn).await;
        pong.map_err(|e| self.shared.failed(e))
    }

    async fn preflight(&self) -> Result<(), BrokerError> {
        self.shared.get().await.map(drop)
    }

    async fn subscribe(&self, queue: &str) -> Result<Option<Box<dyn Subscription>>, BrokerError> {
        let group = streams::group_of(queue)
            .ok_or_else(|| BrokerError::Other(anyhow::anyhow!("no consumer group reads the stream {queue}")))?;
        let link = Link::new(self.client.clone(), self.settings.clone());
        Ok(Some(Box::new(subscription::RedisSubscription::new(link, queue, group, self.settings.clone()))))
    }

    fn publisher(&self) -> Option<Arc<dyn Publisher>> {
        Some(self.publisher.clone())
    }

    async fn waiting_since(&self) -> Result<Vec<(&'static str, Option<i64>)>, BrokerError> {
        let mut conn = self.shared.get().await?;
        let mut found = Vec::with_capacity(streams::GROUPS.len());
        for (stream, group) in streams::GROUPS {
            found.push((stream, lag::oldest_unacknowledged(&mut conn, stream, group).await?));
        }
        Ok(found)
    }
}
