//! `/orders`: place an order, read one, list them.

use super::responses::{Accepted as AcceptedResponse, ListErrors, PlaceErrors, ReadErrors};
use super::schema::{IdempotencyKeyHeader, OrderRequest};
use super::{ApiError, AppState};
use crate::domain::{
    format_millis, CustomerId, IdempotencyKey, LineItem, NewOrder, OrderId, Quantity, Sku, Status, ValidationError,
};
use crate::store::{Keyed, OrderFilter, OrderView, PlaceOrder, Placed};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tower_http::timeout::TimeoutError;
use utoipa::{IntoParams, ToSchema};

/// Largest body `POST /orders` reads.
pub const MAX_BODY: usize = 64 * 1024;
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1000;

/// The body of `POST /orders`: the full form (`customer_id`, `items`) or the
/// short form of older clients (`user_id`, `item`, `quantity`). Its
/// description, with how the fields combine, is `schema::OrderRequest`.
#[derive(Debug, Deserialize)]
struct OrderBody {
    #[serde(default, deserialize_with = "present")]
    customer_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    user_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    items: Option<Vec<ItemBody>>,
    #[serde(default, deserialize_with = "present")]
    item: Option<String>,
    #[serde(default, deserialize_with = "whole")]
    quantity: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct ItemBody {
    #[serde(default, deserialize_with = "present")]
    sku: Option<String>,
    #[serde(default, deserialize_with = "whole")]
    quantity: Option<i64>,
}

/// A field that may be left out but, when given, has a value: `null` is
/// refused (`invalid_field`) rather than read as absent, as the description
/// says, so a client that sends `"items": null` beside `item` learns that its
/// body is ambiguous instead of having one form chosen for it.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A whole number, written as JSON allows one: `2`, and also `2.0` or `2e0`,
/// which JSON Schema (and so the description) counts as the integer 2. Out
/// of `i64`'s range it saturates, and `Quantity` refuses it for its size.
fn whole<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    whole_number(d).map(Some)
}

/// `whole`, for a field that must be there.
pub(super) fn whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    whole_of(serde_json::Number::deserialize(d)?)
}

/// `whole`, for a field that may also be `null` (absent).
pub(super) fn whole_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Option::<serde_json::Number>::deserialize(d)?.map(whole_of).transpose()
}

fn whole_of<E: serde::de::Error>(n: serde_json::Number) -> Result<i64, E> {
    if let Some(n) = n.as_i64() {
        return Ok(n);
    }
    match n.as_f64() {
        // `as` saturates: a huge whole number stays huge, and is refused as too large.
        Some(x) if x.fract() == 0.0 => Ok(x as i64),
        _ => Err(E::custom(format!("invalid type: {n}, expected a whole number"))),
    }
}

fn missing(field: &str) -> ValidationError {
    ValidationError::new("missing_field", format!("{field} is required"))
}

fn line(sku: Option<String>, quantity: Option<i64>, at: &str) -> Result<LineItem, ValidationError> {
    let sku = Sku::parse(sku.ok_or_else(|| missing(&format!("{at}sku")))?)?;
    let quantity = Quantity::parse(quantity.ok_or_else(|| missing(&format!("{at}quantity")))?)?;
    Ok(LineItem { sku, quantity })
}

impl OrderBody {
    fn into_order(self) -> Result<NewOrder, ValidationError> {
        // A `user_id` beside `customer_id` does not count, but must still be
        // valid: every field given is checked, as the description says.
        let user_id = self.user_id.map(CustomerId::parse).transpose()?;
        let customer_id = match self.customer_id {
            Some(c) => CustomerId::parse(c)?,
            None => user_id.ok_or_else(|| missing("customer_id"))?,
        };
        // A `quantity` beside `items` belongs to no line: refused, not ignored.
        if self.items.is_some() && (self.item.is_some() || self.quantity.is_some()) {
            return Err(ValidationError::new("ambiguous_items", "give either items or item and quantity, not both"));
        }
        let items = match (self.items, self.item) {
            (Some(items), _) if items.is_empty() => {
                return Err(ValidationError::new("empty_items", "items must hold at least one item"))
            }
            (Some(items), _) => {
                if items.len() > crate::domain::MAX_ITEMS {
                    return Err(ValidationError::new(
                        "too_many_items",
                        format!("an order may have at most {} items, got {}", crate::domain::MAX_ITEMS, items.len()),
                    ));
                }
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, it)| line(it.sku, it.quantity, &format!("items[{i}].")))
                    .collect::<Result<Vec<_>, _>>()?
            }
            (None, Some(sku)) => vec![line(Some(sku), self.quantity, "")?],
            (None, None) => return Err(missing("items")),
        };
        NewOrder::new(customer_id, items)
    }
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json")) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!("Content-Type must be application/json, got '{content_type}'")))
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            let key =
                IdempotencyKey::parse(v.to_str().unwrap_or("")).map_err(|e| ApiError::BadRequest(e.code, e.message))?;
            Ok(Some(key))
        }
    }
}

/// A digest of what was asked for, to tell a retry from a different request
/// reusing the same idempotency key.
fn request_hash(order: &NewOrder) -> String {
    let canonical = json!({ "customer_id": order.customer_id.as_str(), "items": order.items });
    format!("{:x}", Sha256::digest(canonical.to_string().as_bytes()))
}

/// Whether reading the body failed because it stalled past the body timeout.
fn stalled(e: &BytesRejection) -> bool {
    std::iter::successors(Some(e as &dyn std::error::Error), |e| e.source()).any(|e| e.is::<TimeoutError>())
}

fn parse_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<NewOrder, ApiError> {
    let parsed: OrderBody = read_json(headers, body)?;
    Ok(parsed.into_order()?)
}

/// A JSON body read whole: a body too large, stalled or not JSON is a 4xx,
/// and a field of the wrong type is `422 invalid_field`.
pub(super) fn read_json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(MAX_BODY),
        _ if stalled(&e) => ApiError::BodyTimeout,
        _ => ApiError::BadRequest("unreadable_body", e.body_text()),
    })?;
    require_json(headers)?;
    serde_json::from_slice(&body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::Invalid(ValidationError::new("invalid_field", e.to_string())),
        _ => ApiError::BadRequest("malformed_json", format!("request body is not valid JSON: {e}")),
    })
}

/// Stores the order and answers `202 Accepted` with where to follow it.
pub(super) async fn accept(state: &AppState, headers: &HeaderMap, order: NewOrder) -> Result<Response, ApiError> {
    let key = idempotency_key(headers)?;
    let idempotency = key.map(|key| Keyed { key, request_hash: request_hash(&order), ttl: state.retention.key_ttl });
    let trace = super::trace_context::of(headers);
    let placed = state.store.place_order(PlaceOrder { id: OrderId::new(), order, idempotency, trace }).await?;
    metrics::counter!("orderflow_orders_accepted_total").increment(u64::from(!placed.replayed));
    if !placed.replayed {
        state.live.changes.placed(placed.id, placed.created_at);
    }
    Ok(accepted(placed))
}

/// The body of a `202`, in the shape existing clients expect.
#[derive(Serialize, ToSchema)]
pub(super) struct Accepted {
    order_id: OrderId,
    /// Always `accepted`.
    #[schema(schema_with = accepted_status)]
    status: &'static str,
    /// For people.
    message: &'static str,
    /// When the order was first accepted.
    #[schema(format = DateTime)]
    timestamp: String,
}

fn accepted_status() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["accepted"]))
        .build()
}

fn accepted(placed: Placed) -> Response {
    let body = Accepted {
        order_id: placed.id,
        status: "accepted",
        message: if placed.replayed {
            "Order already accepted for this Idempotency-Key"
        } else {
            "Order accepted for processing"
        },
        timestamp: format_millis(placed.created_at),
    };
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    let location = HeaderValue::from_str(&format!("/orders/{}", placed.id)).expect("an order id is a valid header");
    response.headers_mut().insert(header::LOCATION, location);
    if placed.replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Place an order.
///
/// Answers `202` once the order and its `OrderPlaced` event are committed
/// together: a `202` means the order is on disk.
#[utoipa::path(
    post,
    path = "/orders",
    tag = "orders",
    operation_id = "place_order",
    params(IdempotencyKeyHeader),
    request_body(content = OrderRequest, content_type = "application/json"),
    responses(AcceptedResponse, PlaceErrors)
)]
pub(super) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let order = parse_body(&headers, body)?;
    accept(&state, &headers, order).await
}

pub(super) fn parse_id(raw: &str) -> Result<OrderId, ApiError> {
    raw.parse().map_err(|e: ValidationError| ApiError::BadRequest(e.code, e.message))
}

/// Read an order: its status, items, reason (when rejected) and history.
#[utoipa::path(
    get,
    path = "/orders/{id}",
    tag = "orders",
    operation_id = "get_order",
    params(("id" = OrderId, Path, description = "The order's id, as `POST /orders` answered it.")),
    responses((status = 200, description = "The order.", body = OrderView), ReadErrors)
)]
pub(super) async fn get(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&raw)?;
    match super::read::order_json(&state, id).await? {
        Some(json) => Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response()),
        None => Err(ApiError::NotFound(format!("order {id} not found"))),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListParams {
    /// Only orders with this status.
    #[param(value_type = Option<Status>)]
    status: Option<String>,
    /// Only this customer's orders.
    customer_id: Option<String>,
    /// Most orders in the page (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page; empty or absent for the first.
    #[param(pattern = "^(|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$")]
    cursor: Option<String>,
}

/// A page of orders, newest first.
#[derive(Serialize, ToSchema)]
pub(super) struct OrderList {
    orders: Vec<OrderView>,
    /// Where the next page starts; `null` on the last page. A page may be
    /// short, even empty, and still have a next one: follow it until `null`.
    #[schema(required = true)]
    next_cursor: Option<OrderId>,
}

/// List orders, newest first, a page at a time.
///
/// Paging never repeats or skips an order.
#[utoipa::path(
    get,
    path = "/orders",
    tag = "orders",
    operation_id = "list_orders",
    params(ListParams),
    responses((status = 200, description = "A page of orders.", body = OrderList), ListErrors)
)]
pub(super) async fn list(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::BadRequest("invalid_query", e.body_text()))?;
    let bad = |e: ValidationError| ApiError::BadRequest(e.code, e.message);
    // An empty `status` or `limit` is refused like any other value that is
    // not one (an empty `cursor` is the first page, as described).
    let status = p.status.map(|s| s.parse::<Status>()).transpose().map_err(bad)?;
    let limit = match p.limit {
        None => DEFAULT_PAGE,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::BadRequest(
                    "invalid_limit",
                    format!("limit must be a whole number from 1 to {MAX_PAGE}, got '{s}'"),
                ))
            }
        },
    };
    let before = p
        .cursor
        .filter(|s| !s.is_empty())
        .map(|c| c.parse::<OrderId>())
        .transpose()
        .map_err(|_| ApiError::BadRequest("invalid_cursor", "cursor is not one this API returned".into()))?;
    let filter = OrderFilter { status, customer_id: p.customer_id.filter(|s| !s.is_empty()), before, limit };
    let page = state.store.list_orders(filter).await?;
    Ok(Json(OrderList { orders: page.orders, next_cursor: page.next }).into_response())
}
