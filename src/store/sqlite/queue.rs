//! The queues of the `db` broker: a table each (schema version 4), and the
//! `messages` view of them all for what is not on the hot path.
//!
//! A consumer reads a batch on a read connection, beside the writer, and
//! parses it there, or takes the events the writer kept as it queued them
//! (`recent`). The writer then applies the batch in parts of consecutive
//! messages, and each part's job settles its own messages in the same
//! transaction as their effects: applied messages are deleted, failed ones get
//! a later `available_at` (exponential backoff) or move to `dead_letters`.
//! Because a part is applied and settled in one transaction, a consumer killed
//! mid-batch leaves each part either done or untouched, and what is untouched
//! is taken again at once by the next consumer: no leases, no timeouts.
//! Should another process's consumer take some of the same messages between
//! the read and the write, the inbox makes the second application a
//! duplicate, and deleting or retrying a message that is gone changes nothing.

use super::db_err;
use super::effects;
use super::recent::{Matcher, Recent};
use super::statements::{Hot, Writer};
use crate::domain::{format_millis, now_millis, Event};
use crate::messaging::{
    written_millis, DeadLetter, OutboxMessage, Reject, RetryPolicy, QUEUE_INVENTORY_EVENTS, QUEUE_ORDER_EVENTS,
};
use crate::store::{Consumed, Effect, Handled, StoreError};
use rusqlite::{params, Connection};

/// A queue, and the table that holds its messages in id order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Queue {
    OrderEvents,
    InventoryEvents,
}

impl Queue {
    pub(super) fn named(name: &str) -> Result<Self, StoreError> {
        match name {
            QUEUE_ORDER_EVENTS => Ok(Queue::OrderEvents),
            QUEUE_INVENTORY_EVENTS => Ok(Queue::InventoryEvents),
            other => Err(StoreError::Other(anyhow::anyhow!("no such queue: '{other}'"))),
        }
    }

    fn table(self) -> &'static str {
        match self {
            Queue::OrderEvents => "queue_order_events",
            Queue::InventoryEvents => "queue_inventory_events",
        }
    }

    /// The writer's statement that queues a message here.
    pub(super) fn enqueue(self) -> Hot {
        match self {
            Queue::OrderEvents => Hot::EnqueueOrderEvents,
            Queue::InventoryEvents => Hot::EnqueueInventoryEvents,
        }
    }

    /// The writer's statement that deletes a settled span of messages.
    fn settle(self) -> Hot {
        match self {
            Queue::OrderEvents => Hot::SettleOrderEvents,
            Queue::InventoryEvents => Hot::SettleInventoryEvents,
        }
    }
}

/// A message taken from a queue, parsed.
pub(super) struct Taken {
    id: i64,
    /// Failed deliveries before this one.
    attempts: u32,
    event: Result<Event, String>,
    /// Written through the `messages` view (schema version 9): deleted
    /// through it too, so that its id leaves `unnamed_messages`.
    unnamed: bool,
}

/// A batch read for a consumer: its messages, oldest first, and the time
/// they were ready at.
pub(super) struct Batch {
    queue: Queue,
    now: i64,
    messages: Vec<Taken>,
    /// Messages whose event the writer had kept, not parsed again.
    pub reused: usize,
}

impl Batch {
    pub(super) fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Splits the batch, oldest first, into parts of at most `size`
    /// messages. Each part's messages are the ones ready between its first
    /// and its last id, as `settle` needs.
    pub(super) fn split(self, size: usize) -> impl Iterator<Item = Batch> {
        let Batch { queue, now, messages, .. } = self;
        let mut messages = messages.into_iter();
        std::iter::from_fn(move || {
            let part: Vec<Taken> = messages.by_ref().take(size).collect();
            (!part.is_empty()).then_some(Batch { queue, now, messages: part, reused: 0 })
        })
    }
}

/// Reads up to `max` messages of `queue` that are ready at `now`, and parses
/// them, or takes the event the writer kept for one (`recent`). Runs on a
/// read connection; it changes nothing.
pub(super) fn take(
    conn: &Connection,
    recent: &Recent,
    queue: Queue,
    now: i64,
    max: usize,
) -> Result<Batch, StoreError> {
    // The limit is written into the statement, not bound: SQLite plans a
    // `LIMIT ?` with the bound value, and so prepares the statement again
    // each time that parameter is bound, which cost more than the read.
    let sql = format!(
        "SELECT id, CAST(body AS BLOB), attempts, unnamed IS NOT NULL FROM {}
         WHERE available_at <= ?1 ORDER BY id LIMIT {max}",
        queue.table()
    );
    let mut kept = Matcher::new(recent.take(queue));
    let messages = conn.prepare_cached(&sql).and_then(|mut s| {
        s.query_map([now], |r| {
            let (id, body) = (r.get(0)?, r.get_ref(1)?.as_blob()?);
            let event = match kept.event(id, body) {
                Some(event) => Ok(event),
                None => Event::from_json(body).map_err(|e| e.to_string()),
            };
            Ok(Taken { id, attempts: r.get(2)?, event, unnamed: r.get(3)? })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()
    });
    let reused = kept.reused;
    recent.give_back(queue, kept.rest());
    let messages = messages.map_err(db_err)?;
    Ok(Batch { queue, now, messages, reused })
}

/// Applies `effect` to a batch (or a part of one) as `consumer` and settles
/// each message; runs in the writer, in one transaction.
pub(super) fn settle(
    conn: &Writer<'_>,
    consumer: &str,
    batch: Batch,
    effect: Effect,
    policy: RetryPolicy,
) -> Result<Consumed, StoreError> {
    let Batch { queue, now, messages, .. } = batch;
    let mut consumed = Consumed { taken: messages.len(), ..Consumed::default() };
    // Message ids are unique and only grow, and a message's `available_at`
    // only moves later, so between the first and the last id taken the
    // messages ready at `now` are exactly the ones taken (less any another
    // consumer settled meanwhile).
    let span = match (messages.first(), messages.last()) {
        (Some(first), Some(last)) => (first.id, last.id),
        _ => return Ok(consumed),
    };
    let mut events = Vec::with_capacity(messages.len());
    let mut ids = Vec::with_capacity(messages.len());
    let unnamed = messages.iter().any(|m| m.unnamed);
    for m in messages {
        match m.event {
            Ok(event) => {
                events.push(event);
                ids.push((m.id, m.attempts));
            }
            Err(e) => {
                tracing::warn!(consumer, message_id = m.id, error = %e, "poison message dead-lettered");
                dead_letter(conn, m.id, m.attempts + 1, &format!("invalid event: {e}"), now)?;
                consumed.dead_lettered += 1;
            }
        }
    }
    if events.is_empty() {
        return Ok(consumed);
    }
    let results = match effect {
        Effect::Reserve => effects::reserve(conn, consumer, &events)?,
        Effect::Notify { webhooks } => effects::notify(conn, consumer, &events, webhooks)?,
    };
    // The usual case, every message applied or a duplicate and none unnamed:
    // one statement deletes them all.
    let all_settled = !unnamed && results.iter().all(|r| matches!(r, Handled::Done(_) | Handled::Duplicate));
    if all_settled {
        conn.stmt(queue.settle()).and_then(|mut s| s.execute(params![span.0, span.1, now])).map_err(db_err)?;
    }
    let mut delete = conn.prepare_cached("DELETE FROM messages WHERE id = ?1").map_err(db_err)?;
    for (((id, attempts), event), result) in ids.into_iter().zip(events).zip(results) {
        match result {
            Handled::Done(_) | Handled::Duplicate => {
                if !all_settled {
                    delete.execute([id]).map_err(db_err)?;
                }
                if let Handled::Done(reached) = result {
                    if let Some(status) = reached {
                        consumed.reached.push((event.order_id, status));
                    }
                    consumed.applied.push(event);
                }
            }
            Handled::Retry(reason) => {
                let attempts = attempts + 1;
                tracing::warn!(
                    consumer,
                    message_id = id,
                    order_id = %event.order_id,
                    trace_id = event.trace_id().map(tracing::field::display),
                    attempts,
                    %reason,
                    "event not applied"
                );
                match policy.after_failure(attempts) {
                    Reject::RetryAfter(delay) => {
                        conn.prepare_cached(
                            "UPDATE messages SET attempts = ?2, available_at = ?3, last_error = ?4 WHERE id = ?1",
                        )
                        .and_then(|mut s| s.execute(params![id, attempts, now + delay.as_millis() as i64, reason]))
                        .map_err(db_err)?;
                        consumed.retried += 1;
                    }
                    Reject::DeadLetter => {
                        dead_letter(conn, id, attempts, &reason, now)?;
                        consumed.dead_lettered += 1;
                    }
                }
            }
        }
    }
    Ok(consumed)
}

fn dead_letter(conn: &Connection, id: i64, attempts: u32, error: &str, now: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO dead_letters (queue, routing_key, body, attempts, error, failed_at)
         SELECT queue, routing_key, body, ?2, ?3, ?4 FROM messages WHERE id = ?1",
    )
    .and_then(|mut s| s.execute(params![id, attempts, error, now]))
    .map_err(db_err)?;
    conn.prepare_cached("DELETE FROM messages WHERE id = ?1").and_then(|mut s| s.execute([id])).map_err(db_err)?;
    Ok(())
}

/// Claims the oldest outbox rows for the relay: each is held for `lease_ms`,
/// so a relay in another process does not publish it too. A relay that dies
/// holding rows delays them by a lease; one that publishes slower than that
/// may see them published twice, which consumers' inboxes absorb.
pub(super) fn claim_outbox(conn: &Connection, max: usize, lease_ms: i64) -> Result<Vec<OutboxMessage>, StoreError> {
    let now = now_millis();
    // A literal limit, as in `take`.
    let sql = format!("SELECT id, routing_key, body FROM messages WHERE available_at <= ?1 ORDER BY id LIMIT {max}");
    let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
    let rows = stmt
        .query_map([now], |r| {
            let id: i64 = r.get(0)?;
            Ok(OutboxMessage { id, routing_key: r.get(1)?, body: r.get(2)?, message_id: id.to_string() })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_err)?;
    let mut hold = conn.prepare_cached("UPDATE messages SET available_at = ?1 WHERE id = ?2").map_err(db_err)?;
    for row in &rows {
        hold.execute((now + lease_ms, row.id)).map_err(db_err)?;
    }
    Ok(rows)
}

/// Ends the relay's hold on outbox rows it could not publish.
pub(super) fn release_outbox(conn: &Connection, ids: &[i64]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached("UPDATE messages SET available_at = 0 WHERE id = ?1").map_err(db_err)?;
    for id in ids {
        stmt.execute([id]).map_err(db_err)?;
    }
    Ok(())
}

/// Deletes outbox rows the broker has confirmed.
pub(super) fn forget(conn: &Connection, ids: &[i64]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached("DELETE FROM messages WHERE id = ?1").map_err(db_err)?;
    for id in ids {
        stmt.execute([id]).map_err(db_err)?;
    }
    Ok(())
}

pub(super) fn dead_letters(conn: &Connection, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, queue, routing_key, attempts, error, failed_at, CAST(body AS BLOB) FROM dead_letters ORDER BY id LIMIT ?1",
        )
        .map_err(db_err)?;
    let rows = stmt
        .query_map([limit as i64], |r| {
            let body: Vec<u8> = r.get(6)?;
            Ok(DeadLetter {
                id: r.get::<_, i64>(0)?.to_string(),
                queue: r.get(1)?,
                routing_key: r.get(2)?,
                attempts: r.get(3)?,
                error: r.get(4)?,
                failed_at: format_millis(r.get(5)?),
                body: String::from_utf8_lossy(&body).into_owned(),
                fields: None,
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_err)?;
    Ok(rows)
}

pub(super) fn replay(conn: &Writer<'_>, id: Option<i64>) -> Result<u64, StoreError> {
    let filter = if id.is_some() { "WHERE id = ?1" } else { "WHERE ?1 IS NULL" };
    // Bodies are copied as bytes: a poison message need not be valid text.
    let letters = conn
        .prepare(&format!("SELECT queue, routing_key, CAST(body AS BLOB) FROM dead_letters {filter} ORDER BY id"))
        .and_then(|mut s| {
            s.query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Vec<u8>>(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db_err)?;
    let mut insert = conn
        .prepare_cached("INSERT INTO messages (id, queue, routing_key, body) VALUES (?1, ?2, ?3, CAST(?4 AS TEXT))")
        .map_err(db_err)?;
    for (queue, routing_key, body) in &letters {
        insert.execute(params![conn.next_message_id(), queue, routing_key, body]).map_err(db_err)?;
    }
    let moved = conn.execute(&format!("DELETE FROM dead_letters {filter}"), [id]).map_err(db_err)?;
    Ok(moved as u64)
}

pub(super) fn counts(conn: &Connection) -> Result<(i64, i64), StoreError> {
    conn.query_row("SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM dead_letters)", [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .map_err(db_err)
}

/// When the event at the front of each queue was written, for the queues
/// whose front row is an event.
pub(super) fn oldest(conn: &Connection) -> Result<Vec<(String, i64)>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT queue, body FROM messages WHERE id IN (SELECT min(id) FROM messages GROUP BY queue)")
        .map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_err)?;
    Ok(rows.into_iter().filter_map(|(queue, body)| Some((queue, written_millis(&body)?))).collect())
}

#[cfg(test)]
mod tests {
    use super::super::tests::message_ids;
    use super::{settle, take, Batch, Queue, Taken};
    use crate::domain::{now_millis, CustomerId, Event, EventType, OrderId};
    use crate::messaging::{RetryPolicy, QUEUE_INVENTORY_EVENTS};
    use crate::store::Effect;
    use rusqlite::params;

    /// Settling a batch deletes what it applied and nothing else: a message
    /// waiting out its backoff between two that were taken stays queued.
    #[test]
    fn a_message_waiting_between_two_taken_ones_stays_queued() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        super::super::connection::migrate(&conn).unwrap();
        let now = now_millis();
        for ready_at in [0, now + 60_000, 0] {
            let order = OrderId::new();
            conn.execute(
                "INSERT INTO orders (id, customer_id, status, items, created_at, updated_at, rejected_at)
                 VALUES (?1, 'c1', 'rejected', '[]', 1, 1, 1)",
                [order.to_string()],
            )
            .unwrap();
            let reason = Some("out_of_stock:tea".to_owned());
            let event = Event::new(EventType::InventoryFailed, order, CustomerId::parse("c1").unwrap(), vec![], reason);
            conn.execute(
                "INSERT INTO messages (queue, routing_key, body, available_at) VALUES (?1, 'inventory.failed', ?2, ?3)",
                params![QUEUE_INVENTORY_EVENTS, event.to_json(), ready_at],
            )
            .unwrap();
        }
        let queued = message_ids(&conn);
        assert_eq!(queued.len(), 3);

        let recent = std::sync::Arc::new(super::super::recent::Recent::default());
        let batch = take(&conn, &recent, Queue::InventoryEvents, now, 10).unwrap();
        let writer = super::super::statements::Writer::new(&conn, recent);
        let consumed =
            settle(&writer, "notifier", batch, Effect::Notify { webhooks: false }, RetryPolicy::default()).unwrap();
        assert_eq!((consumed.taken, consumed.applied.len()), (2, 2));
        assert_eq!(message_ids(&conn), [queued[1]], "only the waiting message is left");
    }

    /// A batch goes to the writer in parts of consecutive messages, oldest
    /// first, each at most the size asked for.
    #[test]
    fn a_batch_splits_into_parts_in_id_order() {
        let messages: Vec<Taken> =
            (1..=70).map(|id| Taken { id, attempts: 0, event: Err(String::new()), unnamed: false }).collect();
        let batch = Batch { queue: Queue::OrderEvents, now: 1, messages, reused: 0 };
        let parts: Vec<Vec<i64>> = batch.split(32).map(|p| p.messages.iter().map(|m| m.id).collect()).collect();
        let expected: Vec<Vec<i64>> = vec![(1..=32).collect(), (33..=64).collect(), (65..=70).collect()];
        assert_eq!(parts, expected);
    }

    /// A consumer takes the events the writer queued from what it kept,
    /// except for a message whose body is not what the writer wrote (here
    /// rewritten by hand) or that another program queued: those are parsed.
    #[test]
    fn a_consumer_takes_the_writers_events_only_where_the_bodies_match() {
        use crate::domain::{LineItem, NewOrder, Quantity, Sku};
        use crate::store::{PlaceOrder, PreparedOrder};
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        super::super::connection::migrate(&conn).unwrap();
        let recent = std::sync::Arc::new(super::super::recent::Recent::default());
        let writer = super::super::statements::Writer::new(&conn, recent.clone());
        let now = now_millis();
        assert!(take(&conn, &recent, Queue::OrderEvents, now, 10).unwrap().is_empty());

        let mut placed = Vec::new();
        writer.begin().unwrap();
        for customer in ["c1", "c2", "c3"] {
            let items = vec![LineItem { sku: Sku::parse("tea").unwrap(), quantity: Quantity::parse(2).unwrap() }];
            let order = NewOrder::new(CustomerId::parse(customer).unwrap(), items).unwrap();
            let prepared = PreparedOrder::new(PlaceOrder { id: OrderId::new(), order, idempotency: None, trace: None });
            placed.push(prepared.placed.clone());
            super::super::orders::place(&writer, prepared).unwrap();
        }
        writer.commit().unwrap();
        let by_hand =
            Event::new(EventType::OrderPlaced, OrderId::new(), CustomerId::parse("c4").unwrap(), vec![], None);
        conn.execute(
            "INSERT INTO messages (queue, routing_key, body) VALUES ('order-events', 'order.placed', ?1)",
            [by_hand.to_json()],
        )
        .unwrap();
        let rewritten =
            Event::new(EventType::OrderPlaced, OrderId::new(), CustomerId::parse("c5").unwrap(), vec![], None);
        let second = message_ids(&conn)[1];
        conn.execute("UPDATE messages SET body = ?2 WHERE id = ?1", params![second, rewritten.to_json()]).unwrap();

        let batch = take(&conn, &recent, Queue::OrderEvents, now_millis(), 10).unwrap();
        let events: Vec<Event> = batch.messages.iter().map(|m| m.event.clone().unwrap()).collect();
        assert_eq!(events, [placed[0].clone(), rewritten, placed[2].clone(), by_hand]);
        assert_eq!(batch.reused, 2);
        // Taken again (the batch was not settled): parsed from the table this time.
        let again = take(&conn, &recent, Queue::OrderEvents, now_millis(), 10).unwrap();
        assert_eq!((again.messages.len(), again.reused), (4, 0));
    }
}
