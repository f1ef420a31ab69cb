//! After a fault, once the system is idle: what the clients saw and what the
//! store holds, as one row of the report.

use crate::helpers::Env;
use crate::load::Tally;
use std::time::{Duration, Instant};

pub struct Row {
    pub scenario: String,
    pub sent: usize,
    pub accepted: usize,
    pub client_errors: usize,
    pub transport_errors: usize,
    pub lost: usize,
    pub reserved_twice: i64,
    pub stock_conserved: bool,
    /// Cancelled orders whose stock was not given back.
    pub cancelled_holding: usize,
    pub cancelled: usize,
    pub shipped: usize,
    pub dead_letters: usize,
    pub duplicate_retries: usize,
}

impl Row {
    pub const HEADER: &'static str = "| scenario | requests | 202 | 5xx/errors seen by clients | lost | cancelled / shipped | reserved twice | stock conserved | cancelled still holding stock | DLQ | retries that duplicated |\n|---|---|---|---|---|---|---|---|---|---|---|";

    pub fn line(&self) -> String {
        format!(
            "| {} | {} | {} | {}{} | {} | {} / {} | {} | {} | {} | {} | {} |",
            self.scenario,
            self.sent,
            self.accepted,
            self.client_errors,
            if self.transport_errors > 0 {
                format!(" ({} without an answer)", self.transport_errors)
            } else {
                String::new()
            },
            self.lost,
            self.cancelled,
            self.shipped,
            self.reserved_twice,
            if self.stock_conserved { "yes" } else { "NO" },
            self.cancelled_holding,
            self.dead_letters,
            self.duplicate_retries
        )
    }
}

/// Waits until no order is in flight, every cancel and shipment has moved
/// its stock (only completed orders hold any), and the queues are drained.
pub async fn wait_idle(env: &Env, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let open = env.sql("SELECT count(*) FROM orders WHERE status IN ('placed', 'reserved')");
        let moving = env.sql("SELECT count(*) FROM orders WHERE holds_stock <> (status = 'completed')");
        let outbox = env.sql("SELECT count(*) FROM messages");
        if open == "0" && moving == "0" && outbox == "0" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not idle after {timeout:?}: {open} orders open, {moving} stock moves pending, {outbox} in the outbox"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn audit(env: &Env, scenario: String, tally: &Tally, skus: &[String], initial: i64, dead_letters: usize) -> Row {
    let ids: Vec<String> = tally.accepted.iter().map(|id| format!("'{id}'")).collect();
    let found: usize = if ids.is_empty() {
        0
    } else {
        env.sql(&format!(
            "SELECT count(*) FROM orders WHERE status IN ('completed', 'rejected', 'cancelled', 'shipped') AND id IN ({})",
            ids.join(",")
        ))
        .parse()
        .unwrap()
    };
    let sku_list: Vec<String> = skus.iter().map(|s| format!("'{s}'")).collect();
    let sku_list = sku_list.join(",");
    // What the orders of each status hold, from their items.
    let quantity = |status: &str| -> i64 {
        env.sql(&format!(
            "SELECT coalesce(sum((item->>'quantity')::bigint), 0) FROM orders, jsonb_array_elements(items) item
             WHERE status = '{status}' AND item->>'sku' IN ({sku_list})"
        ))
        .parse()
        .unwrap()
    };
    let (held, sent) = (quantity("completed"), quantity("shipped"));
    let totals = env.sql(&format!(
        "SELECT coalesce(sum(available), 0) || ' ' || coalesce(sum(reserved), 0) || ' ' || coalesce(sum(shipped), 0)
         FROM inventory WHERE sku IN ({sku_list})"
    ));
    let [available, reserved, shipped]: [i64; 3] =
        totals.split(' ').map(|n| n.parse().unwrap()).collect::<Vec<_>>().try_into().unwrap();
    let cancelled_holding = if ids.is_empty() {
        0
    } else {
        env.sql(&format!(
            "SELECT count(*) FROM orders WHERE status = 'cancelled' AND holds_stock AND id IN ({})",
            ids.join(",")
        ))
        .parse()
        .unwrap()
    };
    Row {
        scenario,
        sent: tally.sent,
        accepted: tally.accepted.len(),
        client_errors: tally.server_errors + tally.transport_errors,
        transport_errors: tally.transport_errors,
        lost: tally.accepted.len() - found,
        cancelled: tally.cancelled.len(),
        shipped: tally.shipped.len(),
        reserved_twice: reserved - held,
        stock_conserved: available + reserved + shipped == initial * skus.len() as i64 && shipped == sent,
        cancelled_holding,
        dead_letters,
        duplicate_retries: tally.duplicate_retries,
    }
}
