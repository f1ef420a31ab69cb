//! Orders as orderflow renders them for storage: the items and the
//! `OrderPlaced` event are JSON text built on the caller's task.

use std::sync::atomic::{AtomicU64, Ordering};
use uuid::Uuid;

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// One order ready for `place_batch`.
pub struct NewOrder {
    pub id: Uuid,
    pub customer_id: String,
    pub items: String,
    pub event: String,
}

impl NewOrder {
    /// A fresh order with one to three line items.
    pub fn generate() -> Self {
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let id = Uuid::now_v7();
        let customer_id = format!("customer-{}", n % 1000);
        let items = items_json(n);
        let event = event_json(id, &customer_id, &items);
        Self { id, customer_id, items, event }
    }
}

fn items_json(n: u64) -> String {
    let lines: Vec<String> =
        (0..=n % 3).map(|i| format!(r#"{{"sku":"sku-{}","quantity":{}}}"#, (n + i) % 8 + 1, i + 1)).collect();
    format!("[{}]", lines.join(","))
}

fn event_json(order_id: Uuid, customer_id: &str, items: &str) -> String {
    let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    format!(
        r#"{{"event_id":"{}","event_type":"OrderPlaced","order_id":"{order_id}","timestamp":"{timestamp}","customer_id":"{customer_id}","items":{items}}}"#,
        Uuid::now_v7()
    )
}

/// A batch as the columns of the two `unnest` inserts.
pub struct Columns<'a> {
    pub ids: Vec<Uuid>,
    pub customers: Vec<&'a str>,
    pub items: Vec<&'a str>,
    pub bodies: Vec<&'a str>,
}

impl<'a> Columns<'a> {
    pub fn of(orders: &'a [NewOrder]) -> Self {
        Self {
            ids: orders.iter().map(|o| o.id).collect(),
            customers: orders.iter().map(|o| o.customer_id.as_str()).collect(),
            items: orders.iter().map(|o| o.items.as_str()).collect(),
            bodies: orders.iter().map(|o| o.event.as_str()).collect(),
        }
    }
}

/// An `orders` row as the store's point read returns it.
#[derive(Debug)]
pub struct OrderRow {
    pub id: Uuid,
    pub customer_id: String,
    pub status: String,
    pub reason: Option<String>,
    pub items: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub reserved_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub rejected_at: Option<i64>,
}

impl OrderRow {
    /// Fails unless this is the freshly placed order `id`, so a driver that
    /// decodes a column wrongly cannot go unnoticed.
    pub fn check(&self, id: Uuid) -> anyhow::Result<()> {
        let placed = self.id == id
            && self.status == "placed"
            && self.customer_id.starts_with("customer-")
            && self.items.starts_with('[')
            && self.reason.is_none()
            && self.created_at == self.updated_at
            && self.reserved_at.is_none()
            && self.completed_at.is_none()
            && self.rejected_at.is_none();
        anyhow::ensure!(placed, "order {id} came back as {self:?}");
        Ok(())
    }
}

pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
