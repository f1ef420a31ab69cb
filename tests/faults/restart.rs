//! A rolling restart at an orchestrator's pace, seen by a careful client.
//!
//! `scripts/cluster restart-api-fast` sends SIGTERM to the next API replica
//! as soon as the one restarted before it answers `/ready`, for 8 cycles (one
//! cycle, one replica restarted: api1, api2, api3, api1, …). nginx skips a
//! replica for 2 s after one failure and never reads `/ready`, so this only
//! passes if what a replica does on SIGTERM outlasts those 2 s. Meanwhile a
//! client sends every order with a key of its own and retries once after
//! 0.5 s. It must see no failure, every key must have made exactly one order,
//! and the usual audit must hold. `ORDERFLOW_RESTART_RUNS` (1) repeats it.

use crate::audit::{audit, wait_idle, Row};
use crate::cluster::{Cluster, Topology};
use crate::helpers::{Client, Env};
use crate::load::{self, Tally};
use crate::{report, SERIAL, STOCK_PER_SKU};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const CYCLES: usize = 8;
const SCENARIO: &str = "fast rolling restart (SIGTERM at /ready), 8 cycles, careful client";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_rolling_restart_is_invisible() {
    let _serial = SERIAL.lock().await;
    let Some(env) = Env::postgres(true) else { return };
    let runs: usize = std::env::var("ORDERFLOW_RESTART_RUNS").map_or(1, |v| v.parse().expect("a number of runs"));
    let cluster = Cluster::up(&env, Topology::RabbitMq);
    let client = Client::new(&format!("127.0.0.1:{}", cluster.port));
    for run in 1..=runs {
        let tag = format!("fast{run}");
        let skus: Vec<String> = (1..=4).map(|k| format!("{tag}-sku{k}")).collect();
        for sku in &skus {
            env.set_stock(sku, STOCK_PER_SKU);
        }
        let dead_before = env.dead_letters().len();
        let stop = CancellationToken::new();
        let load = tokio::spawn(load::drive_careful(client.clone(), skus.clone(), stop.clone(), tag.clone()));
        tokio::time::sleep(Duration::from_secs(2)).await;
        // The script blocks for the whole restart; the load runs on the other thread.
        let restart = Instant::now();
        let out = tokio::task::block_in_place(|| cluster.script(&["restart-api-fast", &CYCLES.to_string()]));
        let restart = restart.elapsed();
        assert!(out.contains(&format!("done: {CYCLES} cycles")), "{out}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.cancel();
        let tally = load.await.unwrap();
        let settle = Instant::now();
        wait_idle(&env, Duration::from_secs(120)).await;
        let settle = settle.elapsed();
        let dead = env.dead_letters().len() - dead_before;
        let row = audit(&env, SCENARIO.into(), &tally, &skus, STOCK_PER_SKU, dead);
        report(&format!(
            "run {run} of {runs}: {CYCLES} cycles in {restart:.1?}, idle {settle:.1?} later; {} keys, {} first attempts failed and were retried, {} failed after the retry {:?}\n{}\n{}",
            tally.orders_by_key.len() + row.client_errors,
            tally.retried,
            row.client_errors,
            tally.failures,
            Row::HEADER,
            row.line()
        ));
        assert_eq!(row.client_errors, 0, "run {run}: the client saw failures after its retry");
        assert_eq!(row.lost, 0, "run {run}: accepted orders lost");
        assert_eq!(row.reserved_twice, 0, "run {run}: stock reserved twice");
        assert!(row.stock_conserved, "run {run}: stock not conserved");
        assert_eq!(row.dead_letters, 0, "run {run}: dead letters");
        assert!(row.accepted > 0, "run {run}: no order was accepted");
        one_order_per_key(&env, &tag, &tally);
    }
}

/// Each key made exactly one order, the one the client was answered with,
/// and the orders of this run are exactly those.
fn one_order_per_key(env: &Env, tag: &str, tally: &Tally) {
    let rows = env.sql(&format!("SELECT key, order_id FROM idempotency_keys WHERE key LIKE '{tag}-key-%'"));
    let stored: HashMap<String, String> = rows
        .lines()
        .map(|l| l.split_once('|').map(|(k, id)| (k.to_owned(), id.to_owned())).expect("key|order_id"))
        .collect();
    assert_eq!(stored, tally.orders_by_key, "the stored keys and their orders are those the client was answered with");
    let orders: usize =
        env.sql(&format!("SELECT count(*) FROM orders WHERE customer_id LIKE '{tag}-c%'")).parse().unwrap();
    assert_eq!(orders, stored.len(), "one order per key, and no order without one");
}
