//! Every metric orderflow exports, named once.
//!
//! Code records through these constants, never a literal, so a name is
//! written in one place; `ALL` gives each its kind, unit, help text and, for
//! a histogram, its buckets, and the recorder is set up from it at start
//! (`super::init_metrics`). Names follow Prometheus' conventions: base units
//! in the name (`_seconds`), `_total` on counters and on nothing else. The
//! table of metrics in docs/operations.md says what each means to an
//! operator.

use metrics::Unit;

pub const ORDERS_ACCEPTED: &str = "orderflow_orders_accepted_total";
pub const EVENTS_APPLIED: &str = "orderflow_events_applied_total";
pub const ORDERS: &str = "orderflow_orders";
pub const QUEUED_MESSAGES: &str = "orderflow_queued_messages";
pub const DEAD_LETTERS: &str = "orderflow_dead_letters";
pub const REQUESTS_SHED: &str = "orderflow_requests_shed_total";
pub const RELAYED: &str = "orderflow_relayed_total";
pub const STORE_COMMITS: &str = "orderflow_store_commits_total";
pub const STORE_JOBS: &str = "orderflow_store_jobs_total";
pub const STORE_WRITER_DURATION: &str = "orderflow_store_writer_duration_seconds";
pub const STORE_EVENTS_REUSED: &str = "orderflow_store_events_reused_total";
pub const CACHE_REQUESTS: &str = "orderflow_cache_requests_total";
pub const CACHE_WRITES: &str = "orderflow_cache_writes_total";
pub const HTTP_REQUEST_DURATION: &str = "orderflow_http_request_duration_seconds";
pub const ORDER_DURATION: &str = "orderflow_order_duration_seconds";
pub const QUEUE_LAG: &str = "orderflow_queue_lag_seconds";
pub const DELIVERY_AGE: &str = "orderflow_delivery_age_seconds";
pub const BATCH_SIZE: &str = "orderflow_batch_size";
pub const PRUNED_ROWS: &str = "orderflow_pruned_rows_total";
pub const WEBHOOK_DELIVERIES: &str = "orderflow_webhook_deliveries_total";
pub const WEBHOOKS_WAITING: &str = "orderflow_webhook_deliveries_waiting";

/// The `stage` label of `BATCH_SIZE`: the SQLite writer's rounds, the relay's
/// turns and each consumer's batches (the consumers use their service name).
pub const STAGE_STORE_WRITER: &str = "store_writer";
pub const STAGE_RELAY: &str = "relay";

/// The `queue` label of `QUEUE_LAG` for the outbox rows not yet relayed to
/// a network broker.
pub const QUEUE_OUTBOX: &str = "outbox";

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Counter,
    Gauge,
    /// With the upper bounds of its buckets.
    Histogram(&'static [f64]),
}

/// One exported metric.
#[derive(Debug)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    pub help: &'static str,
}

/// A request's time: from half a millisecond (a cached read) to ten seconds
/// (the body timeout's order of magnitude).
const REQUEST_SECONDS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// How long an order or a message waits: milliseconds when the pipeline
/// keeps up, minutes when a worker is down or a message is retried.
const WAIT_SECONDS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0];
/// One SQLite round's phase: tens of microseconds to a slow disk's sync.
const WRITER_SECONDS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];
/// Items in one batch, up to the largest `--batch-size`.
const BATCH_ITEMS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 10_000.0];

pub const ALL: &[Metric] = &[
    Metric {
        name: WEBHOOK_DELIVERIES,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Webhook attempts by outcome: delivered, retried, failed (refused for good) or dead (out of time)",
    },
    Metric {
        name: WEBHOOKS_WAITING,
        kind: Kind::Gauge,
        unit: Unit::Count,
        help: "Webhook deliveries not yet delivered: due, waiting out a retry, or in flight",
    },
    Metric {
        name: PRUNED_ROWS,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Rows deleted past their retention window, per table (inbox, notifications, idempotency_keys)",
    },
    Metric {
        name: ORDERS_ACCEPTED,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Orders accepted with a 202 (a replayed Idempotency-Key is not counted again)",
    },
    Metric {
        name: EVENTS_APPLIED,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Events applied by service=inventory or notifier (duplicates skipped by the inbox are not counted)",
    },
    Metric { name: ORDERS, kind: Kind::Gauge, unit: Unit::Count, help: "Orders per status, read from the store" },
    Metric {
        name: QUEUED_MESSAGES,
        kind: Kind::Gauge,
        unit: Unit::Count,
        help: "Rows in the store's messages table: the db broker's queues, or the outbox not yet relayed",
    },
    Metric {
        name: DEAD_LETTERS,
        kind: Kind::Gauge,
        unit: Unit::Count,
        help: "Rows in the store's dead-letter table (the db broker)",
    },
    Metric {
        name: REQUESTS_SHED,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Requests answered 503 overloaded because --max-in-flight requests were in flight",
    },
    Metric {
        name: RELAYED,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Outbox rows the relay published and deleted",
    },
    Metric {
        name: STORE_COMMITS,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "SQLite writer rounds, each one transaction and one sync of the WAL",
    },
    Metric {
        name: STORE_JOBS,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Jobs the SQLite writer's rounds carried",
    },
    Metric {
        name: STORE_WRITER_DURATION,
        kind: Kind::Histogram(WRITER_SECONDS),
        unit: Unit::Seconds,
        help: "Time of each SQLite writer round: phase=exec running its jobs, phase=commit committing and syncing",
    },
    Metric {
        name: STORE_EVENTS_REUSED,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "SQLite: events consumers took as the writer kept them instead of parsing their JSON",
    },
    Metric {
        name: CACHE_REQUESTS,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Order reads from the cache: result=hit, miss (not cached, or only a tombstone), \
               error (failed or timed out), skipped (breaker open after an error)",
    },
    Metric {
        name: CACHE_WRITES,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Cache entries written: kind=fill (a copy after a miss) or tombstone (after a status change); \
               result=stored, refused (a newer entry was there), error, skipped",
    },
    Metric {
        name: HTTP_REQUEST_DURATION,
        kind: Kind::Histogram(REQUEST_SECONDS),
        unit: Unit::Seconds,
        help: "Time from a request's arrival at its route to its response's headers (a stream's body is not \
               counted), by method, route template and status class",
    },
    Metric {
        name: ORDER_DURATION,
        kind: Kind::Histogram(WAIT_SECONDS),
        unit: Unit::Seconds,
        help:
            "Time from an order's placement to each later status (reserved, rejected, completed, cancelled, shipped), \
               recorded once the transition is committed",
    },
    Metric {
        name: QUEUE_LAG,
        kind: Kind::Gauge,
        unit: Unit::Seconds,
        help:
            "Age of the oldest message waiting in each queue (db queues, Redis streams, the outbox); 0 when none waits",
    },
    Metric {
        name: DELIVERY_AGE,
        kind: Kind::Histogram(WAIT_SECONDS),
        unit: Unit::Seconds,
        help: "Age of each event when a consumer takes it from its queue, since the event was written",
    },
    Metric {
        name: BATCH_SIZE,
        kind: Kind::Histogram(BATCH_ITEMS),
        unit: Unit::Count,
        help: "Items per batch: stage=store_writer (jobs per SQLite round), relay (rows per turn), \
               inventory or notifier (messages per batch taken)",
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Prometheus' conventions, checked on the table itself.
    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = HashSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "{} is listed twice", m.name);
            assert!(m.name.starts_with("orderflow_"), "{}", m.name);
            assert_eq!(m.kind == Kind::Counter, m.name.ends_with("_total"), "{}: _total is for counters", m.name);
            assert_eq!(m.unit == Unit::Seconds, m.name.contains("_seconds"), "{}: the unit is in the name", m.name);
            assert!(!m.name.contains("micro") && !m.name.contains("milli"), "{}: base units only", m.name);
            if let Kind::Histogram(buckets) = m.kind {
                assert!(buckets.windows(2).all(|w| w[0] < w[1]), "{}: buckets ascend", m.name);
            }
        }
    }
}
