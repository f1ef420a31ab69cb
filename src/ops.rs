//! The operator's tools: schema migration, stock levels, dead letters and
//! dead-lettered webhooks.
//!
//! They open the same database the server uses, so they work while it runs.

use crate::app::connect;
use crate::config::{Common, DlqCommand, StockCommand, WebhookCommand};
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
            println!("sku\tavailable\treserved");
            for level in store.list_stock().await? {
                println!("{}\t{}\t{}", level.sku, level.available, level.reserved);
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

pub async fn webhooks(common: &Common, command: WebhookCommand) -> anyhow::Result<()> {
    let (store, _) = connect(common).await?;
    match command {
        WebhookCommand::List { limit } => {
            for letter in store.webhook_dead_letters(limit).await? {
                println!("{}", serde_json::to_string(&letter)?);
            }
        }
        WebhookCommand::Replay { id, all: _ } => {
            let moved = store.replay_webhooks(id).await?;
            println!("replayed {moved} webhook(s)");
        }
    }
    Ok(())
}
