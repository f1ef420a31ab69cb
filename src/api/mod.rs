//! The HTTP API: routes and shared state; `server` serves them.

mod admin;
mod auth;
mod caller;
mod compat;
mod connections;
mod counts;
mod dashboard;
mod docs;
mod error;
mod events;
mod feed;
mod health;
mod jwt;
mod lifecycle;
mod metered;
mod openapi;
mod orders;
mod read;
mod replay;
mod responses;
mod schema;
mod server;
mod trace_context;
mod trail;

pub use auth::OperatorToken;
pub use error::ApiError;
pub use jwt::JwtKey;
pub use server::ClientLimits;

use crate::broker::Broker;
use crate::cache::OrderCache;
use crate::store::Store;
use crate::telemetry::catalog::{ORDERS_ACCEPTED, REQUESTS_SHED};
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::BoxError;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub broker: Arc<dyn Broker>,
    /// Single orders are read through it when there is one (`--cache-url`).
    pub cache: Option<OrderCache>,
    /// Renders `/metrics`; absent when another recorder is installed.
    pub metrics: Option<PrometheusHandle>,
    /// The operator token's digest; without one the admin routes answer 403.
    pub operator: Option<OperatorToken>,
    /// The key customers' tokens are verified with (`--auth jwt`); without
    /// one the customer routes serve anyone (`caller.rs`).
    pub tokens: Option<Arc<JwtKey>>,
    /// Dead letters a replay sends back per second.
    pub replay_rate: u32,
    /// Requests handled at once; more are refused with 503 at once.
    pub max_in_flight: usize,
    /// Fires when the process starts to stop: `/ready` answers 503 from
    /// then on while every other route still serves (the drain, in `app`).
    pub draining: CancellationToken,
    /// How long clients may take and how many connections they may hold.
    pub clients: ClientLimits,
    /// The orders this process's live streams watch.
    pub live: Arc<crate::live::Hub>,
    /// How long idempotency keys hold, and how long the inboxes remember
    /// (what a dead letter's replay checks).
    pub retention: crate::domain::Retention,
}

/// The routes behind the limit of requests in flight, each registered with
/// its description (`openapi.rs`), so none can be served undescribed.
fn limited_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(<openapi::ApiDoc as utoipa::OpenApi>::openapi())
        .routes(routes!(orders::create, orders::list))
        .routes(routes!(orders::get))
        .routes(routes!(lifecycle::cancel))
        .routes(routes!(lifecycle::ship))
        .routes(routes!(trail::get))
        .routes(routes!(events::order_events))
        .routes(routes!(feed::events))
        .routes(routes!(compat::create))
        .routes(routes!(compat::place_empty))
        .routes(routes!(compat::get_status))
        .routes(routes!(admin::list_stock))
        .routes(routes!(admin::set_stock))
        .routes(routes!(admin::dead_letters))
        .routes(routes!(replay::replay))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics))
        .routes(routes!(openapi::serve))
        .routes(routes!(docs::page))
        .routes(routes!(dashboard::page))
}

/// The liveness check, outside the limit.
fn unlimited_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health::health))
}

/// The API's description: every route's, from its annotations.
fn description() -> utoipa::openapi::OpenApi {
    let (_, mut description) = limited_routes().split_for_parts();
    description.merge(unlimited_routes().split_for_parts().1);
    description
}

/// A known path asked with a method it does not answer: the JSON error, and
/// axum adds the `Allow` header.
async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The API. Every request but the liveness check counts against one limit
/// of requests in flight for the whole process; past it a request is
/// answered 503 with Retry-After at once, so clients back off and memory
/// stays flat. The layers wrap the routes as a whole, not each route (as
/// `Router::layer` would), so a request passes through each once.
pub fn router(state: AppState) -> Router {
    let max_in_flight = state.max_in_flight;
    let body_timeout = state.clients.body_timeout;
    // Exported from the start, at 0, so a rate over them exists before the first one.
    metrics::counter!(REQUESTS_SHED).increment(0);
    metrics::counter!(ORDERS_ACCEPTED).increment(0);
    let (routes, _) = limited_routes().split_for_parts();
    let routes = routes
        .merge(docs::assets())
        .merge(dashboard::assets())
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        // Per route, unlike the layers below: only there is the matched route known.
        .layer(metered::MeteredLayer)
        .with_state(state.clone());
    let limited = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|_: BoxError| async {
            metrics::counter!(REQUESTS_SHED).increment(1);
            ApiError::Overloaded
        }))
        .load_shed()
        .concurrency_limit(max_in_flight)
        .layer(TraceLayer::new_for_http())
        // One per process: `/metrics` counts the tables at a bounded cost.
        .layer(axum::Extension(counts::Counts::default()))
        .layer(DefaultBodyLimit::max(orders::MAX_BODY))
        // A body that stalls this long fails to read; `POST /orders` answers 408.
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .service(routes);
    // The liveness check answers even when the process is overloaded.
    let (unlimited, _) = unlimited_routes().split_for_parts();
    let router = unlimited
        .method_not_allowed_fallback(method_not_allowed)
        .layer(metered::MeteredLayer)
        .with_state(state)
        .fallback_service(limited);
    // Applied to each route and to the fallback: every request passes
    // through it once, whichever answers it.
    router.layer(trace_context::TraceContextLayer)
}

/// What a process without the API serves on `--listen`, so that every role
/// can be scraped: its own `/metrics` and `/health`, with the same limits on
/// clients as the API.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Option<PrometheusHandle>,
    limits: ClientLimits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let router = Router::new()
        .route("/metrics", get(move || std::future::ready(health::render(metrics.as_ref()))))
        .route("/health", get(health::health))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(metered::MeteredLayer);
    server::run(listener, router, limits, shutdown).await;
    Ok(())
}

/// Serves the API on `listener` until `shutdown` fires, then lets requests in
/// flight finish.
pub async fn serve(listener: TcpListener, state: AppState, shutdown: CancellationToken) -> anyhow::Result<()> {
    let limits = state.clients;
    server::run(listener, router(state), limits, shutdown).await;
    Ok(())
}
