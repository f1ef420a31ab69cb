//! Starting and stopping the roles.
//!
//! `serve` connects to the store and broker the configuration names, starts
//! the roles asked for (the API on a bound listener, the consuming services)
//! and runs them until the shutdown token fires. Then the API stops taking
//! connections and finishes its requests, each worker settles the batch it
//! holds, and `serve` returns.

use crate::api::{self, AppState};
use crate::broker::{AmqpBroker, Broker, DbBroker, RetryPolicy};
use crate::config::{Common, ServeArgs};
use crate::services::{self, Service, WorkerSettings};
use crate::store::{self, Database};
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

/// Opens the store and the broker the URLs name.
pub async fn connect(common: &Common) -> anyhow::Result<(Arc<dyn Database>, Arc<dyn Broker>)> {
    let store = store::open(&common.database_url).await?;
    let broker: Arc<dyn Broker> = match common.broker_url.as_str() {
        "db" => Arc::new(DbBroker::new(store.clone())),
        url if url.starts_with("amqp://") || url.starts_with("amqps://") => {
            Arc::new(AmqpBroker::new(url, common.max_attempts, common.prefetch))
        }
        other => anyhow::bail!("unsupported broker URL '{other}': expected db or amqp://…"),
    };
    Ok((store, broker))
}

/// Connects, retrying with backoff while the database is unreachable, so a
/// role started before its database (a container, a reboot) waits for it.
/// Returns `None` if shutdown comes first; a bad URL fails at once.
async fn connect_patiently(
    common: &Common,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<(Arc<dyn Database>, Arc<dyn Broker>)>> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match connect(common).await {
            Ok(connected) => return Ok(Some(connected)),
            Err(e) if e.to_string().starts_with("unsupported") => return Err(e),
            Err(e) => tracing::warn!(error = format!("{e:#}"), pause = ?backoff, "cannot open the database; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return Ok(None),
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Runs `roles` until `shutdown` fires.
pub async fn serve(common: &Common, args: &ServeArgs, roles: Roles, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Some((store, broker)) = connect_patiently(common, &shutdown).await? else {
        return Ok(());
    };
    let mut tasks = JoinSet::new();
    if roles.api {
        let listener = TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        let addr = listener.local_addr()?;
        let state = AppState {
            store: store.clone(),
            broker: broker.clone(),
            metrics: crate::telemetry::metrics_handle(),
            max_in_flight: args.max_in_flight,
            clients: api::ClientLimits {
                header_timeout: Duration::from_secs(args.header_timeout_secs),
                body_timeout: Duration::from_secs(args.body_timeout_secs),
                idle_timeout: Duration::from_secs(args.idle_timeout_secs),
                max_connections: args.max_connections as usize,
            },
        };
        tracing::info!(%addr, "API listening");
        // A machine-readable line for scripts and tests that asked for port 0.
        println!("listening on {addr}");
        tasks.spawn(api::serve(listener, state, shutdown.clone()));
    }
    let settings = WorkerSettings {
        batch_size: args.batch_size as usize,
        retry: RetryPolicy { max_attempts: common.max_attempts, base: args.retry_base() },
    };
    if roles.relay && !args.without_relay && broker.publisher().is_some() {
        tasks.spawn(services::run_relay(store.clone(), broker.clone(), settings.batch_size, shutdown.clone()));
    }
    for (wanted, service) in [(roles.inventory, Service::Inventory), (roles.notifier, Service::Notifier)] {
        if wanted {
            tasks.spawn(service.run(store.clone(), broker.clone(), settings.clone(), shutdown.clone()));
        }
    }
    // Run until asked to stop, or until a role ends on its own: a process
    // that lost its API or a worker must not look alive, so the others stop too.
    // A role that ends cleanly because the token fired is no failure: the
    // token is checked first, and again when a role ends.
    let mut failed = None;
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => {}
        Some(ended) = tasks.join_next() => {
            failed = match ended {
                Ok(Ok(())) if shutdown.is_cancelled() => None,
                Ok(Ok(())) => Some(anyhow::anyhow!("a role stopped unexpectedly")),
                Ok(Err(e)) => Some(e),
                Err(e) => Some(anyhow::anyhow!("a role panicked: {e}")),
            };
            shutdown.cancel();
        }
    }
    tracing::info!("shutting down: finishing work in flight");
    let drain = async {
        while let Some(done) = tasks.join_next().await {
            done.context("a role panicked")??;
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(args.shutdown_timeout), drain).await {
        Ok(result) => result?,
        Err(_) => tracing::warn!("shutdown timed out; unfinished work will be redelivered"),
    }
    tracing::info!("stopped");
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Fires `token` on SIGINT or SIGTERM. The handlers are installed before this
/// returns, so a signal that arrives early is not lost to its default action.
#[cfg(unix)]
pub fn cancel_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        token.cancel();
    });
}

/// Fires `token` on Ctrl-C.
#[cfg(not(unix))]
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        token.cancel();
    });
}
