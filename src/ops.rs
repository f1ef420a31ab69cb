//! The operator's tools: schema migration, stock levels and dead letters.
//!
//! They open the same database the server uses, so they work while it runs.

use crate::app::connect;
use crate::config::{Common, DlqCommand, StockCommand};
use crate::domain::Sku;

pub async fn migrate(common: &Common) -> anyhow::Result<()> {
    connect(common).await?;
    println!("database is up to date");
    Ok(())
}

pub async fn stock(common: &Common, command: StockCommand) -> anyhow::Result<()> {
    let (store, _) = connect(common).await?;
    match command {
        StockCommand::Set { sku, available } => {
            let sku = Sku::parse(sku)?;
            store.set_stock(sku.as_str(), available).await?;
            println!("{sku}\t{available}");
        }
        StockCommand::List => {
            println!("sku\tavailable\treserved\tshipped");
            for level in store.list_stock().await? {
                println!("{}\t{}\t{}\t{}", level.sku, level.available, level.reserved, level.shipped);
            }
        }
    }
    Ok(())
}

pub async fn dlq(common: &Common, command: DlqCommand) -> anyhow::Result<()> {
    let (_, broker) = connect(common).await?;
    match command {
        DlqCommand::List { limit } => {
            for letter in broker.dead_letters(limit).await? {
                println!("{}", serde_json::to_string(&letter)?);
            }
        }
        DlqCommand::Replay { id, all: _ } => {
            let moved = broker.replay(id).await?;
            println!("replayed {moved} message(s)");
        }
    }
    Ok(())
}
