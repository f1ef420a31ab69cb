//! The schemas of the values and bodies the API takes and answers, as its
//! OpenAPI description (`openapi.rs`) shows them.
//!
//! The domain's values (`Sku`, `Quantity`, …) get their schemas here rather
//! than in the domain, which stays free of how the API is described. Each
//! schema states the rule the value's `parse` enforces, exactly: schema
//! fuzzing (`scripts/api-check`) sends values just inside and just outside
//! every rule and fails when the server and the description disagree. Bodies
//! a handler builds from a struct derive their schema where that struct is.

use crate::domain::{
    OrderId, Quantity, Sku, Status, MAX_CUSTOMER_LEN, MAX_IDEMPOTENCY_KEY_LEN, MAX_ITEMS, MAX_QUANTITY, MAX_SKU_LEN,
};
use serde_json::json;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{
    AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::{Ref, RefOr, Required};
use utoipa::{IntoParams, PartialSchema, ToSchema};

/// What `str::trim` removes: Unicode `White_Space`, as a regex class body.
const WHITESPACE: &str = r"\t\n\x0B\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";
/// What `char::is_control` refuses: Unicode `Cc`, as a regex class body.
const CONTROL: &str = r"\x00-\x1F\x7F-\x9F";

/// A text that, once trimmed, holds 1 to `max` characters and no control
/// character: the rule of `Sku::parse` and `CustomerId::parse`. Control
/// characters that are also whitespace (tab, newline) may pad it, as `trim`
/// removes them.
pub(super) fn trimmed_text_pattern(max: usize) -> String {
    let (w, c) = (WHITESPACE, CONTROL);
    format!("^[{w}]*[^{w}{c}](?:[^{c}]{{0,{}}}[^{w}{c}])?[{w}]*$", max - 2)
}

fn text(pattern: String, description: &str, example: &str) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
        .examples([json!(example)])
        .build()
        .into()
}

fn reference(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

fn described(name: &str, description: &str) -> RefOr<Schema> {
    let mut reference = Ref::from_schema_name(name);
    reference.description = description.to_owned();
    RefOr::Ref(reference)
}

impl PartialSchema for OrderId {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::Custom("uuid".into())))
            .description(Some("An order id: a UUIDv7, so ids sort by the time the order was placed."))
            .examples([json!("01a20dcc-ed95-73de-9ffd-b371688b9090")])
            .into()
    }
}
impl ToSchema for OrderId {}

impl PartialSchema for Sku {
    fn schema() -> RefOr<Schema> {
        let about = format!(
            "A stock-keeping unit: 1 to {MAX_SKU_LEN} characters once leading and trailing whitespace is \
             trimmed (the server stores it trimmed), no control characters."
        );
        text(trimmed_text_pattern(MAX_SKU_LEN), &about, "burger").into()
    }
}
impl ToSchema for Sku {}

impl PartialSchema for Quantity {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(MAX_QUANTITY))
            .description(Some("How many of one SKU."))
            .examples([json!(2)])
            .into()
    }
}
impl ToSchema for Quantity {}

impl PartialSchema for Status {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Status::ALL.map(Status::as_str)))
            .description(Some(
                "Where an order is: placed → reserved → completed → shipped, or placed → rejected (with a \
                 reason); cancelled from placed, reserved or completed. Rejected, cancelled and shipped are final.",
            ))
            .into()
    }
}
impl ToSchema for Status {}

/// Who places an order, as a request names them (`customer_id` or `user_id`).
pub(super) struct CustomerName;

impl PartialSchema for CustomerName {
    fn schema() -> RefOr<Schema> {
        let about = format!(
            "Who places the order: 1 to {MAX_CUSTOMER_LEN} characters once leading and trailing whitespace \
             is trimmed (the server stores it trimmed), no control characters."
        );
        text(trimmed_text_pattern(MAX_CUSTOMER_LEN), &about, "c1").into()
    }
}
impl ToSchema for CustomerName {}

/// The body of `POST /orders` and `POST /order`. Its fields are read in
/// `orders::OrderBody`; this is how they may be combined.
pub(super) struct OrderRequest;

fn required(fields: &[&str]) -> Schema {
    fields.iter().fold(ObjectBuilder::new(), |o, f| o.required(*f)).into()
}

impl PartialSchema for OrderRequest {
    fn schema() -> RefOr<Schema> {
        let items = ArrayBuilder::new()
            .items(reference("LineItem"))
            .min_items(Some(1))
            .max_items(Some(MAX_ITEMS))
            .description(Some("The full form: what to order, one line per SKU (a SKU named twice is summed)."));
        let fields = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("customer_id", reference("CustomerName"))
            .property(
                "user_id",
                described(
                    "CustomerName",
                    "The short form's name for `customer_id`; when both are given, `customer_id` counts.",
                ),
            )
            .property("items", items)
            .property("item", described("Sku", "The short form: the one SKU ordered."))
            .property("quantity", described("Quantity", "The short form: how many of `item`."));
        // Who: at least one of the two names.
        let who = AnyOfBuilder::new().item(required(&["customer_id"])).item(required(&["user_id"]));
        // What: `items`, or else both `item` and `quantity`; never a mix.
        let items_or_item = OneOfBuilder::new().item(required(&["items"])).item(required(&["item"]));
        let items_or_quantity = OneOfBuilder::new().item(required(&["items"])).item(required(&["quantity"]));
        AllOfBuilder::new()
            .item(fields)
            .item(who)
            .item(items_or_item)
            .item(items_or_quantity)
            .description(Some(
                "An order, in the full form (`customer_id`, `items`) or the short form of older clients \
                 (`user_id`, `item`, `quantity`). Fields not named here are ignored; a field given as `null` \
                 is refused. With a customer's token (a server started with `--auth jwt`) the token names the \
                 customer: the body may leave both names out, and one naming another customer is refused \
                 (`403 customer_mismatch`).",
            ))
            .examples([
                json!({ "customer_id": "c1", "items": [{ "sku": "burger", "quantity": 2 }] }),
                json!({ "user_id": "u1", "item": "burger", "quantity": 2 }),
            ])
            .into()
    }
}
impl ToSchema for OrderRequest {}

/// An order's id and status alone, as older clients read them.
#[derive(serde::Serialize, serde::Deserialize, ToSchema)]
pub(super) struct OrderStatus {
    pub order_id: OrderId,
    pub status: Status,
}

/// What `GET /health` answers.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes a body written with `json!` in `health.rs`.
pub(super) struct Health {
    status: Alive,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum Alive {
    Ok,
}

/// What `GET /ready` answers: ready, or why not.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes a body written with `json!` in `health.rs`.
pub(super) struct Readiness {
    /// `unavailable`: a dependency is down; `draining`: the process is stopping.
    status: ReadyState,
    /// Each dependency's state; absent while draining.
    #[schema(required = false)]
    checks: Checks,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum ReadyState {
    Ready,
    Unavailable,
    Draining,
}

/// The state of the store and of the broker.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct Checks {
    store: Check,
    broker: Check,
}

/// One dependency's state.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct Check {
    status: CheckState,
    /// Why it is down.
    #[schema(required = false)]
    error: String,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum CheckState {
    Ok,
    Down,
}

/// The `Idempotency-Key` header of the routes that place an order.
pub(super) struct IdempotencyKeyHeader;

impl IntoParams for IdempotencyKeyHeader {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!("^[!-~]{{1,{MAX_IDEMPOTENCY_KEY_LEN}}}$")));
        let parameter = ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "Makes retries safe: a repeat of the same request answers the first order again (with \
                 `idempotent-replayed: true`); the same key with a different request is a `409`.",
            ))
            .schema(Some(schema))
            .example(Some(json!("7f0c-checkout-1")));
        vec![parameter.build()]
    }
}

/// What `GET /ready` answers with `503`: why it is not ready, or, when the
/// process sheds load, the error body.
pub(super) struct NotReady;

impl PartialSchema for NotReady {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new().item(reference("Readiness")).item(reference("ErrorBody")).into()
    }
}
impl ToSchema for NotReady {}
