//! Point reads: concurrent `SELECT … FROM orders WHERE id = $1` on random
//! existing ids, through the driver's pool.

use crate::driver::Driver;
use crate::stats::{gather, Sample, Window};
use anyhow::Context;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

pub const READERS: usize = 64;

pub async fn measure<D: Driver>(
    driver: &D,
    ids: Arc<[Uuid]>,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Sample> {
    let window = Window::starting_now(warmup, duration);
    let readers =
        (0..READERS as u64).map(|seed| tokio::spawn(reader(driver.clone(), ids.clone(), window, seed))).collect();
    Ok(Sample::new(gather(readers).await?, window.seconds()))
}

async fn reader<D: Driver>(driver: D, ids: Arc<[Uuid]>, window: Window, seed: u64) -> anyhow::Result<Vec<Duration>> {
    let mut random = SplitMix64(seed);
    let mut latencies = Vec::new();
    while window.open() {
        let id = ids[random.below(ids.len())];
        let started = Instant::now();
        let row = driver.get_order(id).await?.with_context(|| format!("order {id} was not found"))?;
        window.record(&mut latencies, started);
        row.check(id)?;
    }
    Ok(latencies)
}

/// A small, fast generator: the ids only need to be spread evenly.
struct SplitMix64(u64);

impl SplitMix64 {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}
