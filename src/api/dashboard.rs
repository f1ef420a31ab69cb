//! `GET /`: the dashboard. Orders per status and per second, the newest
//! orders live (through `GET /events`), the pipeline's queue and dead
//! letters, a form to place a test order, each order's timeline
//! (`/#/orders/ID`) with Cancel while the order allows it, and, once the
//! operator enters the token, Ship for a completed order, dead letters and
//! stock with their actions (`/admin/…`). A customer's token (`--auth
//! jwt`) shows that customer's orders; the live stream is then read with
//! `fetch()` (`sse.js`), which can send the token, as EventSource cannot.
//!
//! Four plain files beside this one, embedded in the binary: no build
//! step, no library, nothing fetched from elsewhere. The page's
//! `Content-Security-Policy` lets it load and call only this origin, with no
//! inline script or style, so it works offline and sends nothing elsewhere.

use super::responses::Shed;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STREAM: &str = include_str!("dashboard/sse.js");
const STYLE: &str = include_str!("dashboard/style.css");

const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                      connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'";

/// The dashboard (HTML).
#[utoipa::path(
    get,
    path = "/",
    tag = "docs",
    operation_id = "dashboard",
    responses(
        (status = 200, description = "The dashboard; it loads its files from this server only. Its operator \
            parts call the `/admin/…` routes with the token entered in the page.", body = String,
            content_type = "text/html"),
        Shed
    )
)]
pub(super) async fn page() -> Response {
    ([(CONTENT_TYPE, "text/html; charset=utf-8"), (CONTENT_SECURITY_POLICY, POLICY)], PAGE).into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    // Revalidated each load: the files change with the binary and are small.
    ([(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")], body).into_response()
}

/// The page's own files, left out of the description like `/docs`'s.
pub(super) fn assets<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/dashboard/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/dashboard/sse.js", get(|| async { asset("text/javascript; charset=utf-8", STREAM) }))
        .route("/dashboard/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
}
