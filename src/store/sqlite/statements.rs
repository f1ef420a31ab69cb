//! The writer's connection and the statements it runs for every order,
//! each prepared once and kept.
//!
//! rusqlite's statement cache finds a statement by hashing its SQL, takes it
//! out of the cache and puts it back with a fresh copy of the SQL on every
//! use, a cost that adds up when every order runs seven or eight short
//! statements (docs/performance.md). The statements here are kept in a table instead,
//! indexed by `Hot`. Everything else still goes through the cache.
//!
//! The writer also numbers the messages it queues (schema version 3): from
//! the highest id ever given out, read when a transaction begins and written
//! back before it commits. Writers in other processes take turns through
//! SQLite's write lock, so ids only grow, and none is given out twice.

use super::recent::Recent;
use rusqlite::{Connection, Statement};
use std::cell::{Cell, OnceCell, RefCell, RefMut};
use std::ops::Deref;
use std::sync::Arc;

/// The statements every order runs. `SettleInventoryEvents` stays the last:
/// it sizes the table.
#[derive(Clone, Copy)]
pub(super) enum Hot {
    InsertOrder,
    EnqueueOrderEvents,
    EnqueueInventoryEvents,
    Reserve,
    Complete,
    Reject,
    Remember,
    StockLevel,
    TakeStock,
    InsertNotification,
    SettleOrderEvents,
    SettleInventoryEvents,
}

impl Hot {
    /// One past the last variant.
    const COUNT: usize = Hot::SettleInventoryEvents as usize + 1;

    fn sql(self) -> &'static str {
        match self {
            // ?6 is the id of the order's `OrderPlaced` message (schema version 9).
            Hot::InsertOrder => {
                "INSERT INTO orders (id, customer_id, status, items, created_at, updated_at, traceparent,
                    placed_message)
                 VALUES (?1, ?2, 'placed', ?3, ?4, ?4, ?5, ?6)"
            }
            Hot::EnqueueOrderEvents => "INSERT INTO queue_order_events (id, routing_key, body) VALUES (?1, ?2, ?3)",
            Hot::EnqueueInventoryEvents => {
                "INSERT INTO queue_inventory_events (id, routing_key, body) VALUES (?1, ?2, ?3)"
            }
            // ?5 is the id of the message the move queues: the inventory's outcome.
            Hot::Reserve => {
                "UPDATE orders SET status = 'reserved', reason = ?2, updated_at = ?3, reserved_at = ?3, holds_stock = 1,
                    outcome_message = ?5
                 WHERE id = ?1 AND status = ?4"
            }
            Hot::Complete => {
                "UPDATE orders SET status = 'completed', reason = ?2, updated_at = ?3, completed_at = ?3
                 WHERE id = ?1 AND status = ?4"
            }
            Hot::Reject => {
                "UPDATE orders SET status = 'rejected', reason = ?2, updated_at = ?3, rejected_at = ?3,
                    outcome_message = ?5
                 WHERE id = ?1 AND status = ?4"
            }
            Hot::Remember => "INSERT OR IGNORE INTO inbox (consumer, event_id, processed_at) VALUES (?1, ?2, ?3)",
            Hot::StockLevel => "SELECT available FROM inventory WHERE sku = ?1",
            // ?2 is what reservations took less what cancels gave back, ?3 what shipped.
            Hot::TakeStock => {
                "UPDATE inventory SET available = available - ?2, reserved = reserved + ?2 - ?3,
                 shipped = shipped + ?3, updated_at = ?4 WHERE sku = ?1"
            }
            Hot::InsertNotification => {
                "INSERT OR IGNORE INTO notifications (event_id, order_id, consumer, kind, message, sent_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            }
            Hot::SettleOrderEvents => {
                "DELETE FROM queue_order_events WHERE id BETWEEN ?1 AND ?2 AND available_at <= ?3"
            }
            Hot::SettleInventoryEvents => {
                "DELETE FROM queue_inventory_events WHERE id BETWEEN ?1 AND ?2 AND available_at <= ?3"
            }
        }
    }
}

/// The write connection with its hot statements, each prepared on first use.
/// It stands for the connection (`Deref`), so the rest of the writer's code
/// takes it where it takes a `Connection`.
pub(super) struct Writer<'c> {
    conn: &'c Connection,
    hot: [OnceCell<RefCell<Statement<'c>>>; Hot::COUNT],
    /// The highest message id given out, as of this transaction.
    last_id: Cell<i64>,
    /// Whether this transaction gave out ids (and must record the last).
    gave_ids: Cell<bool>,
    /// The events queued lately, for this process's consumers.
    pub(super) recent: Arc<Recent>,
}

impl<'c> Writer<'c> {
    pub(super) fn new(conn: &'c Connection, recent: Arc<Recent>) -> Self {
        Self {
            conn,
            hot: std::array::from_fn(|_| OnceCell::new()),
            last_id: Cell::new(0),
            gave_ids: Cell::new(false),
            recent,
        }
    }

    /// Begins a write transaction and reads the last message id given out.
    /// Messages written by a program that left the id to SQLite count too.
    pub(super) fn begin(&self) -> rusqlite::Result<()> {
        super::run(self.conn, "BEGIN IMMEDIATE")?;
        let last = self
            .conn
            .prepare_cached(
                "SELECT max((SELECT last FROM message_ids),
                            coalesce((SELECT max(id) FROM queue_order_events), 0),
                            coalesce((SELECT max(id) FROM queue_inventory_events), 0))",
            )
            .and_then(|mut s| s.query_row([], |r| r.get(0)));
        match last {
            Ok(last) => {
                self.last_id.set(last);
                self.gave_ids.set(false);
                Ok(())
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Records the last message id given out, then commits.
    pub(super) fn commit(&self) -> rusqlite::Result<()> {
        if self.gave_ids.get() {
            // Never lower: a program writing through the `messages` view
            // counts its ids there too.
            self.conn.prepare_cached("UPDATE message_ids SET last = max(last, ?1)")?.execute([self.last_id.get()])?;
        }
        super::run(self.conn, "COMMIT")
    }

    /// An id for a new message: higher than any given out before. One given
    /// to a job that is rolled back is simply never used.
    pub(super) fn next_message_id(&self) -> i64 {
        let id = self.last_id.get() + 1;
        self.last_id.set(id);
        self.gave_ids.set(true);
        id
    }

    /// Whether this transaction queued messages, so that its commit wakes
    /// the consumers only when there is something for them.
    pub(super) fn queued_messages(&self) -> bool {
        self.gave_ids.get()
    }

    /// The statement, prepared once. Each use binds all its parameters, and
    /// rusqlite resets it after every execution.
    pub(super) fn stmt(&self, which: Hot) -> rusqlite::Result<RefMut<'_, Statement<'c>>> {
        let cell = &self.hot[which as usize];
        if let Some(stmt) = cell.get() {
            return Ok(stmt.borrow_mut());
        }
        let stmt = self.conn.prepare(which.sql())?;
        Ok(cell.get_or_init(|| RefCell::new(stmt)).borrow_mut())
    }
}

impl Deref for Writer<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}
