//! An order's lifecycle: its statuses, the moves between them, what a client
//! may ask of a placed order (cancel it, ship it), and what the inventory
//! does with the order's stock at each of its events.
//!
//! ```text
//! placed ─┬─> reserved ──> completed ──> shipped
//!         └─> rejected        │
//!   placed, reserved, completed ──> cancelled
//! ```
//!
//! Rejected, cancelled and shipped are final. The stores persist these
//! decisions (a status update names the status it moves from, so a move
//! decided on a stale read changes nothing); they never weigh them.
//!
//! Stock follows the order through one flag the store keeps on it, whether
//! the order holds stock: set when its reservation commits, cleared when its
//! stock is given back (cancelled) or leaves for good (shipped). The
//! inventory service reserves only for an order still `placed`, so a cancel
//! that lands first leaves nothing to give back, and one that lands after
//! finds the flag set (docs/architecture.md#cancel-and-ship).

use super::event::EventType;
use super::order::ValidationError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where an order is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Placed,
    Reserved,
    Completed,
    Rejected,
    Cancelled,
    Shipped,
}

impl Status {
    pub const ALL: [Status; 6] =
        [Status::Placed, Status::Reserved, Status::Completed, Status::Rejected, Status::Cancelled, Status::Shipped];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Placed => "placed",
            Status::Reserved => "reserved",
            Status::Completed => "completed",
            Status::Rejected => "rejected",
            Status::Cancelled => "cancelled",
            Status::Shipped => "shipped",
        }
    }

    /// Whether the lifecycle allows moving from `self` to `next`.
    pub fn can_become(self, next: Status) -> bool {
        use Status::*;
        matches!(
            (self, next),
            (Placed, Reserved)
                | (Placed, Rejected)
                | (Reserved, Completed)
                | (Placed | Reserved | Completed, Cancelled)
                | (Completed, Shipped)
        )
    }

    /// Whether the inventory service still has to decide the order: both of
    /// its outcomes, reserved and rejected, are moves from here.
    pub fn awaits_reservation(self) -> bool {
        self.can_become(Status::Reserved) && self.can_become(Status::Rejected)
    }

    /// An order in a final status never changes again: live streams end there.
    pub fn is_terminal(self) -> bool {
        Status::ALL.iter().all(|next| !self.can_become(*next))
    }

    /// How far the order has come since it was placed. Every allowed move
    /// goes up, so of two statuses one order has had, the one with the
    /// higher step is the newer: what lets a copy of an order (the cache, a
    /// live stream) refuse an older one. Cancelled and shipped share the
    /// last step: no order has both.
    pub fn step(self) -> u8 {
        match self {
            Status::Placed => 0,
            Status::Reserved | Status::Rejected => 1,
            Status::Completed => 2,
            Status::Cancelled | Status::Shipped => 3,
        }
    }
}

impl FromStr for Status {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Status::ALL.map(Status::as_str).to_vec();
            ValidationError::new("invalid_status", format!("status must be one of {}; got '{s}'", names.join(", ")))
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a client may ask of an order once it is placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The customer (or the operator) calls the order off.
    Cancel,
    /// The operator sends a completed order out.
    Ship,
}

/// What a request does to an order in a given status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Move the order, and queue the request's event with the move.
    Move { from: Status, to: Status },
    /// The order is there already: a repeated request changes nothing.
    Already,
    /// The lifecycle does not allow it (`409 invalid_transition`).
    Refuse { from: Status, to: Status },
}

impl Request {
    /// The status the request moves an order to.
    pub fn target(self) -> Status {
        match self {
            Request::Cancel => Status::Cancelled,
            Request::Ship => Status::Shipped,
        }
    }

    /// The event queued with the move, for the inventory service.
    pub fn event_type(self) -> EventType {
        match self {
            Request::Cancel => EventType::OrderCancelled,
            Request::Ship => EventType::OrderShipped,
        }
    }

    /// Decides the request for an order now in `current`.
    pub fn decide(self, current: Status) -> Decision {
        let to = self.target();
        if current == to {
            Decision::Already
        } else if current.can_become(to) {
            Decision::Move { from: current, to }
        } else {
            Decision::Refuse { from: current, to }
        }
    }
}

impl Decision {
    /// Why a refused request was refused, for the client.
    pub fn refusal(self) -> Option<String> {
        match self {
            Decision::Refuse { from, to: Status::Cancelled } => Some(format!("a {from} order cannot be cancelled")),
            Decision::Refuse { from, to } => Some(format!("a {from} order cannot become {to}")),
            _ => None,
        }
    }
}

/// What the inventory service does with an order's stock for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockStep {
    /// Decide the reservation of a placed order (`Reservation::decide`).
    Reserve,
    /// Give the order's stock back: reserved → available.
    Release,
    /// Send the order's stock out: reserved → shipped, for good.
    Ship,
    /// The order holds no stock (it was cancelled before its reservation):
    /// nothing moves, and the outcome is still reported.
    Report,
    /// Nothing to do: the order is past what the event asks (a placed order
    /// cancelled before its reservation, or an event about a status the
    /// order is not in).
    Skip,
}

impl StockStep {
    /// The step for an event about an order now in `status`, which holds
    /// stock or not.
    pub fn of(event: EventType, status: Status, holds_stock: bool) -> StockStep {
        match event {
            EventType::OrderPlaced if status.awaits_reservation() => StockStep::Reserve,
            EventType::OrderCancelled if status == Status::Cancelled => {
                if holds_stock {
                    StockStep::Release
                } else {
                    StockStep::Report
                }
            }
            EventType::OrderShipped if status == Status::Shipped => {
                if holds_stock {
                    StockStep::Ship
                } else {
                    StockStep::Report
                }
            }
            _ => StockStep::Skip,
        }
    }

    /// The outcome the inventory service queues for the notifier after a
    /// release, a shipment or a report about `event` (a reservation's
    /// outcome depends on its decision instead).
    pub fn outcome(event: EventType) -> Option<EventType> {
        match event {
            EventType::OrderCancelled => Some(EventType::InventoryReleased),
            EventType::OrderShipped => Some(EventType::InventoryShipped),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    /// Every allowed move, and only those: each goes up a step, and
    /// nothing leaves a final status.
    #[test]
    fn statuses_move_only_forward() {
        let allowed = [
            (Placed, Reserved),
            (Placed, Rejected),
            (Reserved, Completed),
            (Placed, Cancelled),
            (Reserved, Cancelled),
            (Completed, Cancelled),
            (Completed, Shipped),
        ];
        for from in Status::ALL {
            for to in Status::ALL {
                assert_eq!(from.can_become(to), allowed.contains(&(from, to)), "{from} -> {to}");
                if from.can_become(to) {
                    assert!(to.step() > from.step(), "{from} -> {to} goes up");
                }
            }
        }
        let terminal: Vec<Status> = Status::ALL.into_iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, vec![Rejected, Cancelled, Shipped]);
        assert!(Placed.awaits_reservation());
        assert!(Status::ALL.into_iter().filter(|s| s.awaits_reservation()).eq([Placed]));
    }

    #[test]
    fn statuses_parse_from_their_names() {
        for status in Status::ALL {
            assert_eq!(status.as_str().parse::<Status>().unwrap(), status);
        }
        let e = "lost".parse::<Status>().unwrap_err();
        assert_eq!(e.code, "invalid_status");
        assert!(e.message.contains("cancelled, shipped"), "{}", e.message);
    }

    /// Cancel: from anything not final; repeated, nothing; else refused.
    #[test]
    fn cancel_is_decided_for_every_status() {
        for from in [Placed, Reserved, Completed] {
            assert_eq!(Request::Cancel.decide(from), Decision::Move { from, to: Cancelled });
        }
        assert_eq!(Request::Cancel.decide(Cancelled), Decision::Already);
        for from in [Rejected, Shipped] {
            let decision = Request::Cancel.decide(from);
            assert_eq!(decision, Decision::Refuse { from, to: Cancelled });
            assert_eq!(decision.refusal().unwrap(), format!("a {from} order cannot be cancelled"));
        }
        assert_eq!(Request::Cancel.event_type(), EventType::OrderCancelled);
    }

    /// Ship: only a completed order; repeated, nothing; else refused.
    #[test]
    fn ship_is_decided_for_every_status() {
        assert_eq!(Request::Ship.decide(Completed), Decision::Move { from: Completed, to: Shipped });
        assert_eq!(Request::Ship.decide(Shipped), Decision::Already);
        for from in [Placed, Reserved, Rejected, Cancelled] {
            let decision = Request::Ship.decide(from);
            assert_eq!(decision, Decision::Refuse { from, to: Shipped });
            assert_eq!(decision.refusal().unwrap(), format!("a {from} order cannot become shipped"));
        }
        assert_eq!(Decision::Already.refusal(), None);
        assert_eq!(Request::Ship.event_type(), EventType::OrderShipped);
    }

    /// The inventory reserves only for a placed order, gives back only what
    /// a cancelled order holds, and ships only what a shipped order holds.
    #[test]
    fn stock_follows_the_order() {
        use EventType::*;
        for status in Status::ALL {
            for holds in [false, true] {
                let placed = StockStep::of(OrderPlaced, status, holds);
                assert_eq!(placed == StockStep::Reserve, status == Placed, "{status}");
                let cancelled = StockStep::of(OrderCancelled, status, holds);
                let expected = match (status, holds) {
                    (Cancelled, true) => StockStep::Release,
                    (Cancelled, false) => StockStep::Report,
                    _ => StockStep::Skip,
                };
                assert_eq!(cancelled, expected, "cancelled, {status}, holds {holds}");
                let shipped = StockStep::of(OrderShipped, status, holds);
                let expected = match (status, holds) {
                    (Shipped, true) => StockStep::Ship,
                    (Shipped, false) => StockStep::Report,
                    _ => StockStep::Skip,
                };
                assert_eq!(shipped, expected, "shipped, {status}, holds {holds}");
                for other in [InventoryReserved, InventoryFailed, InventoryReleased, InventoryShipped] {
                    assert_eq!(StockStep::of(other, status, holds), StockStep::Skip);
                }
            }
        }
        assert_eq!(StockStep::outcome(OrderCancelled), Some(InventoryReleased));
        assert_eq!(StockStep::outcome(OrderShipped), Some(InventoryShipped));
        assert_eq!(StockStep::outcome(OrderPlaced), None);
    }
}
