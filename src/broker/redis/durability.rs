//! Whether Redis keeps what it acknowledged.
//!
//! Redis answers a write before it reaches the disk unless it runs with
//! `appendonly yes` and `appendfsync always`: with `everysec` a crash of the
//! host loses up to about a second of acknowledged writes, with `no` whatever
//! the kernel had not written yet, and without the append-only file
//! everything since the last snapshot. The relay deletes an outbox row once
//! Redis acknowledged its entry, so an acknowledged write that is lost is a
//! lost order. Each connection asks (`CONFIG GET`) before it is used, and
//! again after a reconnect and now and then (`link`); a Redis that could lose
//! events, or whose settings cannot be read (`CONFIG` renamed away, an ACL
//! user without it), is refused unless the operator said
//! `--allow-volatile-broker`.

use super::redis_err;
use crate::messaging::BrokerError;
use redis::aio::ConnectionManager;
use redis::Value;

/// What Redis's persistence settings let it lose, or `None` when nothing it
/// acknowledged can be lost.
pub(super) fn risk(appendonly: Option<&str>, appendfsync: Option<&str>) -> Option<String> {
    match (appendonly, appendfsync) {
        (Some("yes"), Some("always")) => None,
        (Some("yes"), Some("everysec")) => Some(
            "appendfsync is everysec: a crash of the host loses up to about a second of events Redis acknowledged"
                .into(),
        ),
        (Some("yes"), Some(other)) => Some(format!(
            "appendfsync is {other}: a crash of the host loses the events Redis acknowledged that the kernel had not written"
        )),
        (Some("no"), _) => Some(
            "appendonly is no: a restart of Redis loses every event written since its last snapshot, if it takes any"
                .into(),
        ),
        _ => Some(format!(
            "its persistence settings are unknown (appendonly={}, appendfsync={})",
            appendonly.unwrap_or("?"),
            appendfsync.unwrap_or("?")
        )),
    }
}

/// Asks Redis how it persists: what it could lose, or `None` when nothing
/// it acknowledged can be lost. Fails only when Redis cannot be asked.
pub(super) async fn assess(conn: &mut ConnectionManager) -> Result<Option<String>, BrokerError> {
    let reply: Result<Value, redis::RedisError> =
        redis::cmd("CONFIG").arg("GET").arg("appendonly").arg("appendfsync").query_async(conn).await;
    match reply {
        Ok(settings) => {
            let settings = pairs(&settings);
            let get = |name: &str| settings.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
            Ok(risk(get("appendonly"), get("appendfsync")))
        }
        // A server error (no such command, no permission) is an answer: the
        // settings cannot be known. Anything else is an outage.
        Err(e) if e.code().is_some() => Ok(Some(format!("its persistence settings cannot be read ({e})"))),
        Err(e) => Err(redis_err(e)),
    }
}

/// Why a Redis with this risk is refused, and what to do about it.
pub(super) fn refusal(risk: &str) -> String {
    format!(
        "refusing Redis as the broker: {risk}. Run Redis with `appendonly yes` and `appendfsync always`, \
         or pass --allow-volatile-broker (ORDERFLOW_ALLOW_VOLATILE_BROKER=true) to accept the risk"
    )
}

/// `CONFIG GET`'s reply as (name, value) pairs: a flat array (RESP2) or a map.
fn pairs(v: &Value) -> Vec<(String, String)> {
    use super::streams::text;
    match v {
        Value::Map(map) => map.iter().filter_map(|(n, v)| Some((text(n)?, text(v)?))).collect(),
        Value::Array(flat) => flat.chunks(2).filter_map(|p| Some((text(p.first()?)?, text(p.get(1)?)?))).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_fsync_per_write_loses_nothing() {
        assert_eq!(risk(Some("yes"), Some("always")), None);
        assert!(risk(Some("yes"), Some("everysec")).unwrap().contains("everysec"));
        assert!(risk(Some("yes"), Some("no")).unwrap().contains("appendfsync is no"));
        assert!(risk(Some("no"), Some("always")).unwrap().contains("appendonly is no"));
        assert!(risk(None, None).unwrap().contains("unknown"));
    }

    #[test]
    fn reads_both_reply_shapes() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let flat = Value::Array(vec![b("appendonly"), b("yes"), b("appendfsync"), b("always")]);
        let map = Value::Map(vec![(b("appendfsync"), b("always")), (b("appendonly"), b("yes"))]);
        for reply in [flat, map] {
            let mut got = pairs(&reply);
            got.sort();
            assert_eq!(got, [("appendfsync".into(), "always".into()), ("appendonly".into(), "yes".into())]);
        }
    }
}
