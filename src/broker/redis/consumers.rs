//! Forgetting the consumers that are gone.
//!
//! Each subscription reads under a name of its own, so every worker that
//! restarts leaves its old name in the group, and `XINFO CONSUMERS` grows by
//! one name per restart, for good. Now and then each subscription deletes
//! (`XGROUP DELCONSUMER`) the other consumers of its group that hold no
//! pending entry and have been idle for `STALE_FACTOR` claim timeouts. A
//! live consumer is never that idle: it reads every fraction of a second, or
//! holds a batch, which is pending. A dead one that still holds entries is
//! left until the others have claimed them, after one claim timeout.
//!
//! The test and the deletion run in one Lua script, so nothing happens in
//! between: a consumer deleted just after it read entries would take them out
//! of the pending list, and no one would be given them again.

use super::streams::{items, text};
use redis::aio::ConnectionManager;
use redis::Value;
use std::time::Duration;

/// How many claim timeouts a consumer with nothing pending must have been
/// idle before it is deleted.
pub(super) const STALE_FACTOR: u32 = 10;

/// Deletes the consumers of `group` on `stream`, other than `me`, with no
/// entry pending and idle for longer than `idle_ms`; returns their names.
const SWEEP: &str = r"
local deleted = {}
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #consumer, 2 do info[consumer[i]] = consumer[i + 1] end
  if info['name'] ~= ARGV[3] and info['pending'] == 0 and info['idle'] > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    table.insert(deleted, info['name'])
  end
end
return deleted
";

/// How long a consumer with nothing pending must have been idle to be deleted.
pub(super) fn stale_after(claim_idle: Duration) -> Duration {
    claim_idle * STALE_FACTOR
}

/// Least time between two sweeps of one subscription: often enough that a
/// name waits at most about one and a half stale periods, rarely enough to
/// cost nothing.
pub(super) fn sweep_interval(claim_idle: Duration) -> Duration {
    (stale_after(claim_idle) / 2).clamp(Duration::from_secs(1), Duration::from_secs(300))
}

/// Deletes the consumers of `group` that are gone; returns their names.
pub(super) async fn sweep(
    conn: &mut ConnectionManager,
    stream: &str,
    group: &str,
    me: &str,
    claim_idle: Duration,
) -> Result<Vec<String>, redis::RedisError> {
    let deleted: Value = redis::cmd("EVAL")
        .arg(SWEEP)
        .arg(1)
        .arg(stream)
        .arg(group)
        .arg(stale_after(claim_idle).as_millis() as u64)
        .arg(me)
        .query_async(conn)
        .await?;
    Ok(items(&deleted).unwrap_or_default().iter().filter_map(text).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_is_gone_after_ten_claim_timeouts() {
        assert_eq!(stale_after(Duration::from_secs(30)), Duration::from_secs(300));
        assert_eq!(sweep_interval(Duration::from_secs(30)), Duration::from_secs(150));
        assert_eq!(sweep_interval(Duration::from_millis(20)), Duration::from_secs(1));
        assert_eq!(sweep_interval(Duration::from_secs(3600)), Duration::from_secs(300));
    }
}
