//! The reference for `bench/run`: the bare hot path of an order service on
//! the same stack, with none of orderflow's pipeline. axum answers
//! `POST /orders`; one thread owns a SQLite connection (WAL, `synchronous =
//! FULL`) and writes every order waiting in its channel, with its outbox row,
//! in one transaction (group commit); each request gets its `202` once that
//! commit has synced. There is no validation beyond the JSON's shape, no
//! inventory, no consumers, no indexes beyond the keys.
//!
//! Usage: bare-hot-path DATABASE_FILE [LISTEN]   (default 127.0.0.1:0)
//! It prints `listening on ADDR` once it accepts connections.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use rusqlite::{params, Connection};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Deserialize)]
struct OrderBody {
    customer_id: String,
    items: Vec<Item>,
}

#[derive(Deserialize, serde::Serialize)]
struct Item {
    sku: String,
    quantity: u32,
}

/// An order for the writer, and where to say that it is on disk.
struct Job {
    id: String,
    customer_id: String,
    items: String,
    done: oneshot::Sender<bool>,
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or_else(|| anyhow::anyhow!("usage: bare-hot-path DATABASE_FILE [LISTEN]"))?;
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let conn = Connection::open(&path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, customer_id TEXT NOT NULL,
             items TEXT NOT NULL, status TEXT NOT NULL, created_at INTEGER NOT NULL) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
    )?;
    let (tx, rx) = mpsc::channel::<Job>(16_384);
    std::thread::Builder::new().name("writer".into()).spawn(move || write(conn, rx))?;
    tokio::runtime::Runtime::new()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        println!("listening on {}", listener.local_addr()?);
        let app = Router::new().route("/orders", post(place)).with_state(tx);
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}

async fn place(
    axum::extract::State(writer): axum::extract::State<mpsc::Sender<Job>>,
    Json(body): Json<OrderBody>,
) -> Response {
    let id = uuid::Uuid::now_v7().to_string();
    let items = serde_json::to_string(&body.items).expect("items serialize");
    let (done, on_disk) = oneshot::channel();
    let job = Job { id: id.clone(), customer_id: body.customer_id, items, done };
    if writer.try_send(job).is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match on_disk.await {
        Ok(true) => {
            (StatusCode::ACCEPTED, Json(serde_json::json!({ "order_id": id, "status": "accepted" }))).into_response()
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Group commit: every order waiting goes into one transaction.
fn write(conn: Connection, mut rx: mpsc::Receiver<Job>) {
    let mut batch = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while let Ok(job) = rx.try_recv() {
            batch.push(job);
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let commit = (|| -> rusqlite::Result<()> {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let mut order = conn.prepare_cached(
                "INSERT INTO orders (id, customer_id, items, status, created_at) VALUES (?1, ?2, ?3, 'placed', ?4)",
            )?;
            let mut outbox = conn.prepare_cached("INSERT INTO outbox (body) VALUES (?1)")?;
            for job in &batch {
                order.execute(params![job.id, job.customer_id, job.items, now as i64])?;
                let event = serde_json::json!({
                    "type": "OrderPlaced", "order_id": job.id, "customer_id": job.customer_id, "items": job.items,
                });
                outbox.execute([event.to_string()])?;
            }
            conn.execute_batch("COMMIT")
        })();
        if commit.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for job in batch.drain(..) {
            let _ = job.done.send(commit.is_ok());
        }
    }
}
