//! Measurement windows and latency samples.

use anyhow::Context;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// A warm-up followed by the measured interval. Operations that complete
/// inside the interval are counted; the others only keep the load steady.
#[derive(Clone, Copy)]
pub struct Window {
    from: Instant,
    until: Instant,
}

impl Window {
    pub fn starting_now(warmup: Duration, duration: Duration) -> Self {
        let from = Instant::now() + warmup;
        Self { from, until: from + duration }
    }

    /// Whether new operations should still be started.
    pub fn open(&self) -> bool {
        Instant::now() < self.until
    }

    /// Records the latency of an operation started at `started` that has
    /// just completed, if it completed inside the measured interval.
    pub fn record(&self, latencies: &mut Vec<Duration>, started: Instant) {
        let done = Instant::now();
        if done >= self.from && done <= self.until {
            latencies.push(done - started);
        }
    }

    pub fn seconds(&self) -> f64 {
        (self.until - self.from).as_secs_f64()
    }
}

/// Awaits tasks that each return the latencies they recorded.
pub async fn gather(tasks: Vec<JoinHandle<anyhow::Result<Vec<Duration>>>>) -> anyhow::Result<Vec<Duration>> {
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.context("a load task panicked")??);
    }
    Ok(all)
}

/// The operations completed in one or more measured intervals.
pub struct Sample {
    latencies: Vec<Duration>,
    seconds: f64,
}

impl Sample {
    pub fn new(mut latencies: Vec<Duration>, seconds: f64) -> Self {
        latencies.sort_unstable();
        Self { latencies, seconds }
    }

    pub fn merge<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Self {
        let (mut latencies, mut seconds) = (Vec::new(), 0.0);
        for s in samples {
            latencies.extend_from_slice(&s.latencies);
            seconds += s.seconds;
        }
        Self::new(latencies, seconds)
    }

    pub fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.seconds
    }

    /// The `p`-th percentile latency in milliseconds (nearest rank).
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1].as_secs_f64() * 1000.0
    }
}
