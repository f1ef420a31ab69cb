//! The per-order work outside the store that formats a time: the `202`'s
//! timestamp and the notifier's log line (the fields of `log_notification`
//! in `services/worker.rs`), written through the process's logger. Together
//! with `store-cost` it covers every time the pipeline formats per order.
//!
//! Run it under `valgrind --tool=callgrind` (bench/README.md).
//! Usage: line-cost [ORDERS] 2>/dev/null   (default 20000)

use orderflow::config::LogFormat;
use orderflow::domain::{format_millis, now_millis, OrderId};

fn main() {
    let orders: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let guard = orderflow::telemetry::init_logs(LogFormat::Text, "line-cost");
    let ids: Vec<OrderId> = (0..64).map(|_| OrderId::new()).collect();
    for i in 0..orders {
        std::hint::black_box(format_millis(now_millis()));
        let order_id = ids[i % ids.len()];
        tracing::info!(order_id = %order_id, customer_id = "bench-1", kind = %"confirmed", reason = None::<&str>, "notification");
    }
    drop(guard);
}
