//! The `messages` table as a durable queue shared by many processes.
//!
//! A consumer takes a batch with `FOR UPDATE SKIP LOCKED`, applies it and
//! settles every message in the same transaction: applied ones are deleted,
//! failed ones get a later `available_at` (exponential backoff) or move to
//! `dead_letters`. Competing consumers skip each other's rows instead of
//! waiting, and one killed mid-batch releases its locks with its connection,
//! so the batch is taken again at once: no leases, no timeouts. With a
//! network broker the same table is the outbox, and relays in several
//! processes share it the same way (`relay`).
//!
//! Consumers in other processes learn about new messages through
//! `LISTEN/NOTIFY`: every transaction that queues messages notifies
//! `orderflow_messages` with its schema as the payload, and one dedicated
//! connection per process listens and bumps the local signal. That connection
//! reconnects with backoff when PostgreSQL goes away; meanwhile the workers'
//! own polling keeps things moving.

use super::{bump, db_err, describe};
use crate::domain::{format_millis, now_millis, Event};
use crate::messaging::{order_of, DeadLetter, OutboxMessage, Publisher, Reject, RetryPolicy};
use crate::store::MovedOrders;
use crate::store::{Consumed, Effect, Handled, StoreError};
use deadpool_postgres::{GenericClient, Transaction};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, NoTls};
use uuid::Uuid;

/// How far below the highest id it has taken a scan starts.
const SCAN_BEHIND: i64 = 2048;
/// How often a scan starts at the head of the queue instead.
const FULL_SCAN_EVERY: Duration = Duration::from_millis(250);

/// Where each consumer's (and relay's) scans of the queue start.
///
/// Applied messages are deleted, but their index entries stay until VACUUM,
/// and a scan from the head of the queue walks every page of them: under load
/// several hundred pages per batch taken, before autovacuum comes round. So a
/// scan starts `SCAN_BEHIND` ids below the highest id this process has taken.
/// Ids are handed out at insert and transactions commit in any order, so a
/// message can become visible after others with higher ids; it is still found
/// as long as fewer ids than that were handed out meanwhile. Every
/// `FULL_SCAN_EVERY` a scan starts at the head, and finds everything else:
/// messages whose retry delay has passed, ones another consumer held and
/// released, and any message committed later still.
#[derive(Default)]
pub(super) struct ScanMarks(Mutex<HashMap<String, Mark>>);

struct Mark {
    highest_taken: i64,
    full_scan_at: Instant,
}

impl ScanMarks {
    /// The lowest id the next scan for `key` looks at.
    fn floor(&self, key: &str) -> i64 {
        let mut marks = self.0.lock().expect("scan marks are never poisoned");
        let mark = marks.entry(key.to_owned()).or_insert(Mark { highest_taken: 0, full_scan_at: Instant::now() });
        if mark.highest_taken == 0 || mark.full_scan_at.elapsed() >= FULL_SCAN_EVERY {
            mark.full_scan_at = Instant::now();
            return 0;
        }
        (mark.highest_taken - SCAN_BEHIND).max(0)
    }

    fn taken(&self, key: &str, ids: impl Iterator<Item = i64>) {
        let highest = ids.max().unwrap_or(0);
        if let Some(mark) = self.0.lock().expect("scan marks are never poisoned").get_mut(key) {
            mark.highest_taken = mark.highest_taken.max(highest);
        }
    }
}

pub(super) async fn consume(
    tx: &Transaction<'_>,
    marks: &ScanMarks,
    consumer: &str,
    queue: &str,
    effect: Effect,
    max: usize,
    policy: RetryPolicy,
) -> Result<Consumed, StoreError> {
    let now = now_millis();
    let key = format!("{consumer}/{queue}");
    let take = tx
        .prepare_cached(
            "SELECT id, body, attempts FROM messages WHERE queue = $1 AND id >= $4 AND available_at <= $2
             ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED",
        )
        .await
        .map_err(db_err)?;
    let rows = tx.query(&take, &[&queue, &now, &(max as i64), &marks.floor(&key)]).await.map_err(db_err)?;
    marks.taken(&key, rows.iter().map(|r| r.get::<_, i64>(0)));
    let mut consumed = Consumed { taken: rows.len(), ..Consumed::default() };
    let mut events = Vec::with_capacity(rows.len());
    let mut taken = Vec::with_capacity(rows.len());
    // Dead letters to write: (message id, attempts, error).
    let mut dead: Vec<(i64, i32, String)> = Vec::new();
    for row in &rows {
        let (id, body, attempts): (i64, &str, i32) = (row.get(0), row.get(1), row.get(2));
        match Event::from_json(body.as_bytes()) {
            Ok(event) => {
                events.push(event);
                taken.push((id, attempts));
            }
            Err(e) => {
                tracing::warn!(consumer, message_id = id, error = %e, "poison message dead-lettered");
                dead.push((id, attempts + 1, format!("invalid event: {e}")));
            }
        }
    }
    let results = match (events.is_empty(), effect) {
        (true, _) => Vec::new(),
        (false, Effect::Reserve) => super::effects::reserve(tx, consumer, &events).await?,
        (false, Effect::Notify { webhooks }) => super::effects::notify(tx, consumer, &events, webhooks).await?,
    };
    let mut delete: Vec<i64> = Vec::new();
    let (mut retry_ids, mut retry_attempts, mut retry_at, mut retry_errors) = (vec![], vec![], vec![], vec![]);
    for (((id, attempts), event), result) in taken.into_iter().zip(events).zip(results) {
        match result {
            Handled::Done(reached) => {
                delete.push(id);
                if let Some(status) = reached {
                    consumed.reached.push((event.order_id, status));
                }
                consumed.applied.push(event);
            }
            Handled::Duplicate => delete.push(id),
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
                match policy.after_failure(attempts.max(0) as u32) {
                    Reject::RetryAfter(delay) => {
                        retry_ids.push(id);
                        retry_attempts.push(attempts);
                        retry_at.push(now + delay.as_millis() as i64);
                        retry_errors.push(reason);
                    }
                    Reject::DeadLetter => dead.push((id, attempts, reason)),
                }
            }
        }
    }
    consumed.retried = retry_ids.len();
    consumed.dead_lettered = dead.len();
    if !delete.is_empty() {
        let stmt = tx.prepare_cached("DELETE FROM messages WHERE id = ANY($1)").await.map_err(db_err)?;
        tx.execute(&stmt, &[&delete]).await.map_err(db_err)?;
    }
    if !retry_ids.is_empty() {
        let stmt = tx
            .prepare_cached(
                "UPDATE messages AS m SET attempts = t.attempts, available_at = t.at, last_error = t.error
                 FROM unnest($1::bigint[], $2::int[], $3::bigint[], $4::text[]) AS t(id, attempts, at, error)
                 WHERE m.id = t.id",
            )
            .await
            .map_err(db_err)?;
        tx.execute(&stmt, &[&retry_ids, &retry_attempts, &retry_at, &retry_errors]).await.map_err(db_err)?;
    }
    if !dead.is_empty() {
        dead_letter(tx, &dead, now).await?;
    }
    Ok(consumed)
}

/// Moves messages to `dead_letters` with their attempts and error, in one statement.
async fn dead_letter(tx: &Transaction<'_>, dead: &[(i64, i32, String)], now: i64) -> Result<(), StoreError> {
    let ids: Vec<i64> = dead.iter().map(|d| d.0).collect();
    let attempts: Vec<i32> = dead.iter().map(|d| d.1).collect();
    let errors: Vec<&str> = dead.iter().map(|d| d.2.as_str()).collect();
    let stmt = tx
        .prepare_cached(
            "WITH failed AS (SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[]) AS t(id, attempts, error)),
                  moved AS (DELETE FROM messages AS m USING failed WHERE m.id = failed.id
                            RETURNING m.id, m.queue, m.routing_key, m.body)
             INSERT INTO dead_letters (queue, routing_key, body, attempts, error, failed_at)
             SELECT moved.queue, moved.routing_key, moved.body, failed.attempts, failed.error, $4
             FROM moved JOIN failed USING (id) ORDER BY id",
        )
        .await
        .map_err(db_err)?;
    tx.execute(&stmt, &[&ids, &attempts, &errors, &now]).await.map_err(db_err)?;
    Ok(())
}

pub(super) async fn dead_letters(client: &impl GenericClient, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
    let stmt = client
        .prepare_cached(
            "SELECT id, queue, routing_key, attempts, error, failed_at, body FROM dead_letters ORDER BY id LIMIT $1",
        )
        .await
        .map_err(db_err)?;
    let rows = client.query(&stmt, &[&(limit as i64)]).await.map_err(db_err)?;
    Ok(rows
        .iter()
        .map(|r| DeadLetter {
            id: r.get::<_, i64>(0).to_string(),
            queue: r.get(1),
            routing_key: r.get(2),
            attempts: r.get::<_, i32>(3).max(0) as u32,
            error: r.get(4),
            failed_at: format_millis(r.get(5)),
            body: r.get(6),
            fields: None,
        })
        .collect())
}

/// Moves dead letters back to their queue, fresh (no attempts, ready now).
pub(super) async fn replay(tx: &Transaction<'_>, id: Option<i64>) -> Result<u64, StoreError> {
    let take = tx
        .prepare_cached(
            "DELETE FROM dead_letters WHERE $1::bigint IS NULL OR id = $1 RETURNING id, queue, routing_key, body",
        )
        .await
        .map_err(db_err)?;
    let mut letters = tx.query(&take, &[&id]).await.map_err(db_err)?;
    letters.sort_unstable_by_key(|r| r.get::<_, i64>(0));
    let queues: Vec<&str> = letters.iter().map(|r| r.get(1)).collect();
    let keys: Vec<&str> = letters.iter().map(|r| r.get(2)).collect();
    let bodies: Vec<&str> = letters.iter().map(|r| r.get(3)).collect();
    // Named like the store's own messages, so the order's trail finds them.
    let orders: Vec<Option<Uuid>> = bodies.iter().map(|b| order_of(b.as_bytes()).map(|o| o.as_uuid())).collect();
    let insert = tx
        .prepare_cached(
            "INSERT INTO messages (queue, routing_key, body, order_id)
             SELECT q, k, b, o FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[]) AS t(q, k, b, o)",
        )
        .await
        .map_err(db_err)?;
    let moved = tx.execute(&insert, &[&queues, &keys, &bodies, &orders]).await.map_err(db_err)?;
    if moved > 0 {
        tx.batch_execute(super::NOTIFY_MESSAGES).await.map_err(db_err)?;
    }
    Ok(moved)
}

/// Publishes the oldest outbox rows and deletes them once confirmed, holding
/// their row locks meanwhile so that concurrent relays take disjoint rows. A
/// commit lost after the broker confirmed means a second publish, which the
/// consumers' inboxes absorb.
pub(super) async fn relay(
    tx: &Transaction<'_>,
    marks: &ScanMarks,
    max: usize,
    publisher: &dyn Publisher,
) -> Result<usize, StoreError> {
    let take = tx
        .prepare_cached(
            "SELECT id, routing_key, body FROM messages WHERE id >= $2 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .await
        .map_err(db_err)?;
    let rows = tx.query(&take, &[&(max as i64), &marks.floor("relay")]).await.map_err(db_err)?;
    marks.taken("relay", rows.iter().map(|r| r.get::<_, i64>(0)));
    if rows.is_empty() {
        return Ok(0);
    }
    let batch: Vec<OutboxMessage> = rows
        .iter()
        .map(|r| {
            let id: i64 = r.get(0);
            OutboxMessage { id, routing_key: r.get(1), body: r.get(2), message_id: id.to_string() }
        })
        .collect();
    publisher.publish(&batch).await?;
    let ids: Vec<i64> = batch.iter().map(|m| m.id).collect();
    let forget = tx.prepare_cached("DELETE FROM messages WHERE id = ANY($1)").await.map_err(db_err)?;
    tx.execute(&forget, &[&ids]).await.map_err(db_err)?;
    Ok(batch.len())
}

const LISTEN_FIRST_BACKOFF: Duration = Duration::from_millis(100);
const LISTEN_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Bumps `signal` whenever a process sharing this schema queues messages,
/// until the last receiver of the signal is gone.
/// Also bumps `statuses` whenever one moves an order's status, and sends
/// the ids the notification carries to `moved`.
pub(super) async fn listen(
    config: tokio_postgres::Config,
    signal: Arc<watch::Sender<u64>>,
    statuses: Arc<watch::Sender<u64>>,
    moved: broadcast::Sender<MovedOrders>,
) {
    let mut backoff = LISTEN_FIRST_BACKOFF;
    loop {
        let result = tokio::select! {
            result = listen_once(&config, &signal, &statuses, &moved, &mut backoff) => result,
            _ = signal.closed() => return,
        };
        match result {
            Ok(()) => tracing::warn!(retry_in = ?backoff, "LISTEN connection closed; reconnecting"),
            Err(e) => {
                tracing::warn!(error = %describe(&e), retry_in = ?backoff, "LISTEN connection failed; reconnecting")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = signal.closed() => return,
        }
        backoff = (backoff * 2).min(LISTEN_MAX_BACKOFF);
    }
}

/// One listening connection, from connect until it breaks.
async fn listen_once(
    config: &tokio_postgres::Config,
    signal: &watch::Sender<u64>,
    statuses: &watch::Sender<u64>,
    moved: &broadcast::Sender<MovedOrders>,
    backoff: &mut Duration,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    // The connection must be polled for the client's queries to complete, and
    // polling it is also how notifications arrive.
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    let setup = async {
        client.batch_execute("LISTEN orderflow_messages; LISTEN orderflow_statuses").await?;
        let schema: Option<String> = client.query_one("SELECT current_schema()", &[]).await?.get(0);
        Ok::<_, tokio_postgres::Error>(schema.unwrap_or_default())
    };
    tokio::pin!(setup);
    let mut schema: Option<String> = None;
    loop {
        tokio::select! {
            ready = &mut setup, if schema.is_none() => {
                schema = Some(ready?);
                *backoff = LISTEN_FIRST_BACKOFF;
                // Messages queued while nobody listened would otherwise wait for a poll.
                bump(signal);
                bump(statuses);
            }
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    // `schema` alone, or (statuses) `schema<TAB>id,id,…`.
                    let (from, ids) = n.payload().split_once('\t').unwrap_or((n.payload(), ""));
                    if schema.as_deref().is_none_or(|s| s == from) {
                        bump(if n.channel() == "orderflow_statuses" { statuses } else { signal });
                        if !ids.is_empty() && moved.receiver_count() > 0 {
                            let ids: MovedOrders = ids.split(',').filter_map(|id| id.parse().ok()).collect();
                            let _ = moved.send(ids);
                        }
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
        }
    }
}
