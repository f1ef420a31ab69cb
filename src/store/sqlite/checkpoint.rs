//! Checkpoints beside the writer, so that commits rarely do one.
//!
//! SQLite's automatic checkpoint runs in the committing connection: one
//! unlucky commit also copies the whole WAL into the database and syncs it,
//! and every order waiting on that commit waits too. Here the writer nudges
//! this thread after each commit; it lets frames gather for a moment, then
//! runs a PASSIVE checkpoint on its own connection, which copies what it can
//! without blocking the writer. The writer keeps a far later automatic
//! checkpoint as a backstop. With `synchronous=FULL` SQLite syncs the
//! database file before the copied frames count as checkpointed, so the WAL
//! is only reused once its content is safe.
//!
//! Should the WAL still grow past `WAL_LIMIT` frames (readers holding old
//! snapshots can stop a checkpoint from finishing), one RESTART checkpoint
//! waits for them, and briefly for the writer, so that the file is reused.
//!
//! A checkpoint that fails (a failed write or sync of the database file)
//! leaves the WAL as it was: SQLite counts nothing as copied. The thread then
//! drops its connection and, after a pause, opens a new one and copies every
//! frame not yet counted again, rewriting each page, so nothing depends on
//! a write whose sync failed.

use super::connection::Opener;
use rusqlite::Connection;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::time::Duration;

/// How long the checkpointer lets frames gather after a nudge.
const GATHER: Duration = Duration::from_millis(20);
/// WAL frames (pages) beyond which a blocking checkpoint resets the WAL.
const WAL_LIMIT: i64 = 262_144;
/// The pause after a failed checkpoint.
const AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Nudges the checkpointer; it stops when this is dropped.
pub(super) struct Waker(SyncSender<()>);

impl Waker {
    pub(super) fn wake(&self) {
        // A nudge already pending is enough.
        let _ = self.0.try_send(());
    }
}

pub(super) fn start(opener: Opener) -> anyhow::Result<Waker> {
    use anyhow::Context;
    let conn = opener.checkpointer()?;
    let (tx, rx) = sync_channel(1);
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || run(opener, conn, rx))
        .context("starting the SQLite checkpoint thread")?;
    Ok(Waker(tx))
}

fn run(opener: Opener, conn: Connection, nudges: Receiver<()>) {
    let mut conn = Some(conn);
    while nudges.recv().is_ok() {
        std::thread::sleep(GATHER);
        let closed = matches!(nudges.try_recv(), Err(TryRecvError::Disconnected));
        let open = match conn.take() {
            Some(open) => open,
            None => match opener.checkpointer() {
                Ok(open) => open,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "cannot reopen the SQLite database to checkpoint");
                    std::thread::sleep(AFTER_FAILURE);
                    continue;
                }
            },
        };
        let outcome = checkpoint(&open, "PASSIVE").and_then(|frames| match frames > WAL_LIMIT {
            true => checkpoint(&open, "RESTART"),
            false => Ok(frames),
        });
        match outcome {
            Ok(_) => conn = Some(open),
            Err(e) if is_busy(&e) => conn = Some(open),
            Err(e) => {
                tracing::error!(error = %e, "SQLite checkpoint failed; the WAL keeps every frame, retrying on a new connection");
                drop(open);
                std::thread::sleep(AFTER_FAILURE);
            }
        }
        if closed {
            return;
        }
    }
}

/// Another connection held what the checkpoint needed: nothing failed.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

/// Runs one checkpoint and returns the frames in the WAL.
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<i64> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get::<_, i64>(1))
}

#[cfg(test)]
mod tests {
    use crate::domain::{CustomerId, LineItem, NewOrder, OrderId, Quantity, Sku};
    use crate::store::sqlite::SqliteStore;
    use crate::store::{PlaceOrder, Store};
    use rusqlite::OpenFlags;
    use std::time::Duration;

    fn order() -> PlaceOrder {
        let items = vec![LineItem { sku: Sku::parse("tea").unwrap(), quantity: Quantity::parse(1).unwrap() }];
        let order = NewOrder::new(CustomerId::parse("c1").unwrap(), items).unwrap();
        PlaceOrder { id: OrderId::new(), order, idempotency: None, trace: None }
    }

    /// Orders in the database file alone, as a copy of it without the WAL sees them.
    fn orders_in_main_file(dir: &std::path::Path) -> i64 {
        let copy = dir.join("copy.db");
        std::fs::copy(dir.join("orders.db"), &copy).unwrap();
        let count = rusqlite::Connection::open_with_flags(&copy, OpenFlags::default()).unwrap().query_row(
            "SELECT count(*) FROM orders",
            [],
            |r| r.get(0),
        );
        std::fs::remove_file(&copy).unwrap();
        // Before the first checkpoint even the schema is only in the WAL.
        count.unwrap_or(0)
    }

    #[tokio::test]
    async fn committed_orders_reach_the_database_file_without_waiting_for_a_full_wal() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("orders.db").to_str().unwrap()).await.unwrap();
        for _ in 0..20 {
            store.place_order(order()).await.unwrap();
        }
        // 20 orders are far below the writer's own checkpoint threshold: only
        // the checkpoint thread copies them out of the WAL.
        let mut seen = 0;
        for _ in 0..100 {
            seen = orders_in_main_file(dir.path());
            if seen == 20 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(seen, 20, "the checkpoint thread did not copy the committed orders into the database file");
    }
}
