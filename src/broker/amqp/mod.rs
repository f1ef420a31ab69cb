//! The RabbitMQ broker (`amqp://…`), built on lapin.
//!
//! Two connections per process, one to publish and one to consume, as
//! RabbitMQ advises: when it slows a publisher down (flow control blocks the
//! publishing connection), acknowledgements and deliveries on the consuming
//! one keep moving, so the pipeline drains while the outbox is being relayed.
//! Each is opened on first use and opened again (with the topology declared
//! again) whenever it is found broken: lapin's automatic
//! recovery is left off, because a consumer that silently stops after a
//! broker restart is the failure that matters most here. Each subscription
//! and the publisher own a channel and notice a broken one on their next call;
//! the caller backs off and calls again, which reconnects.

mod dlq;
mod publisher;
mod subscription;
mod topology;

use super::{Broker, Publisher, Subscription};
use crate::messaging::{BrokerError, DeadLetter};
use async_trait::async_trait;
use lapin::{Channel, Connection, ConnectionProperties};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

pub use topology::{dead_letter_queue, exchange_for};

/// Longest a connection attempt may take before the caller is told to back off.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub struct AmqpBroker {
    /// Consumers, the dead-letter tools and readiness checks.
    link: Arc<Link>,
    /// The outbox relay's publishes, on a connection of their own.
    publisher: Arc<publisher::AmqpPublisher>,
    prefetch: u16,
}

impl AmqpBroker {
    /// `delivery_limit` is how many deliveries a message gets before RabbitMQ
    /// dead-letters it; `prefetch` bounds unacknowledged deliveries per consumer.
    pub fn new(url: &str, delivery_limit: u32, prefetch: u16) -> Self {
        let link = |name: &'static str| {
            Arc::new(Link { url: url.to_owned(), name, delivery_limit, connection: Mutex::new(None) })
        };
        Self {
            publisher: Arc::new(publisher::AmqpPublisher::new(link("orderflow-publish"))),
            link: link("orderflow-consume"),
            prefetch,
        }
    }
}

/// One of the process's connections to RabbitMQ, replaced when broken.
pub(crate) struct Link {
    url: String,
    /// The connection's name, as RabbitMQ's management UI shows it.
    name: &'static str,
    delivery_limit: u32,
    connection: Mutex<Option<Arc<Connection>>>,
}

impl Link {
    async fn connection(&self) -> Result<Arc<Connection>, BrokerError> {
        let mut slot = self.connection.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| c.status().connected()) {
            return Ok(conn.clone());
        }
        let props = ConnectionProperties::default().with_connection_name(self.name.into());
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&self.url, props))
            .await
            .map_err(|_| unavailable("connecting to RabbitMQ timed out"))?
            .map_err(|e| unavailable(format!("connecting to RabbitMQ: {e}")))?;
        topology::declare(&conn, self.delivery_limit).await?;
        tracing::info!(connection = self.name, "connected to RabbitMQ");
        let conn = Arc::new(conn);
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn channel(&self) -> Result<Channel, BrokerError> {
        let conn = self.connection().await?;
        conn.create_channel().await.map_err(amqp_err)
    }
}

pub(crate) fn unavailable(why: impl Into<String>) -> BrokerError {
    BrokerError::Unavailable(why.into())
}

pub(crate) fn amqp_err(e: lapin::Error) -> BrokerError {
    BrokerError::Unavailable(format!("RabbitMQ: {e}"))
}

#[async_trait]
impl Broker for AmqpBroker {
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BrokerError> {
        dlq::list(&self.link.channel().await?, limit).await
    }

    async fn replay(&self, id: Option<String>) -> Result<u64, BrokerError> {
        dlq::replay(&self.link.channel().await?, id).await
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        let channel = self.link.channel().await?;
        let _ = channel.close(200, "ping".into()).await;
        Ok(())
    }

    async fn subscribe(&self, queue: &str) -> Result<Option<Box<dyn Subscription>>, BrokerError> {
        Ok(Some(Box::new(subscription::AmqpSubscription::new(self.link.clone(), queue, self.prefetch))))
    }

    fn publisher(&self) -> Option<Arc<dyn Publisher>> {
        Some(self.publisher.clone())
    }
}
