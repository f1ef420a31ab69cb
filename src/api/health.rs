//! Liveness, readiness and metrics.
//!
//! `/health` does no I/O: it says the process answers. `/ready` checks each
//! dependency and answers 503 when one is down, so a load balancer stops
//! sending traffic to a replica that could not store it; and while the
//! process drains before it stops, so one stops sending traffic to a replica
//! that is about to close.

use super::counts::Counts;
use super::responses::Shed;
use super::schema::{Health, NotReady, Readiness};
use super::AppState;
use crate::domain::Status;
use crate::messaging::{QUEUE_INVENTORY_EVENTS, QUEUE_ORDER_EVENTS};
use crate::telemetry::catalog::{DEAD_LETTERS, ORDERS, QUEUED_MESSAGES, QUEUE_LAG, QUEUE_OUTBOX};
use crate::telemetry::seconds_since;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use std::time::Duration;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Liveness: is the process answering?
///
/// `200` while the process answers. It does no I/O and is never shed, so it
/// answers even under overload.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    operation_id = "health",
    responses((status = 200, description = "The process answers.", body = Health))
)]
pub(super) async fn health() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

async fn check<E: std::fmt::Display>(f: impl std::future::Future<Output = Result<(), E>>) -> Result<(), String> {
    match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Readiness: can this process take orders?
///
/// `200` when the store and the broker answer; `503` when one does not, or
/// while the process drains before it stops.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    operation_id = "ready",
    responses(
        (status = 200, description = "Ready to take orders.", body = Readiness),
        (status = 503, description = "Not ready: a dependency is down (`checks` says which), the process is \
            draining, or too many requests are in flight (then with the error body).",
            body = NotReady, headers(("Retry-After" = u32, description = "Seconds to wait, when overloaded.")))
    )
)]
pub(super) async fn ready(State(state): State<AppState>) -> Response {
    if state.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "draining" }))).into_response();
    }
    let (store, broker) = tokio::join!(check(state.store.ping()), check(state.broker.ping()));
    let show = |r: &Result<(), String>| match r {
        Ok(()) => json!({ "status": "ok" }),
        Err(e) => json!({ "status": "down", "error": e }),
    };
    let up = store.is_ok() && broker.is_ok();
    let body = json!({ "status": if up { "ready" } else { "unavailable" }, "checks": { "store": show(&store), "broker": show(&broker) } });
    let status = if up { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// Prometheus metrics.
///
/// Orders accepted, requests and their latency, events applied per service,
/// orders per status and their time to each status, queue lag, dead letters,
/// batch sizes and the SQLite writer's rounds; the operator's guide
/// (docs/operations.md) describes each.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    responses(
        (status = 200, description = "Metrics in the Prometheus text format.", body = String,
            content_type = "text/plain"),
        Shed
    )
)]
pub(super) async fn metrics(State(state): State<AppState>, Extension(counts): Extension<Counts>) -> Response {
    let (stats, waiting) = tokio::join!(counts.get(&state.store), state.broker.waiting_since());
    if let Some(stats) = stats {
        // Every status, so a count that drops to zero is not left at its last value.
        for status in Status::ALL.map(Status::as_str) {
            let n = stats.orders_by_status.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
            metrics::gauge!(ORDERS, "status" => status).set(n as f64);
        }
        metrics::gauge!(QUEUED_MESSAGES).set(stats.queued_messages as f64);
        metrics::gauge!(DEAD_LETTERS).set(stats.dead_letters as f64);
        let front = |queue: &str| stats.oldest_messages.iter().filter(|(q, _)| q == queue).map(|(_, at)| *at).min();
        if state.broker.publisher().is_none() {
            // The db broker: the messages table holds the queues themselves.
            for queue in [QUEUE_ORDER_EVENTS, QUEUE_INVENTORY_EVENTS] {
                set_lag(queue, front(queue));
            }
        } else {
            set_lag(QUEUE_OUTBOX, stats.oldest_messages.iter().map(|(_, at)| *at).min());
        }
    }
    for (queue, since) in waiting.unwrap_or_default() {
        set_lag(queue, since);
    }
    render(state.metrics.as_ref())
}

/// The process's metrics in the Prometheus text format.
pub(super) fn render(metrics: Option<&PrometheusHandle>) -> Response {
    let text = metrics.map(PrometheusHandle::render).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Sets `queue`'s lag: the age of its oldest waiting message, 0 when none waits.
fn set_lag(queue: &'static str, oldest: Option<i64>) {
    metrics::gauge!(QUEUE_LAG, "queue" => queue).set(oldest.map_or(0.0, seconds_since));
}
