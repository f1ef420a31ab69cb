//! How often a message that was not handled is tried again.
//!
//! One policy for every queue: the `db` broker applies it when it settles a
//! batch (`QueueStore::consume`); RabbitMQ applies the same limit as its
//! queues' delivery limit.

use std::time::Duration;

/// What to do with a message that was not handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Deliver it again after this delay.
    RetryAfter(Duration),
    /// Move it to the dead-letter queue: retrying cannot help.
    DeadLetter,
}

/// Retries with exponential backoff, then the dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Failed deliveries after which a message is dead-lettered.
    pub max_attempts: u32,
    /// Delay before the first retry; it doubles each time, up to a minute.
    pub base: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 5, base: Duration::from_millis(200) }
    }
}

impl RetryPolicy {
    /// What to do with a message that has now failed `attempts` times.
    pub fn after_failure(&self, attempts: u32) -> Reject {
        if attempts >= self.max_attempts {
            Reject::DeadLetter
        } else {
            let factor = 1u32 << attempts.saturating_sub(1).min(10);
            Reject::RetryAfter((self.base * factor).min(Duration::from_secs(60)))
        }
    }

    /// The time a message spends waiting between its deliveries, all its
    /// retries together, before it is dead-lettered.
    pub fn retry_span(&self) -> Duration {
        (1..self.max_attempts)
            .map(|attempts| match self.after_failure(attempts) {
                Reject::RetryAfter(delay) => delay,
                Reject::DeadLetter => Duration::ZERO,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_dead_letters() {
        let p = RetryPolicy { max_attempts: 5, base: Duration::from_millis(100) };
        assert_eq!(p.after_failure(1), Reject::RetryAfter(Duration::from_millis(100)));
        assert_eq!(p.after_failure(2), Reject::RetryAfter(Duration::from_millis(200)));
        assert_eq!(p.after_failure(4), Reject::RetryAfter(Duration::from_millis(800)));
        assert_eq!(p.after_failure(5), Reject::DeadLetter);
        assert_eq!(p.after_failure(9), Reject::DeadLetter);
        let slow = RetryPolicy { max_attempts: 50, base: Duration::from_secs(1) };
        assert_eq!(slow.after_failure(30), Reject::RetryAfter(Duration::from_secs(60)));
        assert_eq!(p.retry_span(), Duration::from_millis(100 + 200 + 400 + 800));
    }
}
