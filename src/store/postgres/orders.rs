//! Orders: accepting them with group commit, reading them back, paging.
//!
//! Every accepted order costs a commit, and a commit costs a WAL flush, so the
//! store does not give each request its own transaction. `place_order` hands
//! its order to a writer task through a bounded channel (full: `Unavailable`
//! at once); the writer takes everything waiting and writes it in one
//! transaction with one multi-row statement per table (`unnest` of arrays),
//! then answers every caller after COMMIT, and only then asks `wake_others`
//! to wake the relays. A few batches may be in flight at once, each on its own
//! connection, while the next one gathers.
//!
//! Idempotency keys are claimed with `INSERT … ON CONFLICT DO NOTHING
//! RETURNING`: a key that comes back is ours, and one that does not belongs to
//! an earlier or concurrent request (in this process or another; PostgreSQL
//! makes us wait for its transaction), whose row we then read. Within a batch
//! only the first request with a key claims it; the others follow its fate.
//! Keys are claimed in sorted order so two batches never deadlock on them.

use super::{db_err, pool_err, NOTIFY_MESSAGES};
use crate::domain::{cutoff, format_millis, now_millis, LineItem, OrderId, Status, ROUTE_ORDER_PLACED};
use crate::messaging::QUEUE_ORDER_EVENTS;
use crate::store::{
    waiting_messages, NotificationRecord, OrderFilter, OrderPage, OrderTrail, OrderView, Placed, PreparedOrder,
    StoreError, Transition, WaitingMessage, TRAIL_WAITING,
};
use deadpool_postgres::{GenericClient, Object, Pool};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

/// Orders one transaction may hold; bounds the latency of the unlucky last one.
const MAX_ORDERS_PER_BATCH: usize = 1024;
/// Batches being written at once. While they commit, the next batch gathers.
const BATCHES_IN_FLIGHT: usize = 4;

/// An order waiting for the writer, and where its answer goes.
pub(super) struct Pending {
    pub(super) order: PreparedOrder,
    pub(super) reply: oneshot::Sender<Result<Placed, StoreError>>,
}

/// Gathers waiting orders into batches until every sender is gone.
pub(super) async fn run_writer(pool: Pool, mut rx: mpsc::Receiver<Pending>, signal: Arc<watch::Sender<u64>>) {
    let in_flight = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    let (wake, woken) = watch::channel(());
    tokio::spawn(wake_others(pool.clone(), woken));
    loop {
        // Wait for a free slot first: orders arriving meanwhile join the next batch.
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let Some(first) = rx.recv().await else { return };
        let mut batch = Vec::with_capacity(64);
        batch.push(first);
        while batch.len() < MAX_ORDERS_PER_BATCH {
            match rx.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        // A caller that gave up (timed out, or its client went away) was not
        // told 202, so its order is not written.
        batch.retain(|p| !p.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let (pool, signal, wake) = (pool.clone(), signal.clone(), wake.clone());
        tokio::spawn(async move {
            let (orders, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.order, p.reply)).unzip();
            let abandoned = || replies.iter().all(|r| r.is_closed());
            let placed = async {
                let mut client = pool.get().await.map_err(pool_err)?;
                place_batch(&mut client, &orders, abandoned).await
            };
            match placed.await {
                Ok((outcomes, inserted)) => {
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(outcome);
                    }
                    if inserted {
                        super::bump(&signal);
                        wake.send_replace(());
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, orders = orders.len(), "order batch failed; nothing was stored");
                    for reply in replies {
                        let _ = reply.send(Err(copy_error(&e)));
                    }
                }
            }
            drop(permit);
        });
    }
}

/// Wakes the relays and consumers of every process after batches commit,
/// on a task of its own, until the writer is gone.
///
/// Not inside a batch's transaction, as the services' writes do it:
/// PostgreSQL commits the transactions that notify one at a time, holding a
/// lock until each commit is on disk, so new orders would wait for the
/// services' commits while a backlog drains. Nor on a batch's own slot, which
/// would stay taken while the notification waits for that lock. Batches that
/// commit while a notification is being sent share the next one. One lost
/// (the process dies first) only delays the relays until their next poll.
async fn wake_others(pool: Pool, mut woken: watch::Receiver<()>) {
    while woken.changed().await.is_ok() {
        let sent = async { pool.get().await.map_err(pool_err)?.batch_execute(NOTIFY_MESSAGES).await.map_err(db_err) };
        if let Err(e) = sent.await {
            tracing::warn!(error = %e, "NOTIFY after order batches failed; the relays will poll");
        }
    }
}

/// The same failure for every caller of a failed batch.
fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::IdempotencyConflict => StoreError::IdempotencyConflict,
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::OutcomeUnknown(m) => StoreError::OutcomeUnknown(m.clone()),
        StoreError::Other(e) => StoreError::Other(anyhow::anyhow!("{e:#}")),
    }
}

/// Writes a batch in one transaction. Returns each order's outcome, in order,
/// and whether any order (and so any message) was inserted.
async fn place_batch(
    client: &mut Object,
    orders: &[PreparedOrder],
    abandoned: impl Fn() -> bool,
) -> Result<(Vec<Result<Placed, StoreError>>, bool), StoreError> {
    let now = now_millis();
    let tx = client.transaction().await.map_err(db_err)?;

    // The first request carrying each key claims it for the whole batch.
    let mut claimant: HashMap<&str, usize> = HashMap::new();
    for (i, o) in orders.iter().enumerate() {
        if let Some((key, _, _)) = &o.idempotency {
            claimant.entry(key.as_str()).or_insert(i);
        }
    }
    let mut claims: Vec<(&str, usize)> = claimant.iter().map(|(k, i)| (*k, *i)).collect();
    claims.sort_unstable();
    let mut won: HashSet<String> = HashSet::new();
    let mut earlier: HashMap<String, (String, Uuid, i64)> = HashMap::new();
    if !claims.is_empty() {
        let keys: Vec<&str> = claims.iter().map(|(k, _)| *k).collect();
        let hashes: Vec<&str> = claims.iter().map(|(_, i)| hash_of(&orders[*i])).collect();
        let ids: Vec<Uuid> = claims.iter().map(|(_, i)| orders[*i].id.as_uuid()).collect();
        let cutoffs: Vec<i64> = claims.iter().map(|(_, i)| cutoff(now, ttl_of(&orders[*i]))).collect();
        // A key recorded at or before its request's cutoff has expired: it is
        // unknown, so its row is taken over as if it were not there.
        let claim = tx
            .prepare_cached(
                "WITH t AS (SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $5::bigint[]) AS t(k, h, o, cut))
                 INSERT INTO idempotency_keys (key, request_hash, order_id, created_at) SELECT k, h, o, $4 FROM t
                 ON CONFLICT (key) DO UPDATE SET request_hash = EXCLUDED.request_hash,
                     order_id = EXCLUDED.order_id, created_at = EXCLUDED.created_at
                 WHERE idempotency_keys.created_at <= (SELECT cut FROM t WHERE t.k = EXCLUDED.key)
                 RETURNING key",
            )
            .await
            .map_err(db_err)?;
        let rows = tx.query(&claim, &[&keys, &hashes, &ids, &now, &cutoffs]).await.map_err(db_err)?;
        won = rows.iter().map(|r| r.get(0)).collect();
        let lost: Vec<&str> = keys.into_iter().filter(|k| !won.contains(*k)).collect();
        if !lost.is_empty() {
            let read = tx
                .prepare_cached(
                    "SELECT key, request_hash, order_id, created_at FROM idempotency_keys WHERE key = ANY($1)",
                )
                .await
                .map_err(db_err)?;
            for r in tx.query(&read, &[&lost]).await.map_err(db_err)? {
                earlier.insert(r.get(0), (r.get(1), r.get(2), r.get(3)));
            }
        }
    }

    let mut outcomes = Vec::with_capacity(orders.len());
    let mut fresh: Vec<&PreparedOrder> = Vec::with_capacity(orders.len());
    for (i, o) in orders.iter().enumerate() {
        let placed = Placed { id: o.id, created_at: now, replayed: false };
        let Some((key, hash, _)) = &o.idempotency else {
            fresh.push(o);
            outcomes.push(Ok(placed));
            continue;
        };
        let first = claimant[key.as_str()];
        let outcome = if won.contains(key) {
            if first == i {
                fresh.push(o);
                Ok(placed)
            } else if hash_of(&orders[first]) == hash {
                Ok(Placed { id: orders[first].id, created_at: now, replayed: true })
            } else {
                Err(StoreError::IdempotencyConflict)
            }
        } else {
            match earlier.get(key) {
                Some((seen, id, created_at)) if seen == hash => {
                    Ok(Placed { id: OrderId::from_uuid(*id), created_at: *created_at, replayed: true })
                }
                Some(_) => Err(StoreError::IdempotencyConflict),
                None => {
                    Err(StoreError::Other(anyhow::anyhow!("idempotency key '{key}' was claimed but is not stored")))
                }
            }
        };
        outcomes.push(outcome);
    }

    if !fresh.is_empty() {
        let ids: Vec<Uuid> = fresh.iter().map(|o| o.id.as_uuid()).collect();
        let customers: Vec<&str> = fresh.iter().map(|o| o.customer_id.as_str()).collect();
        let items: Vec<&str> = fresh.iter().map(|o| o.items.as_str()).collect();
        let bodies: Vec<&str> = fresh.iter().map(|o| o.event.as_str()).collect();
        let traces: Vec<Option<&str>> = fresh.iter().map(|o| o.traceparent.as_deref()).collect();
        let (insert_orders, insert_messages) = futures::try_join!(
            tx.prepare_cached(
                "INSERT INTO orders (id, customer_id, status, items, created_at, updated_at, traceparent)
                 SELECT id, c, 'placed', i::jsonb, $4, $4, tp
                 FROM unnest($1::uuid[], $2::text[], $3::text[], $5::text[]) AS t(id, c, i, tp)",
            ),
            // Each message names its order (schema version 7), for the order's trail.
            tx.prepare_cached(
                "INSERT INTO messages (queue, routing_key, body, order_id)
                 SELECT $1, $2, b, o FROM unnest($3::text[], $4::uuid[]) AS t(b, o)"
            ),
        )
        .map_err(db_err)?;
        // Sent together: the two statements are pipelined on the connection.
        let order_args: [&(dyn ToSql + Sync); 5] = [&ids, &customers, &items, &now, &traces];
        let message_args: [&(dyn ToSql + Sync); 4] = [&QUEUE_ORDER_EVENTS, &ROUTE_ORDER_PLACED, &bodies, &ids];
        futures::try_join!(tx.execute(&insert_orders, &order_args), tx.execute(&insert_messages, &message_args))
            .map_err(db_err)?;
    }
    if abandoned() {
        // Every caller has timed out and answered 503: keep that promise.
        tx.rollback().await.map_err(db_err)?;
        return Err(StoreError::Unavailable("every caller gave up; rolled back".into()));
    }
    tx.commit().await.map_err(db_err)?;
    Ok((outcomes, !fresh.is_empty()))
}

fn hash_of(o: &PreparedOrder) -> &str {
    o.idempotency.as_ref().map(|(_, h, _)| h.as_str()).unwrap_or_default()
}

/// How long the key of a keyed order holds.
fn ttl_of(o: &PreparedOrder) -> std::time::Duration {
    o.idempotency.as_ref().map(|(_, _, ttl)| *ttl).unwrap_or_default()
}

const ORDER_COLUMNS: &str = "id, customer_id, status, reason, items::text, created_at, updated_at, reserved_at, \
     completed_at, rejected_at, cancelled_at, shipped_at, traceparent";

fn order_from_row(r: &Row) -> Result<OrderView, StoreError> {
    let bad = |what: &str, e: String| StoreError::Other(anyhow::anyhow!("order row has a bad {what}: {e}"));
    let status: String = r.try_get(2).map_err(db_err)?;
    let items: String = r.try_get(4).map_err(db_err)?;
    let reason: Option<String> = r.try_get(3).map_err(db_err)?;
    let created_at: i64 = r.try_get(5).map_err(db_err)?;
    let mut history = vec![Transition { status: Status::Placed, reason: None, at: format_millis(created_at) }];
    let states = [
        (7, Status::Reserved),
        (8, Status::Completed),
        (9, Status::Rejected),
        (10, Status::Cancelled),
        (11, Status::Shipped),
    ];
    for (column, status) in states {
        if let Some(at) = r.try_get::<_, Option<i64>>(column).map_err(db_err)? {
            let reason = if status == Status::Rejected { reason.clone() } else { None };
            history.push(Transition { status, reason, at: format_millis(at) });
        }
    }
    Ok(OrderView {
        order_id: OrderId::from_uuid(r.try_get(0).map_err(db_err)?),
        customer_id: r.try_get(1).map_err(db_err)?,
        status: status.parse().map_err(|e: crate::domain::ValidationError| bad("status", e.message))?,
        reason,
        items: serde_json::from_str::<Vec<LineItem>>(&items).map_err(|e| bad("items", e.to_string()))?,
        created_at: format_millis(created_at),
        updated_at: format_millis(r.try_get(6).map_err(db_err)?),
        history,
        trace_id: crate::store::trace_id_of(r.try_get(12).map_err(db_err)?),
    })
}

pub(super) async fn get(client: &impl GenericClient, id: OrderId) -> Result<Option<OrderView>, StoreError> {
    let stmt =
        client.prepare_cached(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1")).await.map_err(db_err)?;
    let row = client.query_opt(&stmt, &[&id.as_uuid()]).await.map_err(db_err)?;
    row.as_ref().map(order_from_row).transpose()
}

pub(super) async fn get_many(client: &impl GenericClient, ids: &[OrderId]) -> Result<Vec<OrderView>, StoreError> {
    let ids: Vec<Uuid> = ids.iter().map(|id| id.as_uuid()).collect();
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ANY($1)");
    let stmt = client.prepare_cached(&sql).await.map_err(db_err)?;
    client.query(&stmt, &[&ids]).await.map_err(db_err)?.iter().map(order_from_row).collect()
}

pub(super) async fn statuses(
    client: &impl GenericClient,
    ids: &[OrderId],
) -> Result<Vec<(OrderId, Status)>, StoreError> {
    let ids: Vec<Uuid> = ids.iter().map(|id| id.as_uuid()).collect();
    let stmt = client.prepare_cached("SELECT id, status FROM orders WHERE id = ANY($1)").await.map_err(db_err)?;
    let rows = client.query(&stmt, &[&ids]).await.map_err(db_err)?;
    rows.iter()
        .map(|r| {
            let status: &str = r.get(1);
            let status = status.parse().map_err(|e| StoreError::Other(anyhow::anyhow!("{e}")))?;
            Ok((OrderId::from_uuid(r.get(0)), status))
        })
        .collect()
}

pub(super) async fn trail(client: &impl GenericClient, id: OrderId) -> Result<OrderTrail, StoreError> {
    let notes = client
        .prepare_cached(
            "SELECT event_id::text, kind, message, sent_at FROM notifications WHERE order_id = $1 ORDER BY sent_at",
        )
        .await
        .map_err(db_err)?;
    // The messages that name the order, through the index on `order_id`;
    // then those that name none, by their bodies (the same index's entries
    // without an order: few, unless written by hand).
    let named = client
        .prepare_cached(&format!(
            "SELECT id, queue, routing_key, attempts::bigint, last_error FROM messages WHERE order_id = $1
             ORDER BY id LIMIT {TRAIL_WAITING}"
        ))
        .await
        .map_err(db_err)?;
    let unnamed = client
        .prepare_cached(
            "SELECT id, queue, routing_key, attempts::bigint, last_error, body FROM messages
             WHERE order_id IS NULL AND body LIKE $1 ORDER BY id",
        )
        .await
        .map_err(db_err)?;
    let (uuid, pattern) = (id.as_uuid(), format!("%{id}%"));
    let (by_order, by_body): ([&(dyn ToSql + Sync); 1], [&(dyn ToSql + Sync); 1]) = ([&uuid], [&pattern]);
    let (notes, named, unnamed) = futures::try_join!(
        client.query(&notes, &by_order),
        client.query(&named, &by_order),
        client.query(&unnamed, &by_body)
    )
    .map_err(db_err)?;
    let message = |r: &Row| WaitingMessage {
        id: r.get(0),
        queue: r.get(1),
        routing_key: r.get(2),
        attempts: r.get(3),
        last_error: r.get(4),
    };
    Ok(OrderTrail {
        notifications: notes
            .iter()
            .map(|r| NotificationRecord {
                event_id: r.get(0),
                kind: r.get(1),
                message: r.get(2),
                sent_at: format_millis(r.get(3)),
            })
            .collect(),
        waiting: waiting_messages(
            id,
            named.iter().map(message).collect(),
            unnamed.iter().map(|r| (message(r), r.get::<_, &str>(5))),
        ),
    })
}

/// Rows a listing by status alone examines for one page.
pub(super) const STATUS_SCAN: i64 = 10_000;

/// Newest first, below the cursor: ids are UUIDv7, so `id < cursor` never
/// repeats or skips an order between pages.
///
/// There is no index on `status` (schema version 2), so a listing by status
/// alone walks the primary key and filters. One page looks at no more than
/// `STATUS_SCAN` orders: when too few of them match, the page is short (even
/// empty) and its cursor points below the last order it looked at, so each
/// request stays quick however rare the status, and paging still sees every
/// order once. A customer's orders are found through their own index.
pub(super) async fn list(client: &impl GenericClient, f: OrderFilter) -> Result<OrderPage, StoreError> {
    let status = f.status.map(|s| s.as_str());
    let before = f.before.map(OrderId::as_uuid);
    let floor = match (&status, &f.customer_id) {
        (Some(_), None) => {
            let stmt = client
                .prepare_cached("SELECT id FROM orders WHERE id < $1 ORDER BY id DESC OFFSET $2 LIMIT 1")
                .await
                .map_err(db_err)?;
            let row = client.query_opt(&stmt, &[&before.unwrap_or(Uuid::max()), &(STATUS_SCAN - 1)]).await;
            row.map_err(db_err)?.map(|r| r.get::<_, Uuid>(0))
        }
        _ => None,
    };
    let limit = f.limit as i64 + 1;
    let mut sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE true");
    let mut args: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(5);
    if let Some(status) = &status {
        args.push(status);
        sql.push_str(&format!(" AND status = ${}", args.len()));
    }
    if let Some(customer) = &f.customer_id {
        args.push(customer);
        sql.push_str(&format!(" AND customer_id = ${}", args.len()));
    }
    if let Some(before) = &before {
        args.push(before);
        sql.push_str(&format!(" AND id < ${}", args.len()));
    }
    if let Some(floor) = &floor {
        args.push(floor);
        sql.push_str(&format!(" AND id >= ${}", args.len()));
    }
    args.push(&limit);
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len()));
    let stmt = client.prepare_cached(&sql).await.map_err(db_err)?;
    let rows = client.query(&stmt, &args).await.map_err(db_err)?;
    let orders = rows.iter().map(order_from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(OrderPage::from_rows(orders, f.limit, floor.map(OrderId::from_uuid)))
}
