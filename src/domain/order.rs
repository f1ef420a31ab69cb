//! Orders and the values they are made of.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// Most line items one order may carry.
pub const MAX_ITEMS: usize = 100;
/// The largest quantity of one line.
pub const MAX_QUANTITY: u32 = 10_000;
/// Longest SKU, in characters, once trimmed.
pub const MAX_SKU_LEN: usize = 64;
/// Longest customer id, in characters, once trimmed.
pub const MAX_CUSTOMER_LEN: usize = 128;
/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Why a piece of client input was refused. The `code` is stable and machine
/// readable; the message is for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    pub code: &'static str,
    pub message: String,
}

impl ValidationError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// An order id: a UUIDv7, so ids sort by creation time and make a stable cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(Uuid);

impl OrderId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    pub fn as_uuid(self) -> Uuid {
        self.0
    }

    /// When the order was placed, in Unix milliseconds: the id is made at
    /// placement and a UUIDv7 carries its millisecond. `None` for an id that
    /// is not a UUIDv7.
    pub fn placed_millis(self) -> Option<i64> {
        let (secs, nanos) = self.0.get_timestamp()?.to_unix();
        Some(secs as i64 * 1000 + i64::from(nanos / 1_000_000))
    }
}

impl Default for OrderId {
    fn default() -> Self {
        Self::new()
    }
}

impl FromStr for OrderId {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| ValidationError::new("invalid_order_id", format!("'{s}' is not a valid order id (a UUID)")))
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

/// A stock-keeping unit: 1 to 64 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sku(String);

impl Sku {
    pub fn parse(s: impl Into<String>) -> Result<Self, ValidationError> {
        let s = s.into();
        let trimmed = s.trim();
        if trimmed.is_empty() {
            return Err(ValidationError::new("invalid_sku", "sku must not be empty"));
        }
        if trimmed.chars().count() > MAX_SKU_LEN {
            return Err(ValidationError::new("invalid_sku", format!("sku must be at most {MAX_SKU_LEN} characters")));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(ValidationError::new("invalid_sku", "sku must not contain control characters"));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sku {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl From<Sku> for String {
    fn from(s: Sku) -> Self {
        s.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How many of one SKU: 1 to 10,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u32")]
pub struct Quantity(u32);

impl Quantity {
    pub fn parse(n: i64) -> Result<Self, ValidationError> {
        if (1..=MAX_QUANTITY as i64).contains(&n) {
            Ok(Self(n as u32))
        } else {
            Err(ValidationError::new(
                "invalid_quantity",
                format!("quantity must be between 1 and {MAX_QUANTITY}, got {n}"),
            ))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<i64> for Quantity {
    type Error = ValidationError;
    fn try_from(n: i64) -> Result<Self, Self::Error> {
        Self::parse(n)
    }
}

impl From<Quantity> for u32 {
    fn from(q: Quantity) -> Self {
        q.0
    }
}

/// Who placed the order: 1 to 128 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CustomerId(String);

impl CustomerId {
    pub fn parse(s: impl Into<String>) -> Result<Self, ValidationError> {
        let s = s.into();
        let trimmed = s.trim();
        if trimmed.is_empty() {
            return Err(ValidationError::new("invalid_customer_id", "customer_id must not be empty"));
        }
        if trimmed.chars().count() > MAX_CUSTOMER_LEN || trimmed.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "invalid_customer_id",
                format!("customer_id must be at most {MAX_CUSTOMER_LEN} printable characters"),
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The customer of orders placed without one (the body-less compat route).
    pub fn anonymous() -> Self {
        Self("anonymous".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A client's `Idempotency-Key` header: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        if s.is_empty() || s.len() > MAX_IDEMPOTENCY_KEY_LEN || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ValidationError::new(
                "invalid_idempotency_key",
                format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key in `customer`'s own space: the customer's id, then a unit
    /// separator, then the key. Neither a customer id (no control
    /// characters) nor a key (visible ASCII only) can hold the separator, so
    /// no two (customer, key) pairs, and no unscoped key, give the same text.
    pub(super) fn scoped_to(self, customer: &CustomerId) -> Self {
        Self(format!("{}\u{1f}{}", customer.as_str(), self.0))
    }
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LineItem {
    pub sku: Sku,
    pub quantity: Quantity,
}

/// A validated order, ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub customer_id: CustomerId,
    pub items: Vec<LineItem>,
}

impl NewOrder {
    pub fn new(customer_id: CustomerId, items: Vec<LineItem>) -> Result<Self, ValidationError> {
        if items.len() > MAX_ITEMS {
            return Err(ValidationError::new(
                "too_many_items",
                format!("an order may have at most {MAX_ITEMS} items, got {}", items.len()),
            ));
        }
        Ok(Self { customer_id, items })
    }

    /// Total quantity per SKU, so an order naming one SKU twice reserves the sum.
    pub fn quantities_by_sku(items: &[LineItem]) -> Vec<(Sku, u64)> {
        let mut totals: Vec<(Sku, u64)> = Vec::with_capacity(items.len());
        for item in items {
            match totals.iter_mut().find(|(sku, _)| *sku == item.sku) {
                Some((_, n)) => *n += u64::from(item.quantity.get()),
                None => totals.push((item.sku.clone(), u64::from(item.quantity.get()))),
            }
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sku_rules() {
        assert_eq!(Sku::parse(" burger ").unwrap().as_str(), "burger");
        assert_eq!(Sku::parse("").unwrap_err().code, "invalid_sku");
        assert_eq!(Sku::parse("   ").unwrap_err().code, "invalid_sku");
        assert!(Sku::parse("x".repeat(64)).is_ok());
        assert_eq!(Sku::parse("x".repeat(65)).unwrap_err().code, "invalid_sku");
        assert!(Sku::parse("a\u{0}b").is_err());
    }

    #[test]
    fn quantity_bounds() {
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(-3).is_err());
        assert_eq!(Quantity::parse(1).unwrap().get(), 1);
        assert_eq!(Quantity::parse(10_000).unwrap().get(), 10_000);
        assert_eq!(Quantity::parse(10_001).unwrap_err().code, "invalid_quantity");
    }

    #[test]
    fn item_count_limit() {
        let item = LineItem { sku: Sku::parse("a").unwrap(), quantity: Quantity::parse(1).unwrap() };
        let c = CustomerId::parse("c").unwrap();
        assert!(NewOrder::new(c.clone(), vec![item.clone(); 100]).is_ok());
        assert_eq!(NewOrder::new(c, vec![item; 101]).unwrap_err().code, "too_many_items");
    }

    #[test]
    fn quantities_are_summed_per_sku() {
        let li = |s: &str, n| LineItem { sku: Sku::parse(s).unwrap(), quantity: Quantity::parse(n).unwrap() };
        let totals = NewOrder::quantities_by_sku(&[li("a", 2), li("b", 1), li("a", 3)]);
        assert_eq!(totals, vec![(Sku::parse("a").unwrap(), 5), (Sku::parse("b").unwrap(), 1)]);
    }

    #[test]
    fn order_ids_parse_and_sort_by_time() {
        let a = OrderId::new();
        let b = OrderId::new();
        assert!(a < b);
        assert_eq!(a.to_string().parse::<OrderId>().unwrap(), a);
        assert_eq!("nope".parse::<OrderId>().unwrap_err().code, "invalid_order_id");
    }

    #[test]
    fn an_order_id_tells_when_it_was_placed() {
        let before = crate::domain::now_millis();
        let placed = OrderId::new().placed_millis().expect("a v7 id");
        assert!((before..=crate::domain::now_millis()).contains(&placed));
        assert_eq!(OrderId::from_uuid(Uuid::nil()).placed_millis(), None);
    }

    #[test]
    fn idempotency_keys() {
        assert!(IdempotencyKey::parse("abc-123").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
    }
}
