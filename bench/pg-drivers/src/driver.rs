//! What the workloads need from a driver: orderflow's two hot statements.

use crate::order::{NewOrder, OrderRow};
use std::future::Future;
use uuid::Uuid;

pub trait Driver: Clone + Send + Sync + 'static {
    /// Inserts the orders and their outbox messages in one transaction.
    fn place_batch(&self, orders: &[NewOrder], now: i64) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Reads one order by id.
    fn get_order(&self, id: Uuid) -> impl Future<Output = anyhow::Result<Option<OrderRow>>> + Send;
}
