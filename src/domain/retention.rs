//! Retention: how long the records that make retries and redeliveries
//! harmless are kept, and what happens to a late copy once they are gone.
//!
//! Three tables grow with every order: the idempotency keys, each consumer's
//! inbox and the notifications (the notifier's inbox). Each record only
//! protects against a repeat for a while: a client retries within minutes,
//! a broker redelivers within its retry backoff and claim timeouts. Past its
//! window a record is pruned, and the rules here keep the guarantees honest
//! without it: a key past its time-to-live is unknown whether or not its row
//! is still there, and a dead letter is replayed only when the order's status
//! shows its effect was not applied (`replay_verdict`). The reasoning behind
//! the windows is in docs/architecture.md#retention.

use super::{EventType, Status};
use std::time::Duration;
use uuid::Uuid;

/// How long an idempotency key holds by default, as payment APIs keep theirs.
pub const DEFAULT_KEY_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long an inbox entry is kept by default: far past any redelivery, so an
/// outage of days still finds every applied event remembered.
pub const DEFAULT_INBOX_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The two windows: how long an idempotency key holds, and how long the
/// consumers remember the events they applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub key_ttl: Duration,
    pub inbox: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self { key_ttl: DEFAULT_KEY_TTL, inbox: DEFAULT_INBOX_RETENTION }
    }
}

/// The time at or before which a record is older than `window` at `now`
/// (both in milliseconds since the epoch).
pub fn cutoff(now: i64, window: Duration) -> i64 {
    now.saturating_sub(i64::try_from(window.as_millis()).unwrap_or(i64::MAX))
}

/// Whether an idempotency key recorded at `created_at` still holds at `now`:
/// after `ttl` it is unknown, and a request carrying it is a new one.
pub fn key_holds(created_at: i64, now: i64, ttl: Duration) -> bool {
    created_at > cutoff(now, ttl)
}

/// The smallest UUIDv7 of millisecond `ms`. Event ids are UUIDv7, whose
/// first 48 bits are the millisecond they were made in, so every id made
/// before `ms` sorts below this one, as bytes and as hyphenated text: the
/// bound that prunes an inbox by its primary key.
pub fn first_uuid_of(ms: i64) -> Uuid {
    let ms = (ms.max(0) as u128) & ((1 << 48) - 1);
    Uuid::from_u128((ms << 80) | (0x7 << 76) | (0b10 << 62))
}

/// The millisecond a UUIDv7 was made in; `None` for other versions.
pub fn uuid_millis(id: Uuid) -> Option<i64> {
    (id.get_version_num() == 7).then(|| (id.as_u128() >> 80) as i64)
}

impl EventType {
    /// The status an order is in for as long as this event's effect is still
    /// to apply: the inventory service reserves or rejects a `placed` order,
    /// the notifier completes a `reserved` one and tells of a `rejected` one.
    /// An event for an order in any other status was applied (the statuses
    /// move only forward), and every consumer refuses it.
    pub fn applies_to(self) -> Status {
        match self {
            EventType::OrderPlaced => Status::Placed,
            EventType::InventoryReserved => Status::Reserved,
            EventType::InventoryFailed => Status::Rejected,
        }
    }
}

/// What replaying a dead event would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// Its effect is still to apply (or its consumer will refuse it safely).
    Replay,
    /// The order is past the status the event applies to: it was applied.
    Applied(Status),
    /// Whether it was applied is no longer known: only its consumer's inbox
    /// could tell, and the event is older than the inbox's window.
    Unknowable,
}

/// Whether a dead event may be replayed without applying its effect twice.
/// `status` is the order's (`None`: no such order, which the consumers retry
/// and dead-letter again, as before), and `remembered` whether the event is
/// recent enough that its consumer's inbox still holds it if it was applied.
///
/// The status answers for `OrderPlaced` and `InventoryReserved`: each moves
/// the order, so an order past the status the event applies to has had it.
/// `InventoryFailed` moves nothing (the order was rejected already), so only
/// the notifier's inbox knows whether the customer was told, and past the
/// window that is no longer known.
pub fn replay_verdict(event: EventType, status: Option<Status>, remembered: bool) -> ReplayVerdict {
    match status {
        None => ReplayVerdict::Replay,
        Some(status) if status != event.applies_to() => ReplayVerdict::Applied(status),
        Some(_) if event == EventType::InventoryFailed && !remembered => ReplayVerdict::Unknowable,
        Some(_) => ReplayVerdict::Replay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_until_its_ttl_has_passed() {
        let ttl = Duration::from_secs(10);
        assert!(key_holds(1_000_000, 1_009_999, ttl));
        assert!(!key_holds(1_000_000, 1_010_000, ttl));
        assert!(!key_holds(1_000_000, 2_000_000, ttl));
    }

    #[test]
    fn the_uuid_bound_splits_ids_by_their_millisecond() {
        let id = Uuid::now_v7();
        let ms = uuid_millis(id).unwrap();
        assert!(first_uuid_of(ms) <= id);
        assert!(first_uuid_of(ms + 1) > id);
        assert_eq!(uuid_millis(first_uuid_of(ms)), Some(ms));
        // The tables that hold ids as text compare them as text.
        assert!(first_uuid_of(ms + 1).hyphenated().to_string() > id.hyphenated().to_string());
        assert_eq!(uuid_millis(Uuid::new_v4()), None);
    }

    #[test]
    fn a_dead_event_is_replayed_only_while_its_effect_is_still_to_apply() {
        use EventType::*;
        use ReplayVerdict::*;
        assert_eq!(replay_verdict(OrderPlaced, Some(Status::Placed), false), Replay);
        assert_eq!(replay_verdict(OrderPlaced, Some(Status::Completed), true), Applied(Status::Completed));
        assert_eq!(replay_verdict(OrderPlaced, Some(Status::Rejected), true), Applied(Status::Rejected));
        assert_eq!(replay_verdict(InventoryReserved, Some(Status::Reserved), false), Replay);
        assert_eq!(replay_verdict(InventoryReserved, Some(Status::Completed), true), Applied(Status::Completed));
        assert_eq!(replay_verdict(InventoryFailed, Some(Status::Rejected), true), Replay);
        assert_eq!(replay_verdict(InventoryFailed, Some(Status::Rejected), false), Unknowable);
        assert_eq!(replay_verdict(InventoryFailed, None, false), Replay);
    }
}
