//! The API's OpenAPI 3.1 description, served at `GET /openapi.json`.
//!
//! It is generated from the code, so it cannot drift from it: every route is
//! registered in `mod.rs` through `utoipa_axum::routes!`, which takes its path,
//! method, parameters and answers from the handler's `#[utoipa::path]`
//! annotation; bodies take their schemas from the types the handlers
//! serialize, and the values' rules from `schema.rs`. This file adds what
//! belongs to the whole: the title, the tags, and the schemas only referred to.
//! The description is built and serialized once, on the first request for it;
//! the annotations add nothing to a request's work. `docs/openapi.json` holds
//! a copy, and a test fails when it differs (docs/architecture.md#the-api-description).

use super::error::{ErrorBody, ErrorCode};
use super::orders::{Accepted, OrderList};
use super::responses::Shed;
use super::schema::{CustomerName, Health, NotReady, OrderRequest, OrderStatus, Readiness};
use crate::domain::{LineItem, OrderId, Quantity, Sku, Status};
use crate::store::{OrderView, Transition};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use std::sync::LazyLock;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orderflow",
        description = "Place orders and follow them through their lifecycle. A `202` means the order is \
            stored on disk with its event; it is then reserved (all items or none) and completed, or \
            rejected with a reason. A completed order is shipped by the operator; one not shipped may be \
            cancelled, and its stock goes back. Every error is `{\"error\":{\"code\",\"message\"}}`; a `4xx` stores \
            nothing; every `503` comes with `Retry-After`, and a `POST` is retried safely with the same \
            `Idempotency-Key`. The guarantees behind these answers are in the README."
    ),
    tags(
        (name = "orders", description = "Place, read and list orders. When the server checks customers' \
            tokens (`--auth jwt`), each route needs one, and a customer sees only their own orders: another's \
            is `404`, as if it did not exist; the operator token sees every order."),
        (name = "compatible", description = "The routes older clients call; answered by the same pipeline."),
        (name = "operations", description = "Liveness, readiness and metrics."),
        (name = "admin", description = "Stock and dead letters, for operators: `Authorization: Bearer TOKEN` with \
            the server's `ORDERFLOW_OPERATOR_TOKEN`; without that variable these routes answer `403`."),
        (name = "docs", description = "This description and its interactive page.")
    ),
    modifiers(&OperatorScheme),
    components(schemas(
        ErrorBody, ErrorCode, Accepted, OrderRequest, CustomerName, LineItem, Sku, Quantity, OrderId, Status,
        OrderView, Transition, OrderList, OrderStatus, Health, Readiness, NotReady
    ))
)]
pub(super) struct ApiDoc;

/// The access rules: the operator's bearer token (`auth.rs`), on the admin
/// routes and, seeing every order, on the customer routes; and customers'
/// tokens (`caller.rs`), which the customer routes need only when the server
/// checks them, so they also list no requirement at all.
struct OperatorScheme;

impl utoipa::Modify for OperatorScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let operator = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("The server's `ORDERFLOW_OPERATOR_TOKEN`."))
            .build();
        let customer = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some(
                "A customer's token, when the server runs with `--auth jwt`: signed with the algorithm its \
                 `ORDERFLOW_JWT_KEY` fixes (HS256, RS256 or ES256), with `exp`, and `sub` naming the customer, \
                 who then sees only their own orders.",
            ))
            .build();
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("operator", SecurityScheme::Http(operator));
        components.add_security_scheme("customer", SecurityScheme::Http(customer));
    }
}

/// The description as served: pretty-printed JSON with its keys sorted (a
/// `serde_json::Value` keeps them in order), so the checked-in copy diffs well.
pub(super) fn to_json() -> String {
    let value = serde_json::to_value(super::description()).expect("the description is JSON");
    let mut text = serde_json::to_string_pretty(&value).expect("the description is JSON");
    text.push('\n');
    text
}

static SERVED: LazyLock<String> = LazyLock::new(to_json);

/// This API's OpenAPI 3.1 description.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "docs",
    operation_id = "openapi",
    responses(
        (status = 200, description = "The description (OpenAPI 3.1).", body = Object, content_type = "application/json"),
        Shed
    )
)]
pub(super) async fn serve() -> Response {
    ([(CONTENT_TYPE, "application/json")], SERVED.as_str()).into_response()
}
