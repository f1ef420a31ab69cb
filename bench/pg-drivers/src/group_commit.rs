//! Group commit as orderflow's order writer does it: clients hand orders to
//! one writer through a channel; the writer takes everything waiting (up to
//! 1024 orders) and writes it in one transaction, with up to 4 batches in
//! flight on their own pooled connections, then answers every client.

use crate::driver::Driver;
use crate::order::{now_millis, NewOrder};
use crate::stats::{gather, Sample, Window};
use anyhow::{anyhow, Context};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

pub const CLIENTS: usize = 64;
const MAX_ORDERS_PER_BATCH: usize = 1024;
const BATCHES_IN_FLIGHT: usize = 4;

type Reply = Result<(), String>;

struct Pending {
    order: NewOrder,
    reply: oneshot::Sender<Reply>,
}

#[derive(Default)]
struct Commits {
    batches: AtomicU64,
    orders: AtomicU64,
}

pub struct WriteOutcome {
    pub sample: Sample,
    pub commits: u64,
    pub orders: u64,
}

/// Runs `CLIENTS` clients against a fresh writer for the warm-up and then
/// the measured `duration`.
pub async fn measure<D: Driver>(driver: &D, warmup: Duration, duration: Duration) -> anyhow::Result<WriteOutcome> {
    let (tx, rx) = mpsc::channel(MAX_ORDERS_PER_BATCH * BATCHES_IN_FLIGHT);
    let commits = Arc::new(Commits::default());
    let writer = tokio::spawn(run_writer(driver.clone(), rx, commits.clone()));
    let window = Window::starting_now(warmup, duration);
    let clients = (0..CLIENTS).map(|_| tokio::spawn(client(tx.clone(), window))).collect();
    drop(tx);
    let latencies = gather(clients).await?;
    writer.await.context("the writer panicked")?;
    Ok(WriteOutcome {
        sample: Sample::new(latencies, window.seconds()),
        commits: commits.batches.load(Ordering::Relaxed),
        orders: commits.orders.load(Ordering::Relaxed),
    })
}

/// Submits one order at a time and waits for its commit.
async fn client(tx: mpsc::Sender<Pending>, window: Window) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    while window.open() {
        let order = NewOrder::generate();
        let (reply, answer) = oneshot::channel();
        let started = Instant::now();
        tx.send(Pending { order, reply }).await.map_err(|_| anyhow!("the writer stopped"))?;
        answer.await.context("the writer dropped an order")?.map_err(anyhow::Error::msg)?;
        window.record(&mut latencies, started);
    }
    Ok(latencies)
}

/// Gathers waiting orders into batches until every client is gone.
async fn run_writer<D: Driver>(driver: D, mut rx: mpsc::Receiver<Pending>, commits: Arc<Commits>) {
    let in_flight = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let Some(batch) = next_batch(&mut rx).await else { return };
        tokio::spawn(write_batch(driver.clone(), batch, commits.clone(), permit));
    }
}

async fn next_batch(rx: &mut mpsc::Receiver<Pending>) -> Option<Vec<Pending>> {
    let first = rx.recv().await?;
    let mut batch = Vec::with_capacity(64);
    batch.push(first);
    while batch.len() < MAX_ORDERS_PER_BATCH {
        match rx.try_recv() {
            Ok(pending) => batch.push(pending),
            Err(_) => break,
        }
    }
    Some(batch)
}

async fn write_batch<D: Driver>(driver: D, batch: Vec<Pending>, commits: Arc<Commits>, permit: OwnedSemaphorePermit) {
    let (orders, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.order, p.reply)).unzip();
    let result = driver.place_batch(&orders, now_millis()).await.map_err(|e| format!("{e:#}"));
    if result.is_ok() {
        commits.batches.fetch_add(1, Ordering::Relaxed);
        commits.orders.fetch_add(orders.len() as u64, Ordering::Relaxed);
    }
    for reply in replies {
        let _ = reply.send(result.clone());
    }
    drop(permit);
}
