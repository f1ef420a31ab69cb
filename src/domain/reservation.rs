//! The reservation rule: an order takes all of its items or none.
//!
//! Both stores apply it, each in its own way (SQLite one part of a batch at a
//! time on its writer, PostgreSQL under row locks taken in SKU order), so the
//! rule is written once, here, as a plain function of what a store has read:
//! the order's items and the stock each SKU still has for it. The store does
//! the reading, hands the levels in through a lookup, and writes back what
//! the decision says; it never weighs the stock itself.

use super::lifecycle::Status;
use super::order::{LineItem, NewOrder, Sku};
use std::fmt;

/// Why an order cannot be reserved. Its text (`unknown_sku:SKU`,
/// `out_of_stock:SKU`) is the reason stored with the rejected order and
/// carried by its `InventoryFailed` event, which clients read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The store has no stock row for the SKU.
    UnknownSku(Sku),
    /// The SKU has less stock left than the order needs.
    OutOfStock(Sku),
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::UnknownSku(sku) => write!(f, "unknown_sku:{sku}"),
            Rejection::OutOfStock(sku) => write!(f, "out_of_stock:{sku}"),
        }
    }
}

/// Stock of one SKU as a store's batch sees it: what the store read (`None`
/// when the SKU is unknown), what earlier orders of the batch took from
/// `available` (less what cancelled orders gave back: it may be negative),
/// and what shipped orders sent out of `reserved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StockLeft {
    pub available: Option<i64>,
    pub taken: i64,
    pub shipped: i64,
}

impl StockLeft {
    /// What the next order can still take: the lookup `decide` wants.
    pub fn left(&self) -> Option<i64> {
        self.available.map(|n| n - self.taken)
    }
}

/// What to do with one order's stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Take these quantities: one entry per SKU, with the total the order
    /// names, in the order the SKUs first appear among its items.
    Reserve(Vec<(Sku, u64)>),
    /// Take nothing and reject the order.
    Reject(Rejection),
}

impl Reservation {
    /// Decides an order. `available` gives the stock a SKU still has for this
    /// order (what earlier orders of the same batch took already deducted),
    /// or `None` when the SKU is unknown.
    ///
    /// SKUs are checked in the order they first appear among the items, and
    /// the first one that fails gives the reason; repeated SKUs count their
    /// total. A SKU with exactly what the order needs is reserved, so stock
    /// never goes below zero. An order with no items reserves nothing, and
    /// is reserved.
    pub fn decide(items: &[LineItem], mut available: impl FnMut(&Sku) -> Option<i64>) -> Reservation {
        let wanted = NewOrder::quantities_by_sku(items);
        for (sku, needed) in &wanted {
            match available(sku) {
                None => return Reservation::Reject(Rejection::UnknownSku(sku.clone())),
                Some(left) if i128::from(left) < i128::from(*needed) => {
                    return Reservation::Reject(Rejection::OutOfStock(sku.clone()))
                }
                Some(_) => {}
            }
        }
        Reservation::Reserve(wanted)
    }

    /// The reason stored with the order: its rejection's text, or `None`.
    pub fn reason(&self) -> Option<String> {
        match self {
            Reservation::Reserve(_) => None,
            Reservation::Reject(rejection) => Some(rejection.to_string()),
        }
    }

    /// The status the decision moves a placed order to.
    pub fn status(&self) -> Status {
        match self {
            Reservation::Reserve(_) => Status::Reserved,
            Reservation::Reject(_) => Status::Rejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Rejection, Reservation};
    use crate::domain::{LineItem, Quantity, Sku, Status};
    use std::collections::HashMap;

    fn sku(s: &str) -> Sku {
        Sku::parse(s).unwrap()
    }

    fn items(lines: &[(&str, i64)]) -> Vec<LineItem> {
        lines.iter().map(|(s, n)| LineItem { sku: sku(s), quantity: Quantity::parse(*n).unwrap() }).collect()
    }

    /// Decides `lines` against `stock`; a SKU missing from `stock` is unknown.
    fn decide(lines: &[(&str, i64)], stock: &[(&str, i64)]) -> Reservation {
        let stock: HashMap<Sku, i64> = stock.iter().map(|(s, n)| (sku(s), *n)).collect();
        Reservation::decide(&items(lines), |s| stock.get(s).copied())
    }

    #[test]
    fn repeated_skus_are_reserved_as_one_total() {
        let decision = decide(&[("a", 2), ("b", 1), ("a", 3)], &[("a", 5), ("b", 1)]);
        assert_eq!(decision, Reservation::Reserve(vec![(sku("a"), 5), (sku("b"), 1)]));
        assert_eq!((decision.status(), decision.reason()), (Status::Reserved, None));
    }

    #[test]
    fn repeated_skus_are_checked_against_their_total() {
        let decision = decide(&[("a", 2), ("a", 3)], &[("a", 4)]);
        assert_eq!(decision, Reservation::Reject(Rejection::OutOfStock(sku("a"))));
    }

    #[test]
    fn an_unknown_sku_rejects_the_order() {
        let decision = decide(&[("a", 1), ("caviar", 1)], &[("a", 10)]);
        assert_eq!(decision, Reservation::Reject(Rejection::UnknownSku(sku("caviar"))));
        assert_eq!((decision.status(), decision.reason().as_deref()), (Status::Rejected, Some("unknown_sku:caviar")));
    }

    #[test]
    fn exactly_the_stock_left_is_enough_and_one_more_is_not() {
        assert_eq!(decide(&[("a", 3)], &[("a", 3)]), Reservation::Reserve(vec![(sku("a"), 3)]));
        assert_eq!(decide(&[("a", 4)], &[("a", 3)]), Reservation::Reject(Rejection::OutOfStock(sku("a"))));
        assert_eq!(decide(&[("a", 1)], &[("a", 0)]), Reservation::Reject(Rejection::OutOfStock(sku("a"))));
        assert_eq!(decide(&[("a", 1)], &[("a", -2)]), Reservation::Reject(Rejection::OutOfStock(sku("a"))));
    }

    #[test]
    fn an_order_with_no_items_reserves_nothing() {
        assert_eq!(decide(&[], &[]), Reservation::Reserve(vec![]));
        assert_eq!(decide(&[], &[]).status(), Status::Reserved);
    }

    /// The first SKU (by first appearance) that fails gives the reason,
    /// whichever of the two reasons it is; later SKUs are not looked up.
    #[test]
    fn the_first_failing_sku_gives_the_reason() {
        let out_then_unknown = decide(&[("a", 5), ("nope", 1)], &[("a", 1)]);
        assert_eq!(out_then_unknown, Reservation::Reject(Rejection::OutOfStock(sku("a"))));
        let unknown_then_out = decide(&[("nope", 1), ("a", 5)], &[("a", 1)]);
        assert_eq!(unknown_then_out, Reservation::Reject(Rejection::UnknownSku(sku("nope"))));
        let repeated_later = decide(&[("a", 1), ("b", 9), ("a", 1)], &[("a", 1), ("b", 1)]);
        assert_eq!(repeated_later, Reservation::Reject(Rejection::OutOfStock(sku("a"))));

        let mut looked_up = Vec::new();
        let stock = HashMap::from([(sku("a"), 0)]);
        let decision = Reservation::decide(&items(&[("a", 1), ("b", 1)]), |s| {
            looked_up.push(s.clone());
            stock.get(s).copied()
        });
        assert_eq!(decision, Reservation::Reject(Rejection::OutOfStock(sku("a"))));
        assert_eq!(looked_up, vec![sku("a")]);
    }

    #[test]
    fn reasons_read_as_clients_see_them() {
        assert_eq!(Rejection::UnknownSku(sku("caviar")).to_string(), "unknown_sku:caviar");
        assert_eq!(Rejection::OutOfStock(sku("fries")).to_string(), "out_of_stock:fries");
    }
}
