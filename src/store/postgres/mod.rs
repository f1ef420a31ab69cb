//! The PostgreSQL store: the distributed mode's database, shared by many processes.
//!
//! Unlike SQLite, PostgreSQL takes writers concurrently, so most calls simply
//! borrow a connection from a small pool (deadpool, 16 connections, 2 s to
//! connect or wait) and run one transaction. Placing orders is the exception:
//! it is the hot path, so a background task coalesces concurrent calls into one
//! multi-row transaction per batch (see `orders`). Everything that must be safe
//! across processes is made so by the database itself: stock rows locked in
//! SKU order, status updates that name the status they move from, `SKIP
//! LOCKED` queues, `ON CONFLICT` claims of idempotency keys and inbox entries,
//! and `LISTEN/NOTIFY` to wake consumers in other processes.
//! A database that cannot be reached is reported as `Unavailable` (a 503), and
//! the pool replaces broken connections by itself when the server returns.

mod connect;
mod effects;
mod orders;
mod prune;
mod queue;
mod requests;
mod stats;
#[cfg(test)]
mod tests;
mod webhooks;

use super::{
    Consumed, Effect, Handled, OrderFilter, OrderPage, OrderView, PipelineStats, PlaceOrder, Placed, Prunable,
    QueueStore, Requested, StockLevel, Store, StoreError,
};
use crate::domain::{Decision, Event, OrderId, Request, Status};
use crate::messaging::{DeadLetter, Publisher, RetryPolicy};
use anyhow::Context;
use async_trait::async_trait;
use deadpool_postgres::{Object, Pool, PoolError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::error::SqlState;

/// Longest a call waits to connect or for a free connection before it gives up
/// with `Unavailable`, so nothing hangs while PostgreSQL is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a read waits for PostgreSQL (a server that accepts connections but
/// does not answer would otherwise hold the request forever).
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Counting every order on one core takes seconds at a million.
const COUNT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest `place_order` waits for its batch to commit.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Orders that may wait for the order writer; beyond this, callers are told to back off.
const ORDER_QUEUE: usize = 16_384;

pub struct PostgresStore {
    pool: Pool,
    /// Orders waiting for the next group commit.
    orders: mpsc::Sender<orders::Pending>,
    /// Bumped when messages were queued, here or (through NOTIFY) elsewhere.
    signal: Arc<watch::Sender<u64>>,
    messages: watch::Receiver<u64>,
    /// Where this process's scans of the queue start.
    marks: queue::ScanMarks,
    /// Bumped when statuses moved, here or (through NOTIFY) elsewhere.
    statuses: Arc<watch::Sender<u64>>,
    /// The ids of the orders moved, in every process (from NOTIFY's payload).
    moved: tokio::sync::broadcast::Sender<crate::store::MovedOrders>,
}

impl PostgresStore {
    /// Connects to the database `url` names, migrates it and starts the order
    /// writer and the listener. Besides the usual libpq options the URL may
    /// carry `schema=NAME`, which is created if needed and used as the
    /// `search_path` (as `options=-csearch_path%3DNAME` would).
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let (config, schema) = connect::parse_url(url)?;
        let pool = connect::pool(&config)?;
        let mut client = pool.get().await.context("connecting to PostgreSQL")?;
        connect::migrate(&mut client, schema.as_deref()).await?;
        drop(client);
        let (signal, messages) = watch::channel(0u64);
        let signal = Arc::new(signal);
        let (orders, rx) = mpsc::channel(ORDER_QUEUE);
        tokio::spawn(orders::run_writer(pool.clone(), rx, signal.clone()));
        let statuses = Arc::new(watch::Sender::new(0));
        let moved = tokio::sync::broadcast::Sender::new(crate::store::MOVED_BACKLOG);
        tokio::spawn(queue::listen(config, signal.clone(), statuses.clone(), moved.clone()));
        Ok(Self { pool, orders, signal, messages, marks: queue::ScanMarks::default(), statuses, moved })
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(pool_err)
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn place_order(&self, order: PlaceOrder) -> Result<Placed, StoreError> {
        let order = crate::store::PreparedOrder::new(order);
        let (reply, rx) = oneshot::channel();
        self.orders.try_send(orders::Pending { order, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::Unavailable("order queue is full".into()),
            mpsc::error::TrySendError::Closed(_) => StoreError::Unavailable("order writer has stopped".into()),
        })?;
        // Past the timeout the caller hears 503; an order the writer has not
        // taken yet is then dropped (its reply is closed), so only a batch
        // already committing can still land, as with any lost COMMIT reply.
        match tokio::time::timeout(COMMIT_TIMEOUT, rx).await {
            Ok(reply) => reply.map_err(|_| StoreError::Unavailable("order writer has stopped".into()))?,
            Err(_) => Err(StoreError::Unavailable("PostgreSQL did not commit in time".into())),
        }
    }

    async fn get_order(&self, id: OrderId) -> Result<Option<OrderView>, StoreError> {
        bounded(async { orders::get(&self.client().await?, id).await }).await
    }

    async fn list_orders(&self, filter: OrderFilter) -> Result<OrderPage, StoreError> {
        bounded(async { orders::list(&self.client().await?, filter).await }).await
    }

    async fn request(&self, id: OrderId, request: Request) -> Result<Option<Requested>, StoreError> {
        bounded(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(db_err)?;
            let requested = requests::request(&tx, id, request).await?;
            let moved = requested.as_ref().is_some_and(|r| matches!(r.decision, Decision::Move { .. }));
            let ids: &[OrderId] = if moved { &[id] } else { &[] };
            self.commit_moved(tx, ids).await?;
            if moved {
                bump(&self.signal);
            }
            Ok(requested)
        })
        .await
    }

    async fn reserve(&self, consumer: &str, events: Vec<Event>) -> Result<Vec<Handled>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        let handled = effects::reserve(&tx, consumer, &events).await?;
        let moved = crate::store::done_ids(&events, &handled);
        self.commit_moved(tx, &moved).await?;
        if !moved.is_empty() {
            bump(&self.signal);
        }
        Ok(handled)
    }

    async fn notify(&self, consumer: &str, events: Vec<Event>, webhooks: bool) -> Result<Vec<Handled>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        let handled = effects::notify(&tx, consumer, &events, webhooks).await?;
        self.commit_moved(tx, &crate::store::done_ids(&events, &handled)).await?;
        Ok(handled)
    }

    async fn set_stock(&self, sku: &str, available: i64) -> Result<(), StoreError> {
        bounded(async { effects::set_stock(&self.client().await?, sku, available).await }).await
    }

    async fn list_stock(&self) -> Result<Vec<StockLevel>, StoreError> {
        bounded(async { effects::list_stock(&self.client().await?).await }).await
    }

    async fn stats(&self) -> Result<PipelineStats, StoreError> {
        bounded_by(COUNT_TIMEOUT, async { stats::count(&mut self.client().await?).await }).await
    }

    async fn statuses(&self, ids: &[OrderId]) -> Result<Vec<(OrderId, Status)>, StoreError> {
        bounded(async { orders::statuses(&self.client().await?, ids).await }).await
    }

    fn status_signal(&self) -> watch::Receiver<u64> {
        self.statuses.subscribe()
    }

    async fn get_orders(&self, ids: &[OrderId]) -> Result<Vec<OrderView>, StoreError> {
        bounded(async { orders::get_many(&self.client().await?, ids).await }).await
    }

    fn moved_orders(&self) -> tokio::sync::broadcast::Receiver<crate::store::MovedOrders> {
        self.moved.subscribe()
    }

    async fn order_trail(&self, id: OrderId) -> Result<crate::store::OrderTrail, StoreError> {
        bounded(async { orders::trail(&self.client().await?, id).await }).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let ping = async {
            let client = self.client().await?;
            client.simple_query("SELECT 1").await.map_err(db_err)?;
            Ok(())
        };
        tokio::time::timeout(CONNECT_TIMEOUT, ping)
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("PostgreSQL did not answer in time".into())))
    }

    async fn prune(&self, table: Prunable, cutoff: i64, max: usize) -> Result<u64, StoreError> {
        self.prune_batch(table, cutoff, max).await
    }
}

#[async_trait]
impl QueueStore for PostgresStore {
    async fn consume(
        &self,
        consumer: &str,
        queue: &str,
        effect: Effect,
        max: usize,
        policy: RetryPolicy,
    ) -> Result<Consumed, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        let consumed = queue::consume(&tx, &self.marks, consumer, queue, effect, max, policy).await?;
        let moved: Vec<OrderId> = consumed.applied.iter().map(|e| e.order_id).collect();
        self.commit_moved(tx, &moved).await?;
        if effect == Effect::Reserve && !consumed.applied.is_empty() {
            bump(&self.signal);
        }
        Ok(consumed)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        bounded(async { queue::dead_letters(&self.client().await?, limit).await }).await
    }

    async fn replay(&self, id: Option<i64>) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        let moved = queue::replay(&tx, id).await?;
        tx.commit().await.map_err(db_err)?;
        if moved > 0 {
            bump(&self.signal);
        }
        Ok(moved)
    }

    fn message_signal(&self) -> watch::Receiver<u64> {
        self.messages.clone()
    }

    async fn relay(&self, max: usize, publisher: &dyn Publisher) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        let sent = queue::relay(&tx, &self.marks, max, publisher).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(sent)
    }
}

impl PostgresStore {
    /// Commits a transaction of the services; when it moved orders, the
    /// live streams of every process hear which (NOTIFY, delivered on
    /// commit): the payload is the schema, a tab, and the orders' ids, in as
    /// many notifications as keep each under PostgreSQL's 8000 bytes.
    async fn commit_moved(&self, tx: deadpool_postgres::Transaction<'_>, moved: &[OrderId]) -> Result<(), StoreError> {
        if !moved.is_empty() {
            let stmt = tx.prepare_cached(NOTIFY_STATUSES).await.map_err(db_err)?;
            for chunk in moved.chunks(NOTIFY_IDS) {
                let ids: Vec<String> = chunk.iter().map(|id| id.as_uuid().simple().to_string()).collect();
                tx.execute(&stmt, &[&ids.join(",")]).await.map_err(db_err)?;
            }
        }
        tx.commit().await.map_err(db_err)?;
        if !moved.is_empty() {
            bump(&self.statuses);
        }
        Ok(())
    }
}

/// Gives up on a read (or a small operator write) that PostgreSQL does not answer.
async fn bounded<T>(work: impl std::future::Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    bounded_by(READ_TIMEOUT, work).await
}

/// Gives up on work that PostgreSQL has not finished within `limit`.
async fn bounded_by<T>(
    limit: Duration,
    work: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable("PostgreSQL did not answer in time".into())))
}

/// Wakes this process's consumers.
fn bump(signal: &watch::Sender<u64>) {
    signal.send_modify(|n| *n = n.wrapping_add(1));
}

/// Wakes consumers in every process sharing this schema; sent inside a
/// transaction, it is delivered when (and only if) that commits.
const NOTIFY_MESSAGES: &str = "SELECT pg_notify('orderflow_messages', current_schema())";
/// Tells the live streams of every process which orders moved.
const NOTIFY_STATUSES: &str = "SELECT pg_notify('orderflow_statuses', current_schema() || E'\\t' || $1::text)";
/// Ids in one notification: 33 bytes each, under the 8000-byte payload limit
/// with room for the schema's name (at most 63 bytes).
const NOTIFY_IDS: usize = 200;

fn pool_err(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => StoreError::Unavailable(format!("connecting to PostgreSQL: {}", describe(&e))),
        e => StoreError::Unavailable(format!("no PostgreSQL connection: {e}")),
    }
}

/// Lost connections, a server shutting down, deadlocks and serialization
/// failures are `Unavailable` (try again later); anything else is a bug or a
/// broken invariant.
fn db_err(e: tokio_postgres::Error) -> StoreError {
    let transient = match e.code() {
        Some(code) => {
            let class = &code.code()[..2];
            matches!(class, "08" | "53" | "57")
                || [SqlState::T_R_SERIALIZATION_FAILURE, SqlState::T_R_DEADLOCK_DETECTED, SqlState::LOCK_NOT_AVAILABLE]
                    .contains(code)
        }
        None => {
            e.is_closed()
                || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>())
                || e.to_string().starts_with("timeout")
        }
    };
    if transient {
        StoreError::Unavailable(format!("PostgreSQL: {}", describe(&e)))
    } else {
        StoreError::Other(anyhow::Error::new(e))
    }
}

/// The error with its cause: tokio-postgres's own message alone says little
/// ("db error", "error connecting to server").
fn describe(e: &tokio_postgres::Error) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => format!("{} ({})", db.message(), db.code().code()),
        (None, Some(cause)) => format!("{e}: {cause}"),
        (None, None) => e.to_string(),
    }
}
