//! Starting and stopping the roles.
//!
//! `serve` connects to the store and broker the configuration names, starts
//! the roles asked for (the API on a bound listener, the consuming services)
//! and runs them until asked to stop. A process without the API serves its
//! `/metrics` and `/health` on the same `--listen` address, so every role
//! can be scraped. A process with the API first drains:
//! `/ready` answers 503 while every request is still served, for
//! `--drain-secs` or until asked again. Then the API stops taking connections
//! and finishes its requests, each worker settles the batch it holds, and
//! `serve` returns.

use crate::api::{self, AppState};
use crate::broker::{AmqpBroker, Broker, DbBroker, RedisBroker, RedisSettings};
use crate::cache::{CacheSettings, OrderCache};
use crate::config::{AuthMode, Common, ServeArgs};
use crate::messaging::{BrokerError, RetryPolicy};
use crate::services::{self, Service, WorkerSettings};
use crate::store::{self, Database, OpenError, Prunable};
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Which roles one process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub api: bool,
    pub inventory: bool,
    pub notifier: bool,
    /// The outbox relay; it only runs when a network broker carries events.
    pub relay: bool,
}

impl Roles {
    pub const ALL: Roles = Roles { api: true, inventory: true, notifier: true, relay: true };
    pub const NONE: Roles = Roles { api: false, inventory: false, notifier: false, relay: false };
}

/// How a process is asked to stop: the first request starts a clean shutdown
/// (the API's drain first), a second skips what is left of the drain, so
/// Ctrl-C twice stops at once.
#[derive(Clone, Default)]
pub struct Shutdown {
    first: CancellationToken,
    again: CancellationToken,
}

impl Shutdown {
    /// Asks to stop; asked again, insists.
    pub fn request(&self) {
        if self.first.is_cancelled() {
            self.again.cancel();
        } else {
            self.first.cancel();
        }
    }
}

/// Why `connect` failed: a URL that can never work, or a database that may
/// be reachable later.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("unsupported broker URL '{0}': expected db, amqp://… or redis://…")]
    UnsupportedBrokerUrl(String),
    #[error("bad broker URL: {0}")]
    BadBrokerUrl(BrokerError),
    #[error(transparent)]
    Store(#[from] OpenError),
}

impl ConnectError {
    /// True when trying again cannot help: a URL names nothing this build knows.
    pub fn is_bad_url(&self) -> bool {
        matches!(
            self,
            ConnectError::UnsupportedBrokerUrl(_)
                | ConnectError::BadBrokerUrl(_)
                | ConnectError::Store(OpenError::UnsupportedUrl(_))
        )
    }
}

/// Opens the store and the broker the URLs name, for the operator's tools:
/// they consume nothing, so the retry policy's first delay is left as is.
pub async fn connect(common: &Common) -> Result<(Arc<dyn Database>, Arc<dyn Broker>), ConnectError> {
    open(common, RetryPolicy { max_attempts: common.max_attempts, ..RetryPolicy::default() }).await
}

/// Opens the store and the broker the URLs name; a broker that retries
/// deliveries itself (Redis) follows `retry`, as the workers do.
pub async fn open(common: &Common, retry: RetryPolicy) -> Result<(Arc<dyn Database>, Arc<dyn Broker>), ConnectError> {
    let store = store::open(&common.database_url).await?;
    let broker: Arc<dyn Broker> = match common.broker_url.as_str() {
        "db" => Arc::new(DbBroker::new(store.clone())),
        url if url.starts_with("amqp://") || url.starts_with("amqps://") => {
            Arc::new(AmqpBroker::new(url, common.max_attempts, common.prefetch))
        }
        url if url.starts_with("redis://") || url.starts_with("rediss://") => {
            let settings = RedisSettings {
                retry,
                claim_idle: common.redis_claim_idle(),
                trim_interval: common.redis_trim_interval(),
                allow_volatile: common.allow_volatile_broker,
            };
            Arc::new(RedisBroker::new(url, settings).map_err(ConnectError::BadBrokerUrl)?)
        }
        other => return Err(ConnectError::UnsupportedBrokerUrl(other.to_owned())),
    };
    Ok((store, broker))
}

/// Connects, retrying with backoff while the database is unreachable, so a
/// role started before its database (a container, a reboot) waits for it.
/// Returns `None` if shutdown comes first; a bad URL fails at once.
async fn connect_patiently(
    common: &Common,
    retry: RetryPolicy,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<(Arc<dyn Database>, Arc<dyn Broker>)>> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match open(common, retry).await {
            Ok(connected) => return Ok(Some(connected)),
            Err(e) if e.is_bad_url() => return Err(e.into()),
            Err(e) => tracing::warn!(error = format!("{e:#}"), pause = ?backoff, "cannot open the database; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return Ok(None),
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Runs `roles` until asked to stop.
pub async fn serve(common: &Common, args: &ServeArgs, roles: Roles, shutdown: Shutdown) -> anyhow::Result<()> {
    // Before anything resolves a metric's handle, which would otherwise go nowhere.
    let metrics = crate::telemetry::metrics_handle();
    let clients = api::ClientLimits {
        header_timeout: Duration::from_secs(args.header_timeout_secs),
        body_timeout: Duration::from_secs(args.body_timeout_secs),
        idle_timeout: Duration::from_secs(args.idle_timeout_secs),
        max_connections: args.max_connections as usize,
    };
    // Bound before the database is reached, so a worker waiting for it can
    // already be scraped (and a script that asked for port 0 learns where).
    let metrics_listener = match roles.api {
        true => None,
        false => Some(bind(args.listen(false), "metrics").await?),
    };
    let retry = RetryPolicy { max_attempts: common.max_attempts, base: args.retry_base() };
    services::pruner::check_inbox_window(
        common.inbox_retention,
        services::pruner::Redelivery {
            database_url: &common.database_url,
            broker_url: &common.broker_url,
            retry,
            redis_claim_idle: common.redis_claim_idle(),
        },
    )?;
    // A key that cannot verify tokens stops the process before it connects.
    let tokens = match (roles.api, args.auth) {
        (true, AuthMode::Jwt) => Some(Arc::new(api::JwtKey::from_env()?)),
        _ => None,
    };
    // Checked before anything starts: a URL without a usable secret stops here.
    let webhooks = crate::webhooks::Settings::from_args(args)?.filter(|_| roles.notifier);
    let Some((store, broker)) = connect_patiently(common, retry, &shutdown.first).await? else {
        return Ok(());
    };
    // A broker that must not be used stops the process here, with its
    // reason; one that is down is waited for by each role.
    match broker.preflight().await {
        Err(BrokerError::Refused(why)) => anyhow::bail!(why),
        Err(e) => tracing::warn!(error = %e, "the broker is not reachable yet; the roles will retry"),
        Ok(()) => {}
    }
    let cache = open_cache(common)?;
    // The roles stop on this token rather than on the request itself, so
    // that with the API it fires only once the drain is over.
    let stop = CancellationToken::new();
    let draining = CancellationToken::new();
    let mut tasks = JoinSet::new();
    if let Some(listener) = metrics_listener {
        tasks.spawn(api::serve_metrics(listener, metrics.clone(), clients, stop.clone()));
    }
    if roles.api {
        let listener = bind(args.listen(true), "API").await?;
        let live = crate::live::Hub::new(store.clone(), args.max_streams);
        tasks.spawn({
            let (live, stop) = (live.clone(), stop.clone());
            async move {
                live.run(stop).await;
                Ok(())
            }
        });
        let state = AppState {
            live,
            store: store.clone(),
            broker: broker.clone(),
            cache: cache.clone(),
            metrics,
            max_in_flight: args.max_in_flight,
            // Only from the environment: a flag would show in `ps`.
            operator: api::OperatorToken::from_env(),
            // Only from the environment too: a secret or a multi-line PEM.
            tokens,
            replay_rate: args.replay_rate,
            draining: draining.clone(),
            clients,
            retention: common.retention(),
        };
        tasks.spawn(api::serve(listener, state, stop.clone()));
    }
    let settings = WorkerSettings { batch_size: args.batch_size as usize, retry, cache, webhooks: webhooks.is_some() };
    if roles.relay && !args.without_relay && broker.publisher().is_some() {
        tasks.spawn(services::run_relay(store.clone(), broker.clone(), settings.batch_size, stop.clone()));
    }
    for (wanted, service) in [(roles.inventory, Service::Inventory), (roles.notifier, Service::Notifier)] {
        if wanted {
            tasks.spawn(service.run(store.clone(), broker.clone(), settings.clone(), stop.clone()));
        }
    }
    let pruned = pruned_by(roles, common);
    if !pruned.is_empty() {
        tasks.spawn(services::pruner::run(store.clone(), pruned, args.prune_interval, stop.clone()));
    }
    if let Some(webhooks) = webhooks {
        tasks.spawn(crate::webhooks::run(store.clone(), webhooks, stop.clone()));
    }
    // Run until asked to stop, or until a role ends on its own: a process
    // that lost its API or a worker must not look alive, so the others stop
    // too, at once. No role ends cleanly before `stop` fires.
    let mut failed = tokio::select! {
        _ = shutdown.first.cancelled() => None,
        Some(ended) = tasks.join_next() => Some(role_ended(ended)),
    };
    if roles.api && failed.is_none() {
        draining.cancel();
        failed = drain(args.drain(), &shutdown.again, &mut tasks).await;
    }
    stop.cancel();
    tracing::info!("shutting down: finishing work in flight");
    let settle = async {
        while let Some(done) = tasks.join_next().await {
            done.context("a role panicked")??;
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(args.shutdown_timeout), settle).await {
        Ok(result) => result?,
        Err(_) => tracing::warn!("shutdown timed out; unfinished work will be redelivered"),
    }
    tracing::info!("stopped");
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What a process running `roles` prunes: each role what it writes (the API
/// the idempotency keys, each consumer its inbox), with its window.
fn pruned_by(roles: Roles, common: &Common) -> Vec<(Prunable, Duration)> {
    let mut tables = Vec::new();
    if roles.api {
        tables.push((Prunable::IdempotencyKeys, common.idempotency_key_ttl));
    }
    if roles.inventory {
        tables.push((Prunable::Inbox(Service::Inventory.name().to_owned()), common.inbox_retention));
    }
    if roles.notifier {
        tables.push((Prunable::Notifications, common.inbox_retention));
    }
    tables
}

/// Binds `addr` and announces it, in the log and, as a machine-readable line
/// for scripts and tests that asked for port 0, on stdout.
async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "{what} listening");
    println!("listening on {addr}");
    Ok(listener)
}

/// The order cache `--cache-url` names, if any. Only a URL that cannot be
/// read stops the process; a cache that is down is skipped until it answers.
fn open_cache(common: &Common) -> anyhow::Result<Option<OrderCache>> {
    let Some(url) = common.cache_url.as_deref().filter(|url| !url.is_empty()) else {
        return Ok(None);
    };
    let settings = CacheSettings { timeout: common.cache_timeout(), ..CacheSettings::default() };
    Ok(Some(OrderCache::new(url, settings)?))
}

/// The API's drain, once `/ready` answers 503: every request is still served
/// for `period`, so a load balancer that only notices failures has taken
/// back the replica restarted before this one by the time this one closes
/// (why the default outlasts nginx's fail_timeout: `ServeArgs::drain_secs`).
/// Cut short by a second request to stop, or by a role that ends, which is
/// returned as the failure.
async fn drain(
    period: Duration,
    again: &CancellationToken,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> Option<anyhow::Error> {
    if period.is_zero() {
        return None;
    }
    tracing::info!(?period, "draining: /ready answers 503, requests are still served; signal again to stop now");
    tokio::select! {
        _ = tokio::time::sleep(period) => None,
        _ = again.cancelled() => {
            tracing::info!("asked again to stop: the drain is cut short");
            None
        }
        Some(ended) = tasks.join_next() => Some(role_ended(ended)),
    }
}

/// Why a role that ended before `stop` fired is a failure.
fn role_ended(ended: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Error {
    match ended {
        Ok(Ok(())) => anyhow::anyhow!("a role stopped unexpectedly"),
        Ok(Err(e)) => e,
        Err(e) => anyhow::anyhow!("a role panicked: {e}"),
    }
}

/// Requests `shutdown` on each SIGINT or SIGTERM. The handlers are installed
/// before this returns, so a signal that arrives early is not lost to its
/// default action.
#[cfg(unix)]
pub fn cancel_on_signal(shutdown: Shutdown) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::spawn(async move {
        loop {
            let received = tokio::select! {
                r = term.recv() => r,
                r = int.recv() => r,
            };
            if received.is_none() {
                return;
            }
            shutdown.request();
        }
    });
}

/// Requests `shutdown` on each Ctrl-C.
#[cfg(not(unix))]
pub fn cancel_on_signal(shutdown: Shutdown) {
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            shutdown.request();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogFormat;

    fn common(database_url: &str, broker_url: &str) -> Common {
        Common {
            database_url: database_url.into(),
            broker_url: broker_url.into(),
            max_attempts: 5,
            prefetch: 16,
            allow_volatile_broker: false,
            redis_claim_idle_ms: 30_000,
            redis_trim_interval_ms: 1_000,
            cache_url: None,
            cache_timeout_ms: 50,
            idempotency_key_ttl: Duration::from_secs(86_400),
            inbox_retention: Duration::from_secs(7 * 86_400),
            log_format: LogFormat::Text,
        }
    }

    #[tokio::test]
    async fn a_bad_url_is_told_from_a_store_that_cannot_be_opened() {
        let dir = tempfile::tempdir().unwrap();
        let good = format!("sqlite://{}", dir.path().join("orders.db").display());
        assert!(connect(&common("mysql://db", "db")).await.err().unwrap().is_bad_url());
        assert!(connect(&common(&good, "kafka://k")).await.err().unwrap().is_bad_url());
        let missing = format!("sqlite://{}", dir.path().join("no/such/dir/orders.db").display());
        assert!(!connect(&common(&missing, "db")).await.err().unwrap().is_bad_url());
    }
}
