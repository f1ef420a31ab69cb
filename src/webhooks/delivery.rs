//! One attempt at a delivery: the signed POST, what its answer means, and
//! when to try again.
//!
//! A 2xx delivers. Timeouts, connection errors, 5xx, 408 and 429 are worth
//! another attempt; any other answer (another 4xx, or a redirect, which is
//! not followed) is final: the receiver will not take this body.

use super::signing::Secret;
use crate::store::WebhookDelivery;
use rand::Rng;
use reqwest::{StatusCode, Url};
use std::time::Duration;

/// The longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Attempt {
    Delivered,
    /// Failed in a way another attempt may not (the why, for the logs).
    Retryable(String),
    /// The receiver refused it for good.
    Final(String),
}

/// Sends `delivery` once, signed now.
pub(super) async fn attempt(
    client: &reqwest::Client,
    url: &Url,
    secret: &Secret,
    delivery: &WebhookDelivery,
) -> Attempt {
    let timestamp = chrono::Utc::now().timestamp();
    let signature = secret.sign(&delivery.id, timestamp, delivery.body.as_bytes());
    let sent = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &delivery.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(delivery.body.clone())
        .send()
        .await;
    match sent {
        Ok(response) => judge(response.status()),
        // Timeouts, refused or reset connections, TLS failures: the
        // receiver may be back soon.
        Err(e) => Attempt::Retryable(describe(&e)),
    }
}

/// What an answer's status means for the delivery.
pub(super) fn judge(status: StatusCode) -> Attempt {
    if status.is_success() {
        Attempt::Delivered
    } else if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        Attempt::Retryable(format!("HTTP {status}"))
    } else {
        Attempt::Final(format!("HTTP {status}"))
    }
}

/// The pause before the next attempt of a delivery that has now failed
/// `failures` times: `base` doubling with each failure, up to ten minutes,
/// of which a random half is taken off, so deliveries that failed together
/// (a receiver that went down) do not all come back at the same instant.
pub(super) fn backoff(base: Duration, failures: i64) -> Duration {
    let doublings = failures.saturating_sub(1).clamp(0, 30) as u32;
    let full = base.saturating_mul(1 << doublings.min(20)).min(MAX_BACKOFF);
    let half = full / 2;
    half + rand::rng().random_range(Duration::ZERO..=half)
}

/// The error with its causes: reqwest's own message ("error sending
/// request") does not say what went wrong.
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() { "timed out".to_owned() } else { e.to_string() };
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_2xx_delivers_and_only_passing_trouble_is_retried() {
        for ok in [200, 201, 202, 204] {
            assert_eq!(judge(StatusCode::from_u16(ok).unwrap()), Attempt::Delivered, "{ok}");
        }
        for again in [500, 502, 503, 504, 408, 429] {
            assert!(matches!(judge(StatusCode::from_u16(again).unwrap()), Attempt::Retryable(_)), "{again}");
        }
        for never in [400, 401, 403, 404, 410, 422, 301, 302] {
            assert!(matches!(judge(StatusCode::from_u16(never).unwrap()), Attempt::Final(_)), "{never}");
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_a_cap() {
        let base = Duration::from_secs(1);
        for _ in 0..200 {
            let first = backoff(base, 1);
            assert!(first >= Duration::from_millis(500) && first <= base, "{first:?}");
            let fourth = backoff(base, 4);
            assert!(fourth >= Duration::from_secs(4) && fourth <= Duration::from_secs(8), "{fourth:?}");
            let late = backoff(base, 1_000);
            assert!(late >= MAX_BACKOFF / 2 && late <= MAX_BACKOFF, "{late:?}");
        }
        let spread: std::collections::HashSet<Duration> = (0..50).map(|_| backoff(base, 3)).collect();
        assert!(spread.len() > 1, "jitter spreads the retries");
    }
}
