//! Webhooks: the notifier POSTs every notification to `--webhook-url`,
//! signed per the Standard Webhooks spec (docs/operations.md#webhooks).
//!
//! Sending is not part of the notifier's batch: the notifier only writes a
//! delivery row with each notification, in the same transaction
//! (`Effect::Notify`), and this task, beside it, claims due deliveries and
//! sends them, `--webhook-concurrency` at a time, each bounded by
//! `--webhook-timeout-ms`. So a slow or dead receiver delays its own
//! deliveries and nothing else, and a crash between the commit and the POST
//! loses nothing: the row is still there (docs/architecture.md#the-webhook-delivery-queue).

mod delivery;
mod signing;

pub use signing::{Secret, SecretError};

use crate::config::ServeArgs;
use crate::domain::now_millis;
use crate::store::{Database, WebhookDelivery, WebhookOutcome};
use anyhow::Context;
use delivery::Attempt;
use reqwest::Url;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Where the key is read from: the environment only, as a flag would show in `ps`.
pub const SECRET_VARIABLE: &str = "ORDERFLOW_WEBHOOK_SECRET";

/// How long an idle task waits before looking for due deliveries again.
const POLL: Duration = Duration::from_millis(100);
/// How often the gauge of waiting deliveries is refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_STORE_BACKOFF: Duration = Duration::from_secs(5);

/// What the delivery task needs, checked at start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: Url,
    pub secret: Secret,
    pub timeout: Duration,
    pub concurrency: usize,
    pub retry_base: Duration,
    pub max_age: Duration,
}

impl Settings {
    /// The settings `args` and the environment give, `None` without a URL.
    /// A URL that is not http(s), or one without a valid secret, is refused.
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<Option<Settings>> {
        let secret = std::env::var(SECRET_VARIABLE).ok().filter(|s| !s.trim().is_empty());
        Settings::new(args, secret.as_deref())
    }

    fn new(args: &ServeArgs, secret: Option<&str>) -> anyhow::Result<Option<Settings>> {
        let Some(url) = args.webhook_url.as_deref().filter(|u| !u.trim().is_empty()) else {
            return Ok(None);
        };
        let url = Url::parse(url.trim()).with_context(|| format!("--webhook-url '{url}' is not a URL"))?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https") && url.has_host(),
            "--webhook-url '{url}' must be an http:// or https:// URL"
        );
        let secret = secret.with_context(|| format!("--webhook-url is set but {SECRET_VARIABLE} is not"))?;
        let secret = Secret::parse(secret).with_context(|| format!("{SECRET_VARIABLE} is not a valid secret"))?;
        Ok(Some(Settings {
            url,
            secret,
            timeout: Duration::from_millis(args.webhook_timeout_ms),
            concurrency: args.webhook_concurrency as usize,
            retry_base: Duration::from_millis(args.webhook_retry_base_ms),
            max_age: args.webhook_max_age,
        }))
    }

    /// How long a claim keeps a delivery from other claims: longer than its
    /// request, so only a process that died (or stalled) loses it.
    fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(5)
    }
}

/// Sends due deliveries until `shutdown` fires, then lets the requests in
/// flight finish (each is bounded by the timeout) and returns.
pub async fn run(store: Arc<dyn Database>, settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(settings.timeout)
        // A webhook goes where it was configured to go, nowhere else.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("orderflow/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the webhook HTTP client")?;
    let settings = Arc::new(settings);
    let mut in_flight: JoinSet<()> = JoinSet::new();
    let mut backoff = FIRST_BACKOFF;
    // Set on the first round, so that /metrics shows the gauge from the start.
    let mut gauge_at: Option<Instant> = None;
    tracing::info!(url = %settings.url, concurrency = settings.concurrency, "delivering webhooks");
    while !shutdown.is_cancelled() {
        if gauge_at.is_none_or(|at| at.elapsed() >= GAUGE_EVERY) {
            gauge_at = Some(Instant::now());
            if let Ok(n) = store.webhooks_waiting().await {
                metrics::gauge!(crate::telemetry::catalog::WEBHOOKS_WAITING).set(n as f64);
            }
        }
        let free = settings.concurrency - in_flight.len();
        let mut claimed = 0;
        if free > 0 {
            match store.claim_webhooks(free, settings.lease()).await {
                Ok(batch) => {
                    backoff = FIRST_BACKOFF;
                    claimed = batch.len();
                    for delivery in batch {
                        in_flight.spawn(deliver(store.clone(), client.clone(), settings.clone(), delivery));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, pause = ?backoff, "cannot claim webhook deliveries; backing off");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(MAX_STORE_BACKOFF);
                    continue;
                }
            }
        }
        // A full claim may have left more due: look again at once.
        if claimed > 0 && claimed == free {
            continue;
        }
        tokio::select! {
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {
                while in_flight.try_join_next().is_some() {}
            }
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.cancelled() => {}
        }
    }
    // What is still in flight finishes within its timeout; a delivery cut
    // off by the shutdown timeout is sent again once its lease ends.
    while in_flight.join_next().await.is_some() {}
    tracing::info!("webhook delivery stopped");
    Ok(())
}

/// One attempt at `delivery`, settled in the store.
async fn deliver(
    store: Arc<dyn Database>,
    client: reqwest::Client,
    settings: Arc<Settings>,
    delivery: WebhookDelivery,
) {
    let attempt = delivery::attempt(&client, &settings.url, &settings.secret, &delivery).await;
    let (outcome, counted) = decide(&settings, &delivery, attempt, now_millis());
    count(counted);
    match &outcome {
        WebhookOutcome::Delivered => tracing::debug!(webhook_id = %delivery.id, "webhook delivered"),
        WebhookOutcome::Retry { error, .. } => {
            tracing::info!(webhook_id = %delivery.id, %error, "webhook failed; retrying")
        }
        WebhookOutcome::Dead { error } => tracing::warn!(webhook_id = %delivery.id, %error, "webhook dead-lettered"),
    }
    // Unsettled, the delivery is claimed again when its lease ends: a
    // delivered one is then sent twice, which at least once allows.
    if let Err(e) = store.settle_webhook(&delivery.id, outcome).await {
        tracing::warn!(webhook_id = %delivery.id, error = %e, "cannot settle a webhook delivery; it will be retried");
    }
}

/// What an attempt at `now` (ms) makes of the delivery, and the outcome
/// it is counted under: a retryable failure is retried after a backoff
/// until the delivery is `max_age` old, then dead-lettered.
fn decide(
    settings: &Settings,
    delivery: &WebhookDelivery,
    attempt: Attempt,
    now: i64,
) -> (WebhookOutcome, &'static str) {
    match attempt {
        Attempt::Delivered => (WebhookOutcome::Delivered, "delivered"),
        Attempt::Final(error) => (WebhookOutcome::Dead { error }, "failed"),
        Attempt::Retryable(error) => {
            let age = Duration::from_millis((now - delivery.created_at).max(0) as u64);
            if age >= settings.max_age {
                let error = format!("{error} (retried for {})", humantime::format_duration(age));
                return (WebhookOutcome::Dead { error }, "dead");
            }
            let pause = delivery::backoff(settings.retry_base, delivery.attempts + 1);
            (WebhookOutcome::Retry { at: now + pause.as_millis() as i64, error }, "retried")
        }
    }
}

fn count(outcome: &'static str) {
    metrics::counter!(crate::telemetry::catalog::WEBHOOK_DELIVERIES, "outcome" => outcome).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cli, Command};
    use clap::Parser;

    fn args(extra: &[&str]) -> ServeArgs {
        let cli = Cli::parse_from(["orderflow", "notifier"].iter().chain(extra));
        match cli.command {
            Command::Notifier(args) => args,
            _ => unreachable!(),
        }
    }

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn failures_are_retried_with_backoff_until_the_max_age() {
        let settings = Settings::new(&args(&["--webhook-url", "http://h/x", "--webhook-max-age", "1h"]), Some(SECRET))
            .unwrap()
            .unwrap();
        let now = 10_000_000;
        let delivery = |age_ms: i64, attempts| WebhookDelivery {
            id: "e1".into(),
            body: "{}".into(),
            attempts,
            created_at: now - age_ms,
        };
        let young = delivery(1_000, 2);
        let decided = |d: &WebhookDelivery, a: Attempt| decide(&settings, d, a, now);
        assert_eq!(decided(&young, Attempt::Delivered), (WebhookOutcome::Delivered, "delivered"));
        let refused = decided(&young, Attempt::Final("HTTP 400 Bad Request".into()));
        assert_eq!(refused, (WebhookOutcome::Dead { error: "HTTP 400 Bad Request".into() }, "failed"));
        // Third failure: 4 × the 1 s base, less up to half.
        match decided(&young, Attempt::Retryable("HTTP 503".into())) {
            (WebhookOutcome::Retry { at, error }, "retried") => {
                assert!((now + 2_000..=now + 4_000).contains(&at), "{at}");
                assert_eq!(error, "HTTP 503");
            }
            other => panic!("{other:?}"),
        }
        let old = delivery(3_600_000, 40);
        match decided(&old, Attempt::Retryable("timed out".into())) {
            (WebhookOutcome::Dead { error }, "dead") => assert_eq!(error, "timed out (retried for 1h)"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_url_needs_a_valid_secret() {
        assert!(Settings::new(&args(&[]), None).unwrap().is_none(), "no URL, no webhooks");
        let with_url = args(&["--webhook-url", "http://127.0.0.1:9/hooks"]);
        let missing = Settings::new(&with_url, None).unwrap_err();
        assert!(format!("{missing:#}").contains(SECRET_VARIABLE), "{missing:#}");
        let bad = Settings::new(&with_url, Some("whsec_short")).unwrap_err();
        assert!(!format!("{bad:#}").contains("whsec_short"), "the secret is not repeated: {bad:#}");
        let ok = Settings::new(&with_url, Some(SECRET)).unwrap().unwrap();
        assert_eq!(ok.url.as_str(), "http://127.0.0.1:9/hooks");
        assert_eq!(ok.max_age, Duration::from_secs(24 * 3600));
        for wrong in ["ftp://host/x", "not a url", "http://"] {
            assert!(Settings::new(&args(&["--webhook-url", wrong]), Some(SECRET)).is_err(), "{wrong}");
        }
        let aged = args(&["--webhook-url", "https://hooks.example/x", "--webhook-max-age", "90m"]);
        assert_eq!(Settings::new(&aged, Some(SECRET)).unwrap().unwrap().max_age, Duration::from_secs(5400));
    }
}
