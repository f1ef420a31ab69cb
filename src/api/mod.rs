//! The HTTP API: routes and shared state; `server` serves them.

mod compat;
mod connections;
mod error;
mod health;
mod orders;
mod read;
mod server;

pub use error::ApiError;
pub use server::ClientLimits;

use crate::broker::Broker;
use crate::cache::OrderCache;
use crate::store::Store;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::BoxError;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub broker: Arc<dyn Broker>,
    /// Single orders are read through it when there is one (`--cache-url`).
    pub cache: Option<OrderCache>,
    /// Renders `/metrics`; absent when another recorder is installed.
    pub metrics: Option<PrometheusHandle>,
    /// Requests handled at once; more are refused with 503 at once.
    pub max_in_flight: usize,
    /// Fires when the process starts to stop: `/ready` answers 503 from
    /// then on while every other route still serves (the drain, in `app`).
    pub draining: CancellationToken,
    /// How long clients may take and how many connections they may hold.
    pub clients: ClientLimits,
}

/// The API. Every request but the liveness check counts against one limit
/// of requests in flight for the whole process; past it a request is
/// answered 503 with Retry-After at once, so clients back off and memory
/// stays flat. The layers wrap the routes as a whole, not each route (as
/// `Router::layer` would), so a request passes through each once.
pub fn router(state: AppState) -> Router {
    let max_in_flight = state.max_in_flight;
    let body_timeout = state.clients.body_timeout;
    let routes = Router::new()
        .route("/orders", post(orders::create).get(orders::list))
        .route("/orders/{id}", get(orders::get))
        .route("/order", post(orders::create))
        .route("/order/place", post(compat::place_empty))
        .route("/order/get/{id}", get(compat::get_status))
        .route("/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .with_state(state);
    let limited = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|_: BoxError| async {
            metrics::counter!("orderflow_requests_shed_total").increment(1);
            ApiError::Overloaded
        }))
        .load_shed()
        .concurrency_limit(max_in_flight)
        .layer(TraceLayer::new_for_http())
        .layer(DefaultBodyLimit::max(orders::MAX_BODY))
        // A body that stalls this long fails to read; `POST /orders` answers 408.
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .service(routes);
    // The liveness check answers even when the process is overloaded.
    Router::new().route("/health", get(health::health)).fallback_service(limited)
}

/// Serves the API on `listener` until `shutdown` fires, then lets requests in
/// flight finish.
pub async fn serve(listener: TcpListener, state: AppState, shutdown: CancellationToken) -> anyhow::Result<()> {
    let limits = state.clients;
    server::run(listener, router(state), limits, shutdown).await;
    Ok(())
}
