//! The relay's side: one stream entry per outbox row, pipelined.
//!
//! Unlike the RabbitMQ publisher, which packs many events into a message
//! because RabbitMQ's cost is per message, each row becomes its own entry: a
//! stream entry is cheap, pipelining sends a whole batch in one round trip
//! (and, with `appendfsync always`, Redis syncs the commands of one read
//! together), and an entry with one event is retried, acknowledged and
//! dead-lettered alone, so a failing event never takes its neighbours along.
//! `publish` returns only once Redis answered every `XADD`; the relay deletes
//! the rows after that. The relay also trims the streams it writes, at most
//! every `--redis-trim-interval-ms`, since a consumer that lags (or is
//! stopped) trims nothing.

use super::streams::{stream_for, FIELD_BODY, FIELD_MESSAGE_ID, FIELD_ROUTING_KEY, FIELD_TRACEPARENT, GROUPS};
use super::{trim, Link};
use crate::domain::Event;
use crate::messaging::{BrokerError, OutboxMessage, Publisher};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

pub(super) struct RedisPublisher {
    link: Arc<Link>,
    trim_interval: Duration,
    /// When the streams were last trimmed; the lock also keeps two relay
    /// loops of one process from trimming at once.
    trimmed: Mutex<Option<Instant>>,
}

impl RedisPublisher {
    pub(super) fn new(link: Arc<Link>, trim_interval: Duration) -> Self {
        Self { link, trim_interval, trimmed: Mutex::new(None) }
    }
}

#[async_trait]
impl Publisher for RedisPublisher {
    async fn publish(&self, batch: &[OutboxMessage]) -> Result<(), BrokerError> {
        let mut conn = self.link.get().await?;
        let mut pipe = redis::pipe();
        for m in batch {
            pipe.cmd("XADD")
                .arg(stream_for(&m.routing_key))
                .arg("*")
                .arg(FIELD_MESSAGE_ID)
                .arg(&m.message_id)
                .arg(FIELD_ROUTING_KEY)
                .arg(&m.routing_key)
                .arg(FIELD_BODY)
                .arg(&m.body);
            if let Some(trace) = Event::traceparent_of(&m.body) {
                pipe.arg(FIELD_TRACEPARENT).arg(trace.to_string());
            }
            pipe.ignore();
        }
        pipe.query_async::<()>(&mut conn).await.map_err(|e| self.link.failed(e))?;
        let Ok(mut trimmed) = self.trimmed.try_lock() else { return Ok(()) };
        if trimmed.is_some_and(|at| at.elapsed() < self.trim_interval) {
            return Ok(());
        }
        *trimmed = Some(Instant::now());
        // The batch is in Redis: a failed trim is only tried again later.
        for (stream, _) in GROUPS {
            if let Err(e) = trim::trim(&mut conn, stream).await {
                tracing::warn!(stream, error = %e, "trimming failed");
                self.link.distrust();
            }
        }
        Ok(())
    }
}
