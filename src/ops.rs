//! The operator's tools: schema migration, stock levels and dead letters.
//!
//! They open the same database the server uses, so they work while it runs.

use crate::app::connect;
use crate::config::{Common, DlqCommand, StockCommand};
use crate::domain::Sku;
use crate::messaging::DeadLetter;
use crate::services::replay::screen;

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

/// Most dead letters one `dlq replay` looks at.
const MAX_REPLAY: usize = 10_000;

pub async fn dlq(common: &Common, command: DlqCommand) -> anyhow::Result<()> {
    let (store, broker) = connect(common).await?;
    match command {
        DlqCommand::List { limit } => {
            for letter in broker.dead_letters(limit).await? {
                println!("{}", serde_json::to_string(&letter)?);
            }
        }
        DlqCommand::Replay { id, all: _ } => {
            // Each letter is screened, then replayed by its id, so that none
            // applies an effect its order shows applied (`services::replay`).
            let letters = broker.dead_letters(MAX_REPLAY).await?;
            let chosen: Vec<&DeadLetter> =
                letters.iter().filter(|l| id.as_ref().is_none_or(|want| *want == l.id)).collect();
            if let Some(id) = id.as_ref().filter(|_| chosen.is_empty()) {
                anyhow::bail!("no dead letter has the id {id}");
            }
            let verdicts = screen(store.as_ref(), &chosen, common.inbox_retention).await?;
            let mut moved = 0;
            for (letter, verdict) in chosen.iter().zip(verdicts) {
                match verdict {
                    None => moved += broker.replay(Some(letter.id.clone())).await?,
                    Some(reason) => println!("skipped {}: {reason}", letter.id),
                }
            }
            println!("replayed {moved} message(s)");
        }
    }
    Ok(())
}
