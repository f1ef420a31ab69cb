//! `GET /docs`: Swagger UI on this server's own description, to read every
//! route and try it from the browser.
//!
//! Every file the page loads is embedded in the binary and served from
//! `/docs/…`: Swagger UI's bundle and stylesheet, vendored from the npm
//! package `swagger-ui-dist` by `scripts/vendor-swagger-ui` (which also
//! checks them), and the page and its initializer beside this file. The
//! page's `Content-Security-Policy` lets the browser load and call only this
//! origin, so the page works offline and sends nothing elsewhere.

use super::responses::Shed;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const PAGE: &str = include_str!("docs/index.html");
const INIT: &str = include_str!("docs/init.js");
const BUNDLE: &str = include_str!("docs/swagger-ui/swagger-ui-bundle.js");
const STYLE: &str = include_str!("docs/swagger-ui/swagger-ui.css");

/// Only this origin, for everything: scripts, styles, fonts, images (and the
/// `data:` images Swagger UI's stylesheet inlines), and the requests "try it
/// out" sends. Inline styles are allowed for the `style` attributes Swagger
/// UI sets; inline scripts are not.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                      img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
                      base-uri 'none'; form-action 'self'; frame-ancestors 'self'";

/// Interactive API documentation (Swagger UI).
#[utoipa::path(
    get,
    path = "/docs",
    tag = "docs",
    operation_id = "docs",
    responses(
        (status = 200, description = "The page; it loads its files from this server only.", body = String,
            content_type = "text/html"),
        Shed
    )
)]
pub(super) async fn page() -> Response {
    ([(CONTENT_TYPE, "text/html; charset=utf-8"), (CONTENT_SECURITY_POLICY, POLICY)], PAGE).into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    // The files change only with the binary; a browser may keep them an hour.
    ([(CONTENT_TYPE, content_type), (CACHE_CONTROL, "public, max-age=3600")], body).into_response()
}

/// The page's own files: part of the page, not of the API, so they are left
/// out of the description.
pub(super) fn assets<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/docs/init.js", get(|| async { asset("text/javascript; charset=utf-8", INIT) }))
        .route("/docs/swagger-ui-bundle.js", get(|| async { asset("text/javascript; charset=utf-8", BUNDLE) }))
        .route("/docs/swagger-ui.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
}
