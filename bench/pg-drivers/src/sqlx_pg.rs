//! sqlx's own pool and query API. Statements are prepared and cached per
//! connection (sqlx's default); a connection runs one statement at a time.

use crate::driver::Driver;
use crate::order::{Columns, NewOrder, OrderRow};
use crate::sql::{
    INSERT_MESSAGES, INSERT_ORDERS, NOTIFY_MESSAGES, QUEUE_ORDER_EVENTS, ROUTE_ORDER_PLACED, SELECT_ORDER,
};
use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::Row;
use std::str::FromStr;
use uuid::Uuid;

#[derive(Clone)]
pub struct Sqlx {
    pool: PgPool,
}

impl Sqlx {
    /// A lazy pool, like deadpool's: connections open on first use.
    /// Checkout does not ping the server (sqlx's default does), matching the
    /// `Fast` recycling that orderflow configures for deadpool.
    pub fn new(url: &str, pool_size: u32) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url).context("parsing the PostgreSQL URL")?;
        let pool =
            PgPoolOptions::new().max_connections(pool_size).test_before_acquire(false).connect_lazy_with(options);
        Ok(Self { pool })
    }
}

impl Driver for Sqlx {
    async fn place_batch(&self, orders: &[NewOrder], now: i64) -> anyhow::Result<()> {
        let columns = Columns::of(orders);
        let mut tx = self.pool.begin().await?;
        sqlx::query(INSERT_ORDERS)
            .bind(&columns.ids)
            .bind(&columns.customers)
            .bind(&columns.items)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(INSERT_MESSAGES)
            .bind(QUEUE_ORDER_EVENTS)
            .bind(ROUTE_ORDER_PLACED)
            .bind(&columns.bodies)
            .execute(&mut *tx)
            .await?;
        sqlx::query(NOTIFY_MESSAGES).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_order(&self, id: Uuid) -> anyhow::Result<Option<OrderRow>> {
        let row = sqlx::query(SELECT_ORDER).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(order_from_row).transpose()?)
    }
}

fn order_from_row(r: &PgRow) -> Result<OrderRow, sqlx::Error> {
    Ok(OrderRow {
        id: r.try_get(0)?,
        customer_id: r.try_get(1)?,
        status: r.try_get(2)?,
        reason: r.try_get(3)?,
        items: r.try_get(4)?,
        created_at: r.try_get(5)?,
        updated_at: r.try_get(6)?,
        reserved_at: r.try_get(7)?,
        completed_at: r.try_get(8)?,
        rejected_at: r.try_get(9)?,
    })
}
