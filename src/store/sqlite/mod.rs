//! The SQLite store: one writer thread doing group commit, many readers.
//!
//! SQLite allows one writer at a time, so every write in the process goes to
//! a single thread that owns the write connection (`writer`): it runs every
//! job waiting in its channel in one transaction and commits once, and the
//! commit's sync covers them all. A job that may fail halfway runs in a
//! savepoint of its own, which it rolls back without touching its
//! neighbours; placing an order and applying a consumer's batch, whose
//! statements fail only when the database does, run without one and fail the
//! whole transaction instead (`Guard`). Reads run on a small pool of
//! connections beside it, which WAL lets proceed concurrently; a consumer
//! reads its batch on its own thread. A thread beside the writer copies the
//! WAL into the database (`checkpoint`). Connections are plain SQLite,
//! opened in one place (`connection`).

mod checkpoint;
mod connection;
mod effects;
mod orders;
mod prune;
mod queue;
mod recent;
mod statements;
mod traits;
mod writer;

pub use connection::SqliteOptions;

use super::StoreError;
use anyhow::Context;
use connection::{Opener, ReadPool};
use rusqlite::Connection;
use statements::Writer;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use writer::{Failure, Job, Ran, Work};

/// How a job's partial writes are undone when it fails.
#[derive(Clone, Copy)]
enum Guard {
    /// Its own savepoint: the job's writes roll back, its neighbours commit.
    Savepoint,
    /// The whole transaction rolls back (cheaper; for jobs that fail only on I/O).
    AbortOnError,
}

pub struct SqliteStore {
    writer: mpsc::Sender<Job>,
    readers: Arc<ReadPool>,
    /// Bumped after every commit that queued messages, to wake consumers.
    messages: watch::Receiver<u64>,
    /// The events the writer queued lately, for this process's consumers.
    recent: Arc<recent::Recent>,
    /// Bumped after each commit of this store that moved an order's status.
    statuses: watch::Sender<u64>,
    /// The ids behind each `statuses` bump, for `GET /events`.
    moved: tokio::sync::broadcast::Sender<crate::store::MovedOrders>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub async fn open(path: &str) -> anyhow::Result<Self> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Like `open`, with the files opened as `options` say.
    pub async fn open_with(path: &str, options: SqliteOptions) -> anyhow::Result<Self> {
        let opener = Opener { path: path.to_owned(), options };
        let conn = tokio::task::spawn_blocking({
            let opener = opener.clone();
            move || -> anyhow::Result<Connection> {
                let conn = opener.writer()?;
                connection::migrate(&conn)?;
                Ok(conn)
            }
        })
        .await??;
        let (tx, rx) = mpsc::channel::<Job>(writer::WRITER_QUEUE);
        let (messages_tx, messages) = watch::channel(0u64);
        let recent = Arc::new(recent::Recent::default());
        let cx = writer::Context {
            opener: opener.clone(),
            messages: messages_tx,
            checkpointer: checkpoint::start(opener.clone())?,
            recent: recent.clone(),
        };
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer::run(conn, rx, cx))
            .context("starting the SQLite writer thread")?;
        let statuses = watch::Sender::new(0);
        let moved = tokio::sync::broadcast::Sender::new(crate::store::MOVED_BACKLOG);
        Ok(Self { writer: tx, readers: Arc::new(ReadPool::new(opener)), messages, recent, statuses, moved })
    }

    /// Runs `f` inside the next group commit and returns its result once the
    /// transaction is durable. Fails fast with `Unavailable` when the writer's
    /// queue is full, so an overloaded process sheds load instead of queueing
    /// without bound.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Writer<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        outcome(self.send(Guard::Savepoint, Job::Urgent, f)?).await
    }

    /// Like `write`, without the savepoint, for jobs whose writes fail only
    /// when the database itself does: their checks come before their first
    /// write, or their statements cannot fail on their input. A database
    /// error in one fails the whole transaction rather than leave half of the
    /// job behind. A savepoint copies every page its job changes before the
    /// change, in case it must be undone.
    async fn write_checked_first<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Writer<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        outcome(self.send(Guard::AbortOnError, Job::Urgent, f)?).await
    }

    /// Like `write`, for work no client waits for (`Job::Background`).
    async fn write_in_background<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Writer<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        outcome(self.send(Guard::Savepoint, Job::Background, f)?).await
    }

    /// Queues `f` for the writer as the job `kind` makes of it, and returns
    /// at once: the result comes once the job's commit is durable (`outcome`).
    fn send<T, F>(
        &self,
        guard: Guard,
        kind: fn(Work) -> Job,
        f: F,
    ) -> Result<oneshot::Receiver<Result<T, StoreError>>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Writer<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, StoreError>>();
        let work: Work = Box::new(move |conn| {
            let result = match guard {
                Guard::Savepoint => in_savepoint(conn, f),
                Guard::AbortOnError => f(conn),
            };
            let fails_round = matches!(guard, Guard::AbortOnError)
                && matches!(result, Err(StoreError::Other(_) | StoreError::Unavailable(_)));
            let reply = Box::new(move |round: Result<(), Failure>| {
                let _ = tx.send(round.map_err(StoreError::from).and(result));
            });
            Ran { reply, fails_round }
        });
        self.writer.try_send(kind(work)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::Unavailable("write queue is full".into()),
            mpsc::error::TrySendError::Closed(_) => StoreError::Unavailable("writer has stopped".into()),
        })?;
        Ok(rx)
    }

    /// Runs `f` on a read connection, off the async threads.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.get()?;
            let result = f(&conn);
            pool.put(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Other(anyhow::anyhow!("read task failed: {e}")))?
    }

    /// Runs a short read on the calling thread. A consumer's batch is read
    /// from pages the writer has just written, still in memory: a hop to a
    /// blocking thread and back would cost more than the read itself.
    fn read_here<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let conn = self.readers.get()?;
        let result = f(&conn);
        self.readers.put(conn);
        result
    }
}

/// What a job sent to the writer came to, once its commit is durable.
async fn outcome<T>(reply: oneshot::Receiver<Result<T, StoreError>>) -> Result<T, StoreError> {
    reply.await.map_err(|_| StoreError::Unavailable("writer has stopped".into()))?
}

fn in_savepoint<T>(conn: &Writer<'_>, f: impl FnOnce(&Writer<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
    run(conn, "SAVEPOINT job").map_err(db_err)?;
    let result = f(conn);
    if result.is_err() {
        run(conn, "ROLLBACK TO job").map_err(db_err)?;
    }
    run(conn, "RELEASE job").map_err(db_err)?;
    result
}

/// Runs a statement without parameters, prepared once per connection.
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql).and_then(|mut s| s.execute([])).map(drop)
}

/// A UUID as the tables hold it (hyphenated, lower case), written into
/// `buf` rather than into a new `String`: the writer binds a few per order.
fn uuid_text(id: uuid::Uuid, buf: &mut [u8; 36]) -> &str {
    id.as_hyphenated().encode_lower(buf)
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Other(anyhow::Error::new(e))
}

#[cfg(test)]
mod tests;
