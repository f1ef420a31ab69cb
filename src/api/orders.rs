//! `/orders`: place an order, read one, list them.

use super::{ApiError, AppState};
use crate::domain::{
    format_millis, CustomerId, IdempotencyKey, LineItem, NewOrder, OrderId, Quantity, Sku, Status, ValidationError,
};
use crate::store::{OrderFilter, PlaceOrder, Placed};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tower_http::timeout::TimeoutError;

/// Largest body `POST /orders` reads.
pub const MAX_BODY: usize = 64 * 1024;
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1000;

/// The body of `POST /orders`: the full form (`customer_id`, `items`) or the
/// short form of older clients (`user_id`, `item`, `quantity`).
#[derive(Debug, Deserialize)]
struct OrderBody {
    customer_id: Option<String>,
    user_id: Option<String>,
    items: Option<Vec<ItemBody>>,
    item: Option<String>,
    quantity: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct ItemBody {
    sku: Option<String>,
    quantity: Option<i64>,
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
        let customer = self.customer_id.or(self.user_id).ok_or_else(|| missing("customer_id"))?;
        let customer_id = CustomerId::parse(customer)?;
        let items = match (self.items, self.item) {
            (Some(_), Some(_)) => {
                return Err(ValidationError::new("ambiguous_items", "give either items or item and quantity, not both"))
            }
            (Some(items), None) if items.is_empty() => {
                return Err(ValidationError::new("empty_items", "items must hold at least one item"))
            }
            (Some(items), None) => {
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
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(MAX_BODY),
        _ if stalled(&e) => ApiError::BodyTimeout,
        _ => ApiError::BadRequest("unreadable_body", e.body_text()),
    })?;
    require_json(headers)?;
    let parsed: OrderBody = serde_json::from_slice(&body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::Invalid(ValidationError::new("invalid_field", e.to_string())),
        _ => ApiError::BadRequest("malformed_json", format!("request body is not valid JSON: {e}")),
    })?;
    Ok(parsed.into_order()?)
}

/// Stores the order and answers `202 Accepted` with where to follow it.
pub(super) async fn accept(state: &AppState, headers: &HeaderMap, order: NewOrder) -> Result<Response, ApiError> {
    let key = idempotency_key(headers)?;
    let idempotency = key.map(|k| (k, request_hash(&order)));
    let placed = state.store.place_order(PlaceOrder { id: OrderId::new(), order, idempotency }).await?;
    metrics::counter!("orderflow_orders_accepted_total").increment(u64::from(!placed.replayed));
    Ok(accepted(placed))
}

/// The body of a `202`, in the shape existing clients expect.
#[derive(serde::Serialize)]
struct Accepted {
    order_id: OrderId,
    status: &'static str,
    message: &'static str,
    timestamp: String,
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

pub(super) async fn get(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&raw)?;
    match super::read::order_json(&state, id).await? {
        Some(json) => Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response()),
        None => Err(ApiError::NotFound(format!("order {id} not found"))),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct ListParams {
    status: Option<String>,
    customer_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

pub(super) async fn list(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::BadRequest("invalid_query", e.body_text()))?;
    let bad = |e: ValidationError| ApiError::BadRequest(e.code, e.message);
    let status = p.status.filter(|s| !s.is_empty()).map(|s| s.parse::<Status>()).transpose().map_err(bad)?;
    let limit = match p.limit.filter(|s| !s.is_empty()) {
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
    Ok(Json(json!({ "orders": page.orders, "next_cursor": page.next })).into_response())
}
