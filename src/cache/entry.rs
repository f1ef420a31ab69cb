//! What a cache entry holds, and which entry may replace which.
//!
//! An entry is one Redis string per order, `orderflow:order:<id>`, holding a
//! version, a space and the order's JSON (what `GET /orders/{id}` answers),
//! or a version alone: a tombstone, which says the order has moved past a
//! status without saying where to. The version comes from the status's step
//! in the lifecycle (`Status::step`): a copy of an order in status `s` is
//! `2·step(s) + 1`, a tombstone for an order that has left `s` is
//! `2·step(s) + 2`. So a tombstone outranks every copy of the status it
//! names and is outranked by every copy of a later one, and one integer
//! comparison in Redis (`SET_IF_NEWER`) decides every race: an entry is
//! written only over nothing or over a lower version.

use crate::domain::{OrderId, Status};
use std::time::Duration;

/// How long a copy of an order that may still change, and a tombstone, stay
/// in Redis: the longest a copy can be stale when the write that should have
/// replaced it was lost (a process killed between its commit and its cache
/// write, or Redis unreachable from it for a moment). Counted from when the
/// copy was read from the store, so a fill that arrives late lives no longer.
pub const FRESH_FOR: Duration = Duration::from_secs(60);

/// How long a copy of an order in a terminal status stays: it can never be
/// stale, so only memory bounds it.
pub const TERMINAL_FOR: Duration = Duration::from_secs(3600);

/// Writes each entry only over nothing or over a lower version. For the key
/// `KEYS[i]`, `ARGV[3i-2]` is its version, `ARGV[3i-1]` its value and
/// `ARGV[3i]` its time to live in milliseconds. Returns how many it wrote.
/// One script for one entry (a fill) or many (a batch's tombstones), so a
/// batch costs one round trip.
pub const SET_IF_NEWER: &str = r"
local stored = 0
for i, key in ipairs(KEYS) do
  local version = tonumber(ARGV[3 * i - 2])
  local current = redis.call('GET', key)
  local held = current and tonumber(string.match(current, '^%d+')) or -1
  if held < version then
    redis.call('SET', key, ARGV[3 * i - 1], 'PX', ARGV[3 * i])
    stored = stored + 1
  end
end
return stored
";

/// One entry to write with `SET_IF_NEWER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub version: u8,
    pub value: String,
    pub ttl: Duration,
}

impl Entry {
    /// A copy of the order, whose JSON is `json` and status `status`, read
    /// from the store `read_age` ago; `None` when it is too old to cache.
    pub fn copy(id: OrderId, status: Status, json: &str, read_age: Duration) -> Option<Entry> {
        let ttl = if status.is_terminal() { TERMINAL_FOR } else { FRESH_FOR.checked_sub(read_age)? };
        if ttl < Duration::from_millis(1) {
            return None;
        }
        let version = copy_version(status);
        Some(Entry { key: key(id), version, value: format!("{version} {json}"), ttl })
    }

    /// A tombstone: the order has left `status` (its commit is done).
    pub fn moved_past(id: OrderId, status: Status) -> Entry {
        let version = tombstone_version(status);
        Entry { key: key(id), version, value: version.to_string(), ttl: FRESH_FOR }
    }
}

pub fn key(id: OrderId) -> String {
    format!("orderflow:order:{id}")
}

fn copy_version(status: Status) -> u8 {
    2 * status.step() + 1
}

fn tombstone_version(left: Status) -> u8 {
    2 * left.step() + 2
}

/// The order's JSON in a stored value; `None` for a tombstone or a value
/// this version of orderflow did not write.
pub fn json_of(value: &str) -> Option<&str> {
    let (version, json) = value.split_once(' ')?;
    (!version.is_empty() && version.bytes().all(|b| b.is_ascii_digit()) && json.starts_with('{')).then_some(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Along every path of the lifecycle, each status's copy is outranked by
    /// the tombstone saying the order left it, which is outranked by the
    /// next status's copy.
    #[test]
    fn versions_follow_the_lifecycle() {
        for from in Status::ALL {
            assert!(copy_version(from) < tombstone_version(from), "{from}");
            for to in Status::ALL.into_iter().filter(|to| from.can_become(*to)) {
                assert!(tombstone_version(from) < copy_version(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn values_tell_copies_from_tombstones() {
        let id = OrderId::new();
        let copy = Entry::copy(id, Status::Reserved, r#"{"status":"reserved"}"#, Duration::ZERO).unwrap();
        assert_eq!(copy.value, r#"3 {"status":"reserved"}"#);
        assert_eq!(json_of(&copy.value), Some(r#"{"status":"reserved"}"#));
        let tombstone = Entry::moved_past(id, Status::Reserved);
        assert_eq!((tombstone.value.as_str(), tombstone.version), ("4", 4));
        assert_eq!(json_of(&tombstone.value), None);
        assert_eq!(json_of("x {}"), None);
        assert_eq!(json_of(" {}"), None);
    }

    /// A copy of an order that may still change lives `FRESH_FOR` from its
    /// read, not from its write; a terminal one lives long.
    #[test]
    fn a_late_copy_lives_no_longer() {
        let id = OrderId::new();
        let late = Entry::copy(id, Status::Placed, "{}", Duration::from_secs(45)).unwrap();
        assert_eq!(late.ttl, Duration::from_secs(15));
        assert_eq!(Entry::copy(id, Status::Placed, "{}", FRESH_FOR), None);
        assert_eq!(Entry::copy(id, Status::Shipped, "{}", FRESH_FOR).unwrap().ttl, TERMINAL_FOR);
        assert_eq!(Entry::copy(id, Status::Completed, "{}", FRESH_FOR), None, "a completed order may still move");
    }
}
