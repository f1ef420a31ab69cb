//! The benchmark's own database, with orderflow's schema, and the data each
//! run starts from. Done with one plain tokio-postgres connection, outside
//! every measured interval.

use crate::order::{now_millis, Columns, NewOrder};
use crate::sql::INSERT_ORDERS;
use anyhow::Context;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

pub const DATABASE: &str = "orderflow_drivers";
const SCHEMA: &str = include_str!("../../../src/store/migrations/postgres.sql");
const SEED_CHUNK: usize = 10_000;

async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, connection) =
        tokio_postgres::connect(url, NoTls).await.with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("setup connection failed: {e}");
        }
    });
    Ok(client)
}

/// Drops and re-creates the database and applies orderflow's schema.
/// Returns the server's version.
pub async fn recreate(admin_url: &str, url: &str) -> anyhow::Result<String> {
    let admin = connect(admin_url).await?;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")).await?;
    admin.batch_execute(&format!("CREATE DATABASE {DATABASE}")).await?;
    let db = connect(url).await?;
    db.batch_execute(SCHEMA).await.context("applying orderflow's schema")?;
    Ok(db.query_one("SHOW server_version", &[]).await?.get(0))
}

/// Empties the tables the workloads write and checkpoints, so every write
/// run starts from the same state.
pub async fn reset(url: &str) -> anyhow::Result<()> {
    let db = connect(url).await?;
    db.batch_execute("TRUNCATE orders, messages RESTART IDENTITY; CHECKPOINT").await?;
    Ok(())
}

/// Leaves exactly `count` placed orders in the table and returns their ids.
pub async fn seed(url: &str, count: usize) -> anyhow::Result<Vec<Uuid>> {
    reset(url).await?;
    let db = connect(url).await?;
    let statement = db.prepare(INSERT_ORDERS).await?;
    let mut ids = Vec::with_capacity(count);
    while ids.len() < count {
        let orders: Vec<NewOrder> = (0..SEED_CHUNK.min(count - ids.len())).map(|_| NewOrder::generate()).collect();
        let columns = Columns::of(&orders);
        db.execute(&statement, &[&columns.ids, &columns.customers, &columns.items, &now_millis()]).await?;
        ids.extend(columns.ids);
    }
    db.batch_execute("VACUUM ANALYZE orders").await?;
    db.batch_execute("CHECKPOINT").await?;
    Ok(ids)
}
