//! Intake first: in a spike, the workers of a process give way to its API.
//!
//! An order's `202` waits for nothing but its own commit; reserving and
//! notifying can come later. When the API and the workers share a machine
//! (`orderflow run`, or roles packed together), they compete for the same
//! CPU and the same database, and a worker that keeps pace with a spike takes
//! that capacity from the requests. So while the API is busy, each worker
//! beside it works only part of the time: after a batch that took `t`, it
//! pauses for `t × (1 − share) / share`. The queues absorb the difference and
//! drain at full speed once the spike is over.
//!
//! The lag is bounded: the share grows with the age of the oldest order in
//! the batch, from `share` for a fresh order to all of the time for one that
//! has waited `max_lag`, so under a long run of heavy load the workers settle
//! where they keep up, at some lag below `max_lag`, and past it they run flat
//! out, spike or not. A worker gives way only while the API is busy, which
//! here means at least `BUSY_AT` requests are placing orders at once: under
//! light load it never pauses, and neither does a worker in a process without
//! the API.

use crate::domain::{now_millis, OrderId};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Requests placing orders at once from which the API counts as busy.
pub const BUSY_AT: usize = 8;
/// Longest single pause, whatever the batch took.
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// The requests this process's API is placing right now.
#[derive(Debug, Default)]
pub struct Intake {
    placing: AtomicUsize,
}

impl Intake {
    /// Counts a request as placing an order until the guard is dropped.
    pub fn placing(&self) -> Placing<'_> {
        self.placing.fetch_add(1, Ordering::Relaxed);
        Placing(self)
    }

    pub fn busy(&self) -> bool {
        self.placing.load(Ordering::Relaxed) >= BUSY_AT
    }
}

/// A request placing an order; see [`Intake::placing`].
pub struct Placing<'a>(&'a Intake);

impl Drop for Placing<'_> {
    fn drop(&mut self) {
        self.0.placing.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a worker gives way to the API beside it.
#[derive(Debug, Clone)]
pub struct Pacing {
    pub intake: Arc<Intake>,
    /// Part of the time a worker works while the API is busy and its orders
    /// are fresh, in (0, 1]; 1 never pauses.
    pub share: f64,
    /// Age of the orders in hand at which a worker no longer gives way.
    pub max_lag: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Self { intake: Arc::default(), share: 1.0, max_lag: Duration::from_secs(30) }
    }
}

impl Pacing {
    /// The pause after a batch that took `busy`, whose oldest order is
    /// `oldest` (the id of a UUIDv7 carries its creation time).
    pub fn pause_after(&self, busy: Duration, oldest: Option<OrderId>) -> Duration {
        if self.share >= 1.0 || !self.intake.busy() {
            return Duration::ZERO;
        }
        let Some(oldest) = oldest else { return Duration::ZERO };
        let age = now_millis().saturating_sub(oldest.created_millis()).max(0) as f64;
        let lag = age / self.max_lag.as_millis().max(1) as f64;
        if lag >= 1.0 {
            return Duration::ZERO;
        }
        let share = self.share + (1.0 - self.share) * lag;
        busy.mul_f64((1.0 - share) / share).min(MAX_PAUSE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacing(share: f64) -> Pacing {
        Pacing { intake: Arc::default(), share, max_lag: Duration::from_secs(30) }
    }

    fn busy(intake: &Intake) -> Vec<Placing<'_>> {
        (0..BUSY_AT).map(|_| intake.placing()).collect()
    }

    #[test]
    fn a_worker_gives_way_only_while_the_api_is_busy() {
        let p = pacing(0.25);
        let batch = Duration::from_millis(10);
        let young = Some(OrderId::new());
        assert_eq!(p.pause_after(batch, young), Duration::ZERO, "idle API");
        let placing = busy(&p.intake);
        let pause = p.pause_after(batch, young);
        assert!(
            pause > Duration::from_millis(29) && pause <= Duration::from_millis(30),
            "a quarter of the time: {pause:?}"
        );
        assert_eq!(p.pause_after(Duration::from_secs(5), young), MAX_PAUSE);
        drop(placing);
        assert!(!p.intake.busy(), "every guard dropped");
        assert_eq!(p.pause_after(batch, young), Duration::ZERO);
    }

    /// An order placed `secs` seconds ago.
    fn placed_ago(secs: i64) -> OrderId {
        let at = uuid::Timestamp::from_unix(uuid::NoContext, (now_millis() / 1000 - secs) as u64, 0);
        OrderId::from_uuid(uuid::Uuid::new_v7(at))
    }

    #[test]
    fn the_longer_orders_wait_the_less_a_worker_pauses() {
        let p = pacing(0.25);
        let _placing = busy(&p.intake);
        let batch = Duration::from_millis(10);
        // 15 s of 30: the share is halfway from a quarter to all, 5/8.
        let halfway = p.pause_after(batch, Some(placed_ago(15)));
        assert!(halfway > Duration::from_millis(5) && halfway < Duration::from_millis(7), "{halfway:?}");
        assert!(p.pause_after(batch, Some(placed_ago(28))) < halfway);
    }

    #[test]
    fn a_worker_behind_by_max_lag_or_with_share_one_never_pauses() {
        let p = pacing(0.25);
        let _placing = busy(&p.intake);
        assert_eq!(p.pause_after(Duration::from_millis(10), Some(placed_ago(31))), Duration::ZERO);
        assert_eq!(p.pause_after(Duration::from_millis(10), None), Duration::ZERO);
        let never = Pacing { share: 1.0, ..p.clone() };
        assert_eq!(never.pause_after(Duration::from_millis(10), Some(OrderId::new())), Duration::ZERO);
    }
}
