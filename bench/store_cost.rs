//! The SQLite writer's work per order, without HTTP: places orders in rounds
//! of 64 (one group commit each), and after every round lets the inventory
//! service and the notifier take what is queued, as `orderflow run` does
//! under load. Prints the writer thread's CPU time per order.
//!
//! Run it under `valgrind --tool=callgrind --separate-threads=yes` for an
//! instruction count that does not drift with the machine (bench/README.md).
//! Usage: store-cost [ORDERS]   (default 20000)

use orderflow::domain::{CustomerId, LineItem, NewOrder, OrderId, Quantity, Sku};
use orderflow::messaging::{RetryPolicy, QUEUE_INVENTORY_EVENTS, QUEUE_ORDER_EVENTS};
use orderflow::store::{Effect, PlaceOrder, QueueStore, SqliteStore, Store};

const ROUND: usize = 64;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let orders: usize = std::env::args().nth(1).map(|n| n.parse()).transpose()?.unwrap_or(20_000);
    let dir = tempfile::tempdir()?;
    let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("cost.db").to_string_lossy()).await?);
    for i in 1..=8 {
        store.set_stock(&format!("sku-{i}"), 1_000_000_000).await?;
    }
    let before = writer_cpu();
    let started = std::time::Instant::now();
    let mut placed = 0;
    while placed < orders {
        let round: Vec<_> = (0..ROUND.min(orders - placed))
            .map(|i| {
                let store = store.clone();
                let n = (placed + i) % 8 + 1;
                tokio::spawn(async move {
                    let items = vec![LineItem { sku: Sku::parse(format!("sku-{n}"))?, quantity: Quantity::parse(1)? }];
                    let order = NewOrder::new(CustomerId::parse(format!("bench-{n}"))?, items)?;
                    store.place_order(PlaceOrder { id: OrderId::new(), order, idempotency: None, trace: None }).await?;
                    anyhow::Ok(())
                })
            })
            .collect();
        placed += round.len();
        for task in round {
            task.await??;
        }
        consume(&store).await?;
    }
    let elapsed = started.elapsed();
    let cpu = writer_cpu() - before;
    println!(
        "{orders} orders in {:.2} s; writer CPU {:.1} µs per order",
        elapsed.as_secs_f64(),
        cpu * 1e6 / orders as f64
    );
    Ok(())
}

/// Takes everything queued, as the two consumers would.
async fn consume(store: &SqliteStore) -> anyhow::Result<()> {
    let policy = RetryPolicy::default();
    for (queue, effect) in [(QUEUE_ORDER_EVENTS, Effect::Reserve), (QUEUE_INVENTORY_EVENTS, Effect::Notify)] {
        while store.consume("store-cost", queue, effect, 256, policy).await?.taken > 0 {}
    }
    Ok(())
}

/// CPU seconds the `sqlite-writer` thread has used.
fn writer_cpu() -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter(|stat| stat.contains("(sqlite-writer)"))
        .map(|stat| {
            let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
            let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            (ticks(11) + ticks(12)) / tick
        })
        .sum()
}
