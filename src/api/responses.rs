//! The answers routes share, described once: the `202` of every way to place
//! an order, and the error statuses each kind of route can answer.
//!
//! Each marker type below lists, for the routes that name it in their
//! `#[utoipa::path(responses(...))]`, every status they can answer besides
//! their success, with the JSON error body (`ErrorBody`) and, on `503`, the
//! `Retry-After` header every `503` carries (`error.rs`). The customer
//! routes' `401` and `403` are about customers' tokens, the admin routes'
//! about the operator token: each says its own.

use std::collections::BTreeMap;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::link::{Link, LinkBuilder};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::IntoResponses;

fn header(kind: Type, description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new().schema(Some(ObjectBuilder::new().schema_type(kind))).description(Some(description)).build()
}

fn error(status: u16) -> (String, RefOr<Response>) {
    described(status, description(status))
}

fn description(status: u16) -> &'static str {
    match status {
        400 => "A bad path parameter, query parameter, header or body encoding (`code` says which).",
        401 => "No `Authorization: Bearer TOKEN`, or not the operator token (`unauthorized`); nothing changed.",
        403 => {
            "The admin routes are off: the server was started without `ORDERFLOW_OPERATOR_TOKEN` (`admin_disabled`)."
        }
        404 => "No such order, or one the token's customer may not see (`not_found`).",
        408 => "The body stopped arriving before it was complete (`request_timeout`).",
        409 => {
            "This `Idempotency-Key` was used with a different request (`idempotency_key_reused`); nothing was stored."
        }
        413 => "The body is larger than 64 KiB (`body_too_large`).",
        415 => "`Content-Type` is not `application/json` (`unsupported_media_type`).",
        422 => "The order breaks a rule (`code` says which); nothing was stored.",
        500 => "An unexpected failure (`internal`), logged by the server.",
        503 => {
            "Too many requests in flight (`overloaded`), the store is unreachable or its queue is full \
             (`unavailable`), a commit's outcome is unknown (`outcome_unknown`), or the process serves as \
             many live streams as it may (`too_many_streams`): retry after `Retry-After` seconds, a `POST` \
             with the same `Idempotency-Key`."
        }
        _ => unreachable!("no description for {status}"),
    }
}

fn described(status: u16, description: &str) -> (String, RefOr<Response>) {
    let body = ContentBuilder::new().schema(Some(RefOr::Ref(Ref::from_schema_name("ErrorBody")))).build();
    let mut response = ResponseBuilder::new().description(description).content("application/json", body);
    if status == 401 {
        response = response.header("WWW-Authenticate", header(Type::String, "`Bearer`."));
    }
    if status == 503 {
        response = response.header("Retry-After", header(Type::Integer, "Seconds to wait before retrying."));
    }
    (status.to_string(), RefOr::T(response.build()))
}

fn errors(statuses: &[u16]) -> BTreeMap<String, RefOr<Response>> {
    statuses.iter().map(|s| error(*s)).collect()
}

/// A customer route's errors: those given, and the `401` of a token the
/// server refused (only when it checks customers' tokens).
fn customer_errors(statuses: &[u16]) -> BTreeMap<String, RefOr<Response>> {
    let mut all = errors(statuses);
    all.extend([described(
        401,
        "The server checks customers' tokens (`--auth jwt`) and this request has none (`missing_token`), an \
         expired one (`token_expired`) or one that is not valid (`invalid_token`): a wrong signature or \
         algorithm, no `exp` or `sub`. Nothing changed.",
    )]);
    all
}

fn follow(operation_id: &str, description: &str) -> Link {
    LinkBuilder::new()
        .operation_id(operation_id)
        .parameter("id", "$response.body#/order_id")
        .description(description)
        .build()
}

/// `202 Accepted`, with where to follow the order.
pub(super) struct Accepted;

impl IntoResponses for Accepted {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let body = ContentBuilder::new().schema(Some(RefOr::Ref(Ref::from_schema_name("Accepted")))).build();
        let response = ResponseBuilder::new()
            .description(
                "The order is stored (on disk, with its event) and will be processed. A repeat of a request \
                 with the same `Idempotency-Key` answers the first order again.",
            )
            .content("application/json", body)
            .header("Location", header(Type::String, "Where to read the order: `/orders/{order_id}`."))
            .header(
                "idempotent-replayed",
                header(Type::String, "`true` when this answers a repeat of an earlier request with the same key."),
            )
            // How to follow the order: tools that chain requests (and
            // schema fuzzing's stateful phase) read these.
            .link("GetOrder", follow("get_order", "The order, its status and history."))
            .link("GetOrderStatus", follow("get_order_status", "The order's status, as older clients read it."))
            .build();
        BTreeMap::from([("202".to_owned(), RefOr::T(response))])
    }
}

/// What placing an order with a body can answer besides `202`.
pub(super) struct PlaceErrors;

impl IntoResponses for PlaceErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut all = customer_errors(&[400, 408, 409, 413, 415, 422, 500, 503]);
        all.extend([described(
            403,
            "The body names another customer than the token does (`customer_mismatch`); nothing was stored.",
        )]);
        all
    }
}

/// What placing an order without a body can answer besides `202`.
pub(super) struct PlaceEmptyErrors;

impl IntoResponses for PlaceEmptyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        customer_errors(&[400, 409, 500, 503])
    }
}

/// What reading one order can answer besides `200`.
pub(super) struct ReadErrors;

impl IntoResponses for ReadErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        customer_errors(&[400, 404, 500, 503])
    }
}

/// What opening an order's live stream can answer besides `200`.
pub(super) struct StreamErrors;

impl IntoResponses for StreamErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        customer_errors(&[400, 404, 500, 503])
    }
}

/// What listing orders can answer besides `200`.
pub(super) struct ListErrors;

impl IntoResponses for ListErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        customer_errors(&[400, 500, 503])
    }
}

/// What an admin route that reads can answer besides `200`.
pub(super) struct AdminReadErrors;

impl IntoResponses for AdminReadErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[400, 401, 403, 500, 503])
    }
}

/// What an admin route with a JSON body can answer besides `200`.
pub(super) struct AdminWriteErrors;

impl IntoResponses for AdminWriteErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[400, 401, 403, 408, 413, 415, 422, 500, 503])
    }
}

/// The `409` of cancelling and shipping.
fn invalid_transition() -> (String, RefOr<Response>) {
    described(
        409,
        "The order's status does not allow it (`invalid_transition`): a rejected or shipped order cannot be \
         cancelled, and only a completed order can be shipped. Nothing changed.",
    )
}

/// What cancelling an order can answer besides `200`.
pub(super) struct CancelErrors;

impl IntoResponses for CancelErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut responses = customer_errors(&[400, 404, 500, 503]);
        responses.extend([invalid_transition()]);
        responses
    }
}

/// What shipping an order (an admin route) can answer besides `200`.
pub(super) struct ShipErrors;

impl IntoResponses for ShipErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut responses = errors(&[400, 401, 403, 404, 500, 503]);
        responses.extend([invalid_transition()]);
        responses
    }
}

/// What any route but `/health` can answer: overloaded.
pub(super) struct Shed;

impl IntoResponses for Shed {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[503])
    }
}
