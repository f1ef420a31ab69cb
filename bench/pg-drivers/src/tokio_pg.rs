//! tokio-postgres behind deadpool-postgres, used as orderflow's store uses it:
//! `prepare_cached` statements, and the batch's statements pipelined.

use crate::driver::Driver;
use crate::order::{Columns, NewOrder, OrderRow};
use crate::sql::{
    INSERT_MESSAGES, INSERT_ORDERS, NOTIFY_MESSAGES, QUEUE_ORDER_EVENTS, ROUTE_ORDER_PLACED, SELECT_ORDER,
};
use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::str::FromStr;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

#[derive(Clone)]
pub struct TokioPostgres {
    pool: Pool,
}

impl TokioPostgres {
    pub fn new(url: &str, pool_size: usize) -> anyhow::Result<Self> {
        let config = tokio_postgres::Config::from_str(url).context("parsing the PostgreSQL URL")?;
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .build()
            .context("building the deadpool-postgres pool")?;
        Ok(Self { pool })
    }
}

impl Driver for TokioPostgres {
    async fn place_batch(&self, orders: &[NewOrder], now: i64) -> anyhow::Result<()> {
        let columns = Columns::of(orders);
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let (insert_orders, insert_messages, notify) = futures::try_join!(
            tx.prepare_cached(INSERT_ORDERS),
            tx.prepare_cached(INSERT_MESSAGES),
            tx.prepare_cached(NOTIFY_MESSAGES),
        )?;
        let order_args: [&(dyn ToSql + Sync); 4] = [&columns.ids, &columns.customers, &columns.items, &now];
        let message_args: [&(dyn ToSql + Sync); 3] = [&QUEUE_ORDER_EVENTS, &ROUTE_ORDER_PLACED, &columns.bodies];
        futures::try_join!(
            tx.execute(&insert_orders, &order_args),
            tx.execute(&insert_messages, &message_args),
            tx.execute(&notify, &[]),
        )?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_order(&self, id: Uuid) -> anyhow::Result<Option<OrderRow>> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(SELECT_ORDER).await?;
        let row = client.query_opt(&statement, &[&id]).await?;
        Ok(row.as_ref().map(order_from_row).transpose()?)
    }
}

fn order_from_row(r: &Row) -> Result<OrderRow, tokio_postgres::Error> {
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
