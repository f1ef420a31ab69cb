//! The stream layout, and reading Redis's replies about it.
//!
//! Streams are named like the queues (`order-events`, `inventory-events`),
//! each read by one consumer group named like its service (`inventory`,
//! `notifier`); their dead letters go to `<stream>-dlq`. The relay writes one
//! entry per outbox row with exactly three fields, `message_id`,
//! `routing_key` and `body` (the event's JSON); an entry with other fields
//! was not written by orderflow and is dead-lettered unread. Groups are
//! created from the start of their stream (`0`, with `MKSTREAM`), so events
//! relayed before the first consumer ran are delivered too. An entry whose
//! event has a trace also carries it as a fourth field, `traceparent`, so a
//! reader can follow the trace without parsing the body.
//!
//! Replies are read from `redis::Value` by hand rather than through the
//! crate's stream types, which gather fields in a map: a dead letter must
//! keep its fields as they were, in order, duplicates and all.

use super::redis_err;
use crate::messaging::{BrokerError, QUEUE_INVENTORY_EVENTS, QUEUE_ORDER_EVENTS};
use redis::aio::ConnectionManager;
use redis::Value;

pub(super) const FIELD_MESSAGE_ID: &str = "message_id";
pub(super) const FIELD_ROUTING_KEY: &str = "routing_key";
pub(super) const FIELD_BODY: &str = "body";
pub(super) const FIELD_TRACEPARENT: &str = "traceparent";

/// Each stream and the consumer group that reads it.
pub(super) const GROUPS: [(&str, &str); 2] = [(QUEUE_ORDER_EVENTS, "inventory"), (QUEUE_INVENTORY_EVENTS, "notifier")];

/// The stream an event with this routing key goes to.
pub(super) fn stream_for(routing_key: &str) -> &'static str {
    if routing_key.starts_with("order.") {
        QUEUE_ORDER_EVENTS
    } else {
        QUEUE_INVENTORY_EVENTS
    }
}

/// The consumer group that reads `stream`.
pub(super) fn group_of(stream: &str) -> Option<&'static str> {
    GROUPS.iter().find(|(s, _)| *s == stream).map(|(_, g)| *g)
}

pub(super) fn dead_letter_stream(stream: &str) -> String {
    format!("{stream}-dlq")
}

/// Creates every consumer group (and its stream) unless it exists.
pub(super) async fn declare(conn: &mut ConnectionManager) -> Result<(), BrokerError> {
    for (stream, group) in GROUPS {
        let created: Result<(), redis::RedisError> =
            redis::cmd("XGROUP").arg("CREATE").arg(stream).arg(group).arg("0").arg("MKSTREAM").query_async(conn).await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => return Err(redis_err(e)),
            _ => {}
        }
    }
    Ok(())
}

/// One stream entry: its id and its fields, name and value, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub id: String,
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    /// The event's body, when the entry holds exactly the fields the relay
    /// writes (the trace's among them or not); `None` for an entry written
    /// by something else.
    pub fn body(&self) -> Option<&[u8]> {
        let mut names: Vec<&[u8]> = self.fields.iter().map(|(n, _)| n.as_slice()).collect();
        names.sort_unstable();
        let expected: &[&[u8]] = &[FIELD_BODY.as_bytes(), FIELD_MESSAGE_ID.as_bytes(), FIELD_ROUTING_KEY.as_bytes()];
        let traced: &[&[u8]] = &[
            FIELD_BODY.as_bytes(),
            FIELD_MESSAGE_ID.as_bytes(),
            FIELD_ROUTING_KEY.as_bytes(),
            FIELD_TRACEPARENT.as_bytes(),
        ];
        (names == expected || names == traced).then(|| self.field(FIELD_BODY)).flatten()
    }

    /// The id of the trace the entry's event is in, if it says.
    pub fn trace_id(&self) -> Option<crate::domain::TraceId> {
        let value = std::str::from_utf8(self.field(FIELD_TRACEPARENT)?).ok()?;
        crate::domain::TraceParent::parse(value).map(|t| t.trace_id())
    }

    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields.iter().find(|(n, _)| n == name.as_bytes()).map(|(_, v)| v.as_slice())
    }

    /// The fields as text, for people (`dlq list`).
    pub fn fields_text(&self) -> Vec<(String, String)> {
        self.fields.iter().map(|(n, v)| (lossy(n), lossy(v))).collect()
    }
}

pub(super) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn unexpected(what: &str, v: &Value) -> BrokerError {
    BrokerError::Other(anyhow::anyhow!("unexpected Redis reply for {what}: {v:?}"))
}

pub(super) fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

pub(super) fn text(v: &Value) -> Option<String> {
    bytes(v).map(lossy)
}

pub(super) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        other => std::str::from_utf8(bytes(other)?).ok()?.parse().ok(),
    }
}

pub(super) fn items(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(items) | Value::Set(items) => Some(items),
        Value::Nil => Some(&[]),
        _ => None,
    }
}

/// Entries as `XRANGE`, `XCLAIM` and `XAUTOCLAIM` list them. An entry that
/// was deleted while pending comes back with no fields (`XREADGROUP` on a
/// history): it is returned in `gone`, to be acknowledged.
pub(super) fn entries(v: &Value) -> Result<(Vec<Entry>, Vec<String>), BrokerError> {
    let mut found = Vec::new();
    let mut gone = Vec::new();
    for item in items(v).ok_or_else(|| unexpected("entries", v))? {
        let parts = items(item).ok_or_else(|| unexpected("an entry", item))?;
        let [id, fields] = parts else { return Err(unexpected("an entry", item)) };
        let id = text(id).ok_or_else(|| unexpected("an entry id", item))?;
        if matches!(fields, Value::Nil) {
            gone.push(id);
            continue;
        }
        let flat = items(fields).ok_or_else(|| unexpected("entry fields", item))?;
        let fields = flat
            .chunks(2)
            .map(|pair| match pair {
                [n, v] => Some((bytes(n)?.to_vec(), bytes(v)?.to_vec())),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| unexpected("entry fields", item))?;
        found.push(Entry { id, fields });
    }
    Ok((found, gone))
}

/// The entries of the one stream an `XREADGROUP` read; none when it timed out.
pub(super) fn read_reply(v: &Value) -> Result<Vec<Entry>, BrokerError> {
    let streams: Vec<&Value> = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(pairs) => pairs.iter().map(|(_, entries)| entries).collect(),
        Value::Array(per_stream) => per_stream
            .iter()
            .map(|s| match items(s) {
                Some([_, entries]) => Ok(entries),
                _ => Err(unexpected("XREADGROUP", v)),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(unexpected("XREADGROUP", v)),
    };
    let mut all = Vec::new();
    for s in streams {
        all.extend(entries(s)?.0);
    }
    Ok(all)
}

/// A stream id as its two numbers, to compare and step ids.
pub(super) fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// The smallest id after `id`.
pub(super) fn next_id((ms, seq): (u64, u64)) -> (u64, u64) {
    match seq.checked_add(1) {
        Some(seq) => (ms, seq),
        None => (ms + 1, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(fields: &[(&str, &str)]) -> Entry {
        let fields = fields.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())).collect();
        Entry { id: "1-0".into(), fields }
    }

    #[test]
    fn only_the_relays_three_fields_make_an_event() {
        let ours = entry(&[("message_id", "7"), ("routing_key", "order.placed"), ("body", "{}")]);
        assert_eq!(ours.body(), Some(&b"{}"[..]));
        let reordered = entry(&[("body", "{}"), ("message_id", "7"), ("routing_key", "order.placed")]);
        assert_eq!(reordered.body(), Some(&b"{}"[..]));
        let traced =
            entry(&[("message_id", "7"), ("routing_key", "order.placed"), ("body", "{}"), ("traceparent", "t")]);
        assert_eq!(traced.body(), Some(&b"{}"[..]));
        for foreign in [
            entry(&[("body", "{}")]),
            entry(&[("message_id", "7"), ("routing_key", "order.placed"), ("body", "{}"), ("extra", "x")]),
            entry(&[("message_id", "7"), ("routing_key", "order.placed"), ("payload", "{}")]),
            entry(&[("body", "{}"), ("body", "{}"), ("routing_key", "order.placed")]),
        ] {
            assert_eq!(foreign.body(), None, "{foreign:?}");
        }
    }

    #[test]
    fn reads_entries_keeping_field_order_and_deleted_ones_apart() {
        let reply = Value::Array(vec![
            Value::Array(vec![bulk("5-1"), Value::Array(vec![bulk("b"), bulk("2"), bulk("a"), bulk("1")])]),
            Value::Array(vec![bulk("5-2"), Value::Nil]),
        ]);
        let (found, gone) = entries(&reply).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].fields_text(), [("b".into(), "2".into()), ("a".into(), "1".into())]);
        assert_eq!(gone, ["5-2"]);
        let read = Value::Array(vec![Value::Array(vec![bulk("order-events"), reply])]);
        assert_eq!(read_reply(&read).unwrap(), found);
        assert!(read_reply(&Value::Nil).unwrap().is_empty());
    }

    #[test]
    fn ids_compare_and_step() {
        assert_eq!(parse_id("1700-3"), Some((1700, 3)));
        assert_eq!(parse_id("x"), None);
        assert_eq!(next_id((5, 1)), (5, 2));
        assert_eq!(next_id((5, u64::MAX)), (6, 0));
        assert_eq!(stream_for("order.placed"), QUEUE_ORDER_EVENTS);
        assert_eq!(stream_for("inventory.failed"), QUEUE_INVENTORY_EVENTS);
    }
}
