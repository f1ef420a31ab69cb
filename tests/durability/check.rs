//! What a user checks on the database a failure left: SQLite finds it sound,
//! every order answered 202 is there with its event (or a later state), the
//! pipeline finishes every order, and stock is conserved.

use crate::pipeline::{self, Answers, Pipeline, SKUS, STOCK};
use orderflow::store::SqliteOptions;
use rusqlite::{Connection, OptionalExtension};
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Report {
    /// `PRAGMA integrity_check`, or why the database could not be read.
    pub integrity: String,
    /// Orders answered 202 that are not in the database.
    pub lost: Vec<String>,
    /// Orders still `placed` with no `OrderPlaced` event queued or dead-lettered.
    pub without_event: Vec<String>,
    /// Orders the pipeline did not finish.
    pub unfinished: i64,
    /// SKUs whose stock does not add up.
    pub stock: Vec<String>,
}

impl Report {
    pub fn is_sound(&self) -> bool {
        self.integrity == "ok"
            && self.lost.is_empty()
            && self.without_event.is_empty()
            && self.unfinished == 0
            && self.stock.is_empty()
    }
}

/// Checks the database in `dir` against what clients were told.
pub async fn check(dir: &Path, answers: &Answers) -> Report {
    let mut report = Report::default();
    let conn = match Connection::open(dir.join("orders.db")) {
        Ok(conn) => conn,
        Err(e) => {
            report.integrity = format!("cannot open: {e}");
            return report;
        }
    };
    report.integrity = match integrity(&conn) {
        Ok(text) => text,
        Err(e) => format!("cannot check: {e}"),
    };
    if report.integrity != "ok" {
        report.lost = answers.accepted.keys().cloned().collect();
        return report;
    }
    let mut find = match conn.prepare("SELECT status FROM orders WHERE id = ?1") {
        Ok(find) => find,
        Err(e) => {
            // A sound database without the schema: everything was lost.
            report.integrity = format!("no orders table: {e}");
            report.lost = answers.accepted.keys().cloned().collect();
            return report;
        }
    };
    for id in answers.accepted.keys() {
        let found: Option<String> = find.query_row([id], |r| r.get(0)).optional().unwrap_or(None);
        if found.is_none() {
            report.lost.push(id.clone());
        }
    }
    report.without_event = column(
        &conn,
        "SELECT id FROM orders WHERE status = 'placed' AND id NOT IN (
             SELECT body ->> 'order_id' FROM queue_order_events
             UNION ALL SELECT body ->> 'order_id' FROM dead_letters WHERE json_valid(body))",
    );
    drop(find);
    drop(conn);

    // The pipeline, on a plain disk, finishes what was left.
    let store = pipeline::open(dir, SqliteOptions::default()).await;
    let running = Pipeline::start(store).await;
    let conn = Connection::open(dir.join("orders.db")).unwrap();
    let open = || -> i64 {
        conn.query_row("SELECT count(*) FROM orders WHERE status IN ('placed', 'reserved')", [], |r| r.get(0)).unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while open() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.stop().await;
    report.unfinished = open();

    // Every unit of stock is available or reserved by exactly one order.
    for sku in SKUS {
        let (available, reserved): (i64, i64) = conn
            .query_row("SELECT available, reserved FROM inventory WHERE sku = ?1", [sku], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap_or((-1, -1));
        let held: i64 = conn
            .query_row(
                "SELECT coalesce(sum(item.value ->> 'quantity'), 0) FROM orders, json_each(orders.items) AS item
                 WHERE orders.status IN ('reserved', 'completed') AND item.value ->> 'sku' = ?1",
                [sku],
                |r| r.get(0),
            )
            .unwrap();
        if available + reserved != STOCK || reserved != held || available < 0 {
            report.stock.push(format!("{sku}: {available} available, {reserved} reserved, orders hold {held}"));
        }
    }
    report
}

fn integrity(conn: &Connection) -> rusqlite::Result<String> {
    let rows = conn
        .prepare("PRAGMA integrity_check")?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows.join("; "))
}

fn column(conn: &Connection, sql: &str) -> Vec<String> {
    conn.prepare(sql).unwrap().query_map([], |r| r.get(0)).unwrap().collect::<rusqlite::Result<_>>().unwrap()
}
