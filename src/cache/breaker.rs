//! Skipping the cache for a moment after it failed.
//!
//! Every cache call is bounded by `--cache-timeout-ms`, but a Redis that is
//! down or hung would still cost each request that long, for as long as it
//! stays so. After a failure the breaker stays open for `pause`: calls skip
//! the cache at once (the API reads the store), and the first call after the
//! pause tries Redis again, closing the breaker if it answers. No state
//! machine beyond that: a second failure simply opens it again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Breaker {
    /// Where the clock below starts; an `Instant` cannot live in an atomic.
    epoch: Instant,
    /// Microseconds after `epoch` until which calls skip the cache.
    open_until: AtomicU64,
    pause: Duration,
    /// Whether the last call failed: only the changes are logged, not every
    /// failure of an outage.
    failing: AtomicBool,
}

impl Breaker {
    pub fn new(pause: Duration) -> Self {
        Self { epoch: Instant::now(), open_until: AtomicU64::new(0), pause, failing: AtomicBool::new(false) }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Whether a call may try the cache now.
    pub fn allows(&self) -> bool {
        self.now() >= self.open_until.load(Ordering::Relaxed)
    }

    /// A call failed: skip the cache for `pause`.
    pub fn failed(&self, why: &str) {
        let until = self.now() + self.pause.as_micros() as u64;
        self.open_until.store(until, Ordering::Relaxed);
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = why, pause = ?self.pause, "the order cache failed; reading the store instead");
        }
    }

    /// A call succeeded.
    pub fn succeeded(&self) {
        if self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!("the order cache answers again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_skips_the_cache_for_the_pause_only() {
        let breaker = Breaker::new(Duration::from_millis(100));
        assert!(breaker.allows());
        breaker.failed("down");
        assert!(!breaker.allows(), "open right after a failure");
        std::thread::sleep(Duration::from_millis(120));
        assert!(breaker.allows(), "tried again after the pause");
        breaker.succeeded();
        assert!(breaker.allows());
        breaker.failed("down again");
        assert!(!breaker.allows(), "a second failure opens it again");
    }
}
