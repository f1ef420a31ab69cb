//! The dead-letter streams: moving an entry there, listing, replaying.
//!
//! A dead entry is added to `<stream>-dlq` and acknowledged in its group in
//! one `MULTI`, so it is never in both places nor in neither. Its dead-letter
//! entry starts with five fields of ours, in this order (`dead.source_id`,
//! `dead.group`, `dead.error`, `dead.attempts`, `dead.failed_at`), followed
//! by the original entry's fields exactly as they were, so `XRANGE` shows
//! the dead entry itself and a replay puts back what was there, even fields
//! orderflow never writes. Replay adds the original fields to the stream as
//! a new entry and deletes the dead letter, again in one `MULTI`; `--all`
//! replays the dead letters there when it starts, not those that a consumer
//! dead-letters again while it runs.
//! orderflow never trims the dead-letter streams.

use super::redis_err;
use super::streams::{dead_letter_stream, entries, lossy, Entry, FIELD_BODY, FIELD_ROUTING_KEY, GROUPS};
use crate::messaging::{BrokerError, DeadLetter};
use redis::aio::ConnectionManager;
use redis::{Pipeline, Value};

const META: [&str; 5] = ["dead.source_id", "dead.group", "dead.error", "dead.attempts", "dead.failed_at"];

/// Most dead letters one replay page moves.
const PAGE: usize = 500;

/// Why and after how many deliveries an entry is given up on.
pub(super) struct Death<'a> {
    pub stream: &'a str,
    pub group: &'a str,
    pub error: &'a str,
    pub attempts: u32,
}

/// Adds to `pipe` (which must be atomic) the moving of `entry` to the
/// dead-letter stream and its acknowledgement.
pub(super) fn move_entry(pipe: &mut Pipeline, entry: &Entry, death: &Death) {
    let failed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let meta = [entry.id.as_str(), death.group, death.error, &death.attempts.to_string(), &failed_at]
        .map(str::as_bytes)
        .map(<[u8]>::to_vec);
    let xadd = pipe.cmd("XADD").arg(dead_letter_stream(death.stream)).arg("*");
    for (name, value) in META.iter().zip(meta) {
        xadd.arg(*name).arg(value);
    }
    for (name, value) in &entry.fields {
        xadd.arg(name).arg(value);
    }
    xadd.ignore();
    pipe.cmd("XACK").arg(death.stream).arg(death.group).arg(&entry.id).ignore();
}

/// A dead-letter entry split into our fields and the original ones; `None`
/// for an entry not written by `move_entry`.
fn split(entry: &Entry) -> Option<([String; 5], Entry)> {
    if entry.fields.len() < META.len() {
        return None;
    }
    let (meta, original) = entry.fields.split_at(META.len());
    if meta.iter().zip(META).any(|((name, _), want)| name != want.as_bytes()) {
        return None;
    }
    let meta = [0, 1, 2, 3, 4].map(|i| lossy(&meta[i].1));
    Some((meta, Entry { id: entry.id.clone(), fields: original.to_vec() }))
}

async fn range(
    conn: &mut ConnectionManager,
    stream: &str,
    from: &str,
    to: &str,
    count: usize,
) -> Result<Vec<Entry>, BrokerError> {
    let reply: Value = redis::cmd("XRANGE")
        .arg(stream)
        .arg(from)
        .arg(to)
        .arg("COUNT")
        .arg(count.max(1))
        .query_async(conn)
        .await
        .map_err(redis_err)?;
    Ok(entries(&reply)?.0)
}

/// The id of the newest entry of `stream`, if any.
async fn last_id(conn: &mut ConnectionManager, stream: &str) -> Result<Option<String>, BrokerError> {
    let reply: Value = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await
        .map_err(redis_err)?;
    Ok(entries(&reply)?.0.pop().map(|e| e.id))
}

pub(super) async fn list(conn: &mut ConnectionManager, limit: usize) -> Result<Vec<DeadLetter>, BrokerError> {
    let mut letters = Vec::new();
    for (stream, _) in GROUPS {
        let left = limit.saturating_sub(letters.len());
        if left == 0 {
            break;
        }
        for dead in range(conn, &dead_letter_stream(stream), "-", "+", left).await? {
            let (meta, original) = split(&dead).unwrap_or_else(|| (Default::default(), dead.clone()));
            let field = |name| original.field(name).map(lossy).unwrap_or_default();
            letters.push(DeadLetter {
                id: dead.id.clone(),
                queue: stream.to_owned(),
                routing_key: field(FIELD_ROUTING_KEY),
                attempts: meta[3].parse().unwrap_or(0),
                error: meta[2].clone(),
                failed_at: meta[4].clone(),
                body: field(FIELD_BODY),
                fields: Some(original.fields_text()),
            });
        }
    }
    Ok(letters)
}

/// Puts dead letters back on their streams: the one with this id (in
/// whichever dead-letter stream holds it), or all of them.
pub(super) async fn replay(conn: &mut ConnectionManager, id: Option<String>) -> Result<u64, BrokerError> {
    let mut replayed = 0;
    for (stream, _) in GROUPS {
        let dlq = dead_letter_stream(stream);
        // Only the dead letters there now: one replayed and dead-lettered
        // again meanwhile lands after this bound, and is not replayed again.
        let (from, to) = match &id {
            Some(id) => (id.clone(), id.clone()),
            None => match last_id(conn, &dlq).await? {
                Some(last) => ("-".to_owned(), last),
                None => continue,
            },
        };
        loop {
            let page = range(conn, &dlq, &from, &to, if id.is_some() { 1 } else { PAGE }).await?;
            if page.is_empty() {
                break;
            }
            let mut pipe = redis::pipe();
            pipe.atomic();
            for dead in &page {
                let original = split(dead).map_or_else(|| dead.clone(), |(_, original)| original);
                if !original.fields.is_empty() {
                    let xadd = pipe.cmd("XADD").arg(stream).arg("*");
                    for (name, value) in &original.fields {
                        xadd.arg(name).arg(value);
                    }
                    xadd.ignore();
                }
                pipe.cmd("XDEL").arg(&dlq).arg(&dead.id).ignore();
            }
            pipe.query_async::<()>(conn).await.map_err(redis_err)?;
            replayed += page.len() as u64;
            if id.is_some() {
                break;
            }
        }
    }
    Ok(replayed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_keeps_the_original_fields_after_ours() {
        let f = |n: &str, v: &str| (n.as_bytes().to_vec(), v.as_bytes().to_vec());
        let mut fields: Vec<_> =
            META.iter().zip(["1-1", "inventory", "boom", "5", "now"]).map(|(n, v)| f(n, v)).collect();
        fields.extend([f("body", "x"), f("body", "y")]);
        let (meta, original) = split(&Entry { id: "9-0".into(), fields }).unwrap();
        assert_eq!(meta[2], "boom");
        assert_eq!(original.fields, [f("body", "x"), f("body", "y")]);
        assert!(split(&Entry { id: "9-1".into(), fields: vec![f("body", "x")] }).is_none());
    }
}
