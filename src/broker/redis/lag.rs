//! How far behind a consumer group is: the oldest entry of its stream it has
//! not acknowledged, whether pending with a consumer or not delivered yet.
//!
//! An entry's id starts with the millisecond the relay appended it, which is
//! taken as its time: the outbox row was written a little earlier, and the
//! outbox's own lag is reported apart (`orderflow_queue_lag_seconds{queue="outbox"}`).

use super::redis_err;
use super::streams::{items, next_id, parse_id, text};
use super::trim::{groups, oldest_pending};
use crate::messaging::BrokerError;
use redis::aio::ConnectionManager;
use redis::Value;

/// When the oldest entry of `stream` that `group` has not acknowledged was
/// appended (Unix milliseconds), or `None` when the group has seen them all.
pub(super) async fn oldest_unacknowledged(
    conn: &mut ConnectionManager,
    stream: &str,
    group: &str,
) -> Result<Option<i64>, BrokerError> {
    let info: Value = redis::cmd("XINFO").arg("GROUPS").arg(stream).query_async(conn).await.map_err(redis_err)?;
    let Some(state) = groups(&info).into_iter().find(|g| g.name == group) else {
        return Ok(None);
    };
    // Pending entries precede every entry not delivered yet.
    if state.pending > 0 {
        if let Some((ms, _)) = oldest_pending(conn, stream, group).await? {
            return Ok(Some(ms as i64));
        }
    }
    let (ms, seq) = next_id(state.last_delivered);
    let next: Value = redis::cmd("XRANGE")
        .arg(stream)
        .arg(format!("{ms}-{seq}"))
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await
        .map_err(redis_err)?;
    let first = items(&next).and_then(|entries| entries.first()).and_then(items).and_then(|e| e.first()).and_then(text);
    Ok(first.and_then(|id| parse_id(&id)).map(|(ms, _)| ms as i64))
}
