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
    let mut gauge_at = Instant::now();
    tracing::info!(url = %settings.url, concurrency = settings.concurrency, "delivering webhooks");
    while !shutdown.is_cancelled() {
        if gauge_at.elapsed() >= GAUGE_EVERY {
            gauge_at = Instant::now();
            if let Ok(n) = store.webhooks_waiting().await {
                metrics::gauge!("orderflow_webhook_deliveries_waiting").set(n as f64);
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
    let outcome = match delivery::attempt(&client, &settings.url, &settings.secret, &delivery).await {
        Attempt::Delivered => {
            tracing::debug!(webhook_id = %delivery.id, "webhook delivered");
            count("delivered");
            WebhookOutcome::Delivered
        }
        Attempt::Final(error) => {
            tracing::warn!(webhook_id = %delivery.id, %error, "webhook refused; dead-lettered");
            count("failed");
            WebhookOutcome::Dead { error }
        }
        Attempt::Retryable(error) => {
            let now = now_millis();
            let age = Duration::from_millis((now - delivery.created_at).max(0) as u64);
            if age >= settings.max_age {
                tracing::warn!(webhook_id = %delivery.id, %error, ?age, "webhook failed past its max age; dead-lettered");
                count("dead");
                WebhookOutcome::Dead { error: format!("{error} (retried for {})", humantime::format_duration(age)) }
            } else {
                let pause = delivery::backoff(settings.retry_base, delivery.attempts + 1);
                tracing::info!(webhook_id = %delivery.id, %error, ?pause, "webhook failed; retrying");
                count("retried");
                WebhookOutcome::Retry { at: now + pause.as_millis() as i64, error }
            }
        }
    };
    // Unsettled, the delivery is claimed again when its lease ends: a
    // delivered one is then sent twice, which at least once allows.
    if let Err(e) = store.settle_webhook(&delivery.id, outcome).await {
        tracing::warn!(webhook_id = %delivery.id, error = %e, "cannot settle a webhook delivery; it will be retried");
    }
}

fn count(outcome: &'static str) {
    metrics::counter!("orderflow_webhook_deliveries_total", "outcome" => outcome).increment(1);
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
