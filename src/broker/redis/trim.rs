//! Trimming a stream without losing an entry some group still needs.
//!
//! A group needs every entry it has not acknowledged: those pending with its
//! consumers (from the oldest pending id on) and those it has not been
//! delivered yet (after its last-delivered id). The stream is trimmed with
//! `XTRIM MINID` to the least of these over every group on it, whoever made
//! the group. A stream without our group is not trimmed at all: its entries
//! wait for the group a consumer will create from the stream's start.
//! The bound is read before the trim, not with it, which is safe: a group's
//! bound only moves forward, so a bound read earlier is at most too low.
//! Dead-letter streams are never trimmed.

use super::redis_err;
use super::streams::{group_of, int, items, next_id, parse_id, text};
use crate::messaging::BrokerError;
use redis::aio::ConnectionManager;
use redis::Value;

/// One group's state, from `XINFO GROUPS`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct GroupState {
    pub name: String,
    pub pending: i64,
    pub last_delivered: (u64, u64),
}

/// Trims `stream` below the oldest entry some group needs; returns how many
/// entries went.
pub(super) async fn trim(conn: &mut ConnectionManager, stream: &str) -> Result<u64, BrokerError> {
    let info: Value = redis::cmd("XINFO").arg("GROUPS").arg(stream).query_async(conn).await.map_err(redis_err)?;
    let groups = groups(&info);
    if !groups.iter().any(|g| Some(g.name.as_str()) == group_of(stream)) {
        return Ok(0);
    }
    let mut bound: Option<(u64, u64)> = None;
    for g in &groups {
        let needed = if g.pending > 0 { oldest_pending(conn, stream, &g.name).await? } else { None };
        let needed = needed.unwrap_or_else(|| next_id(g.last_delivered));
        bound = Some(bound.map_or(needed, |b| b.min(needed)));
    }
    let Some((ms, seq)) = bound else { return Ok(0) };
    let removed: u64 = redis::cmd("XTRIM")
        .arg(stream)
        .arg("MINID")
        .arg(format!("{ms}-{seq}"))
        .query_async(conn)
        .await
        .map_err(redis_err)?;
    if removed > 0 {
        tracing::debug!(stream, removed, "stream trimmed");
    }
    Ok(removed)
}

/// The smallest id pending in `group` (the summary form of `XPENDING`).
pub(super) async fn oldest_pending(
    conn: &mut ConnectionManager,
    stream: &str,
    group: &str,
) -> Result<Option<(u64, u64)>, BrokerError> {
    let summary: Value = redis::cmd("XPENDING").arg(stream).arg(group).query_async(conn).await.map_err(redis_err)?;
    Ok(items(&summary).and_then(|s| s.get(1)).and_then(text).and_then(|id| parse_id(&id)))
}

/// Groups from `XINFO GROUPS` (a list of flat name/value lists, or maps).
/// A group whose state cannot be read is taken to need the whole stream.
pub(super) fn groups(info: &Value) -> Vec<GroupState> {
    items(info)
        .unwrap_or_default()
        .iter()
        .map(|g| {
            let fields: Vec<(String, &Value)> = match g {
                Value::Map(pairs) => pairs.iter().filter_map(|(n, v)| Some((text(n)?, v))).collect(),
                other => items(other)
                    .unwrap_or_default()
                    .chunks(2)
                    .filter_map(|p| Some((text(p.first()?)?, p.get(1)?)))
                    .collect(),
            };
            let get = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
            GroupState {
                name: get("name").and_then(text).unwrap_or_default(),
                pending: get("pending").and_then(int).unwrap_or(i64::MAX),
                last_delivered: get("last-delivered-id").and_then(text).and_then(|id| parse_id(&id)).unwrap_or((0, 0)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_group_states() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let info = Value::Array(vec![
            Value::Array(vec![
                b("name"),
                b("inventory"),
                b("consumers"),
                Value::Int(2),
                b("pending"),
                Value::Int(3),
                b("last-delivered-id"),
                b("17-4"),
            ]),
            Value::Array(vec![b("name"), b("odd")]),
        ]);
        assert_eq!(
            groups(&info),
            [
                GroupState { name: "inventory".into(), pending: 3, last_delivered: (17, 4) },
                GroupState { name: "odd".into(), pending: i64::MAX, last_delivered: (0, 0) },
            ]
        );
    }
}
