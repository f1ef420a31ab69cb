//! W3C Trace Context: the `traceparent` value that ties an order's request,
//! its events and every service's work on them into one trace.
//!
//! `00-<trace id: 32 hex>-<parent id: 16 hex>-<flags: 2 hex>`. The trace id
//! is the order's for life; the parent id names the span that sent the value
//! on. Parsing follows the specification's rules for receivers: lowercase hex
//! only, no all-zero ids, version `ff` refused, and a later version read for
//! its first four fields (so a value from a newer sender still joins its
//! trace). A value that fails is ignored, never an error: the caller starts a
//! trace of its own instead. The format and how the value travels are in
//! docs/architecture.md#one-trace-per-order.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use uuid::Uuid;

/// The sampled flag: orderflow records every trace it starts.
const SAMPLED: u8 = 0x01;

/// A parsed `traceparent`: a trace id, the id of the span it came from and
/// the trace flags.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

/// A trace id, shown as the 32 lowercase hex digits logs and clients see.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

impl TraceParent {
    /// Reads a header value; `None` when it is not a valid `traceparent`.
    pub fn parse(value: &str) -> Option<Self> {
        let b = value.as_bytes();
        if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let version = hex::<1>(&b[0..2])?[0];
        // Version 00 is exactly four fields; a later one may add fields after a dash.
        let valid_length = match version {
            0xff => false,
            0x00 => b.len() == 55,
            _ => b.len() == 55 || b[55] == b'-',
        };
        if !valid_length {
            return None;
        }
        let trace_id = hex::<16>(&b[3..35])?;
        let parent_id = hex::<8>(&b[36..52])?;
        let flags = hex::<1>(&b[53..55])?[0];
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self { trace_id, parent_id, flags })
    }

    /// A new trace, sampled, with a new span as its parent.
    pub fn start() -> Self {
        // Random ids from v4 UUIDs: their fixed version bits keep both non-zero.
        let trace_id = *Uuid::new_v4().as_bytes();
        Self { trace_id, parent_id: span_id(), flags: SAMPLED }
    }

    /// The same trace, with a new span as the parent: what a service sends on
    /// from a span of its own.
    pub fn child(&self) -> Self {
        Self { parent_id: span_id(), ..*self }
    }

    /// The same trace with `parent_id` as the parent; `None` for an all-zero id.
    pub fn with_parent(&self, parent_id: [u8; 8]) -> Option<Self> {
        (parent_id != [0; 8]).then_some(Self { parent_id, ..*self })
    }

    pub fn trace_id(&self) -> TraceId {
        TraceId(self.trace_id)
    }

    pub fn parent_id(&self) -> [u8; 8] {
        self.parent_id
    }

    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Rebuilds a value from its parts (an exporter's span context); `None`
    /// when either id is all zeros.
    pub fn from_parts(trace_id: [u8; 16], parent_id: [u8; 8], flags: u8) -> Option<Self> {
        (trace_id != [0; 16] && parent_id != [0; 8]).then_some(Self { trace_id, parent_id, flags })
    }
}

fn span_id() -> [u8; 8] {
    let random = Uuid::new_v4();
    let mut id = [0; 8];
    id.copy_from_slice(&random.as_bytes()[..8]);
    id
}

/// `N` bytes from `2 * N` lowercase hex digits.
fn hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// Always version 00, the only one this side writes. The ids are written as
/// a UUID and a `u64` in hex, three writes rather than one per byte, since a
/// trace is written on every request, row and event.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (trace, parent) = (Uuid::from_bytes(self.trace_id), u64::from_be_bytes(self.parent_id));
        write!(f, "00-{}-{parent:016x}-{:02x}", trace.simple(), self.flags)
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&Uuid::from_bytes(self.0).simple(), f)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for TraceParent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TraceParent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom("invalid traceparent"))
    }
}

/// For a `traceparent` that arrives inside a message: a value that is not
/// valid is dropped, as the specification asks, rather than making the
/// whole message unreadable.
pub(crate) fn lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TraceParent>, D::Error> {
    let text = Option::<std::borrow::Cow<str>>::deserialize(d)?;
    Ok(text.and_then(|t| TraceParent::parse(&t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_and_writes_the_specification_example() {
        let tp = TraceParent::parse(EXAMPLE).unwrap();
        assert_eq!(tp.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.parent_id(), [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(tp.flags(), 1);
        assert_eq!(tp.to_string(), EXAMPLE);
    }

    #[test]
    fn invalid_values_are_refused() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473x-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ];
        for value in bad {
            assert_eq!(TraceParent::parse(value), None, "{value:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_for_its_first_fields() {
        let tp = TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-follows").unwrap();
        assert_eq!(tp.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03");
    }

    #[test]
    fn new_traces_and_children() {
        let a = TraceParent::start();
        assert_eq!(TraceParent::parse(&a.to_string()), Some(a), "a new value is valid");
        assert_eq!(a.flags(), SAMPLED);
        assert_ne!(a.trace_id(), TraceParent::start().trace_id());
        let child = a.child();
        assert_eq!(child.trace_id(), a.trace_id());
        assert_ne!(child.parent_id(), a.parent_id());
    }

    #[test]
    fn a_message_with_a_bad_value_stays_readable() {
        #[derive(Deserialize)]
        struct Carrier {
            #[serde(default, deserialize_with = "lenient")]
            traceparent: Option<TraceParent>,
        }
        let read = |json: &str| serde_json::from_str::<Carrier>(json).unwrap().traceparent;
        assert_eq!(read(&format!(r#"{{"traceparent":"{EXAMPLE}"}}"#)), TraceParent::parse(EXAMPLE));
        assert_eq!(read(r#"{"traceparent":"nonsense"}"#), None);
        assert_eq!(read(r#"{"traceparent":null}"#), None);
        assert_eq!(read("{}"), None);
    }
}
