//! The SQLite store: one writer thread doing group commit, many readers.
//!
//! SQLite allows one writer at a time, so every write in the process goes to a
//! single thread that owns the write connection. It takes every job waiting in
//! its channel, runs them inside one transaction and commits once. A thread
//! beside it syncs the WAL and only then answers the callers (`sync`): under
//! load dozens of orders share one fsync, and the writer goes on with the next
//! transaction while the disk works, taking in jobs until that sync ends, so
//! that there is one commit per sync. The jobs clients wait for run first; the
//! consumers' batches, which no client waits for, come in parts and run while
//! the disk works (`run_writer`). With no job waiting and no commit being
//! synced, the writer syncs its commit itself and saves the hand-offs to that
//! thread and back. A job that may fail halfway runs in a savepoint of its
//! own, which it rolls back without touching its neighbours; placing an order
//! and applying a consumer's batch, whose statements fail only when the
//! database does, run without one and fail the whole transaction instead
//! (`Guard`). The writer's connection writes a commit's WAL frames in one
//! system call (`wal_vfs`). Reads run on a small pool of connections beside
//! it, which WAL lets proceed concurrently; a consumer reads its batch on its
//! own thread.

mod checkpoint;
mod impls;
mod orders;
mod pcache;
mod pipeline;
mod queue;
mod recent;
mod statements;
mod sync;
mod wal_vfs;

use super::StoreError;
use anyhow::Context;
use rusqlite::{Connection, OpenFlags};
use statements::Writer;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Jobs one transaction may hold; bounds latency of the unlucky last one.
const MAX_JOBS_PER_COMMIT: usize = 2048;
/// Jobs that may wait for the writer; beyond this, callers are told to back off.
const WRITER_QUEUE: usize = 16_384;

type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;

/// How a job's partial writes are undone when it fails.
#[derive(Clone, Copy)]
enum Guard {
    /// Its own savepoint: the job's writes roll back, its neighbours commit.
    Savepoint,
    /// The whole transaction rolls back (cheaper; for jobs that fail only on I/O).
    AbortOnError,
}

thread_local! {
    /// Set on the writer thread by a failed `AbortOnError` job.
    static ABORT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}
/// What the writer is asked to do.
enum Job {
    /// A write a client waits for: an order placed, stock set, a replay.
    Urgent(Work),
    /// A consumer's work, which no client waits for. With the disk idle, the
    /// writer commits the urgent jobs it has run before it takes one of
    /// these, and runs it while that commit is synced (`run_writer`).
    Background(Work),
    /// Wakes a writer holding its transaction (`sync::Syncer::hold`).
    Wake,
}

/// A job's writes; returns what to tell its caller once the commit is known.
type Work = Box<dyn FnOnce(&Writer<'_>) -> Reply + Send>;

pub struct SqliteStore {
    writer: mpsc::Sender<Job>,
    readers: Arc<ReadPool>,
    /// Bumped after every commit that queued messages, to wake consumers.
    messages: watch::Receiver<u64>,
    /// The events the writer queued lately, for this process's consumers.
    recent: Arc<recent::Recent>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub async fn open(path: &str) -> anyhow::Result<Self> {
        let path = path.to_owned();
        let conn = tokio::task::spawn_blocking({
            let path = path.clone();
            move || -> anyhow::Result<Connection> {
                let conn = open_writer(&path).with_context(|| format!("opening SQLite database {path}"))?;
                configure(&conn)?;
                migrate(&conn)?;
                Ok(conn)
            }
        })
        .await??;
        let (tx, rx) = mpsc::channel::<Job>(WRITER_QUEUE);
        let (notify, messages) = watch::channel(0u64);
        let checkpointer = checkpoint::start(&path)?;
        // The sender is weak, so that the writer still stops when the store goes.
        let writer = tx.downgrade();
        let wake_writer = move || {
            if let Some(writer) = writer.upgrade() {
                // A full queue wakes the writer by itself.
                let _ = writer.try_send(Job::Wake);
            }
        };
        let syncer = sync::start(&path, notify, wake_writer)?;
        let recent = Arc::new(recent::Recent::default());
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn({
                let recent = recent.clone();
                move || run_writer(conn, rx, syncer, checkpointer, recent)
            })
            .context("starting the SQLite writer thread")?;
        let readers = Arc::new(ReadPool { path, idle: Mutex::new(Vec::new()) });
        Ok(Self { writer: tx, readers, messages, recent })
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
        self.submit(Guard::Savepoint, Job::Urgent, f).await
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
        self.submit(Guard::AbortOnError, Job::Urgent, f).await
    }

    /// Like `write`, for work no client waits for (`Job::Background`).
    async fn write_in_background<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Writer<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(Guard::Savepoint, Job::Background, f).await
    }

    async fn submit<T, F>(&self, guard: Guard, kind: fn(Work) -> Job, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Writer<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        outcome(self.send(guard, kind, f)?).await
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
                Guard::AbortOnError => {
                    let result = f(conn);
                    if matches!(result, Err(StoreError::Other(_) | StoreError::Unavailable(_))) {
                        ABORT.set(true);
                    }
                    result
                }
            };
            Box::new(move |commit: Result<(), String>| {
                let outcome = match commit {
                    Ok(()) => result,
                    Err(e) => Err(StoreError::Unavailable(format!("commit failed: {e}"))),
                };
                let _ = tx.send(outcome);
            })
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

/// Opens a connection. Every connection of the process is opened here, so
/// that SQLite gets its page cache (`pcache`) before it initializes.
fn connect(path: impl AsRef<std::path::Path>, flags: OpenFlags) -> rusqlite::Result<Connection> {
    pcache::install();
    Connection::open_with_flags(path, flags)
}

/// The writer's connection, which writes a commit's WAL frames in one system
/// call (`wal_vfs`) where the VFS could be set up.
fn open_writer(path: &str) -> rusqlite::Result<Connection> {
    pcache::install();
    if wal_vfs::register() {
        Connection::open_with_flags_and_vfs(path, OpenFlags::default(), wal_vfs::NAME)
    } else {
        connect(path, OpenFlags::default())
    }
}

fn configure(conn: &Connection) -> anyhow::Result<()> {
    conn.pragma_update(None, "busy_timeout", 5000)?;
    enable_wal(conn)?;
    // Commits do not wait for the disk; the `sync` thread syncs the WAL
    // before anyone is told a write succeeded.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Room for every other statement the writer runs (the per-order ones are
    // kept apart, `statements`). The cache is LRU:
    // with the default 16, a busy mix of orders with idempotency keys and
    // rejections would evict and prepare statements again on every commit.
    conn.set_prepared_statement_cache_capacity(64);
    // A modest page cache: SQLite walks all of it on every commit.
    conn.pragma_update(None, "cache_size", -8192)?;
    // Checkpoint less often: the hot pages (the tails of each index) are
    // rewritten by every commit, and a longer WAL copies each of them once.
    // The copying itself is mostly done beside the writer (`checkpoint`).
    conn.pragma_update(None, "wal_autocheckpoint", 16384)?;
    // Savepoints keep the pages they change in memory, not in a temporary file.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Read pages through a mapping instead of a system call per page.
    conn.pragma_update(None, "mmap_size", 1i64 << 30)?;
    Ok(())
}

/// Switches a database to WAL mode (a no-op once it is). Processes opening a
/// new database together contend for the switch, and SQLite reports that as
/// busy at once, without waiting, so it is tried again for a while.
fn enable_wal(conn: &Connection) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            result => return result.context("enabling WAL"),
        }
    }
}

/// The schema, one script per version; `user_version` says how many have run.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite.sql"),
    include_str!("../migrations/sqlite-2.sql"),
    include_str!("../migrations/sqlite-3.sql"),
    include_str!("../migrations/sqlite-4.sql"),
];

/// Brings the schema up to date, one version per transaction. The version is
/// read again under the write lock, so processes that start together take
/// turns and each step runs once.
fn migrate(conn: &Connection) -> anyhow::Result<()> {
    let version = |conn: &Connection| conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0));
    for (n, script) in MIGRATIONS.iter().enumerate().skip(version(conn)?.max(0) as usize) {
        let n = n as i64 + 1;
        conn.execute_batch("BEGIN IMMEDIATE").context("locking the database to migrate it")?;
        let step = version(conn).map_err(anyhow::Error::from).and_then(|current| {
            if current < n {
                conn.execute_batch(&format!("{script} PRAGMA user_version = {n};"))?;
            }
            Ok(())
        });
        match step {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e.context(format!("migrating the SQLite schema to version {n}")));
            }
        }
    }
    Ok(())
}

/// Runs one job; a panic in it fails the whole transaction, not the writer.
fn run_job(work: Work, conn: &Writer<'_>) -> Reply {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(conn))) {
        Ok(reply) => reply,
        Err(_) => {
            tracing::error!("a store job panicked; rolling its transaction back");
            ABORT.set(true);
            Box::new(|_| ())
        }
    }
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

/// Where the writer's time went in one round: waiting for work, running jobs,
/// holding the transaction open while the last commit was synced, committing.
/// Counted as `orderflow_store_writer_microseconds_total{phase}`.
#[derive(Default)]
struct WriterTime {
    idle: Duration,
    exec: Duration,
    hold: Duration,
    commit: Duration,
}

impl WriterTime {
    fn record(&self) {
        count_time(
            "orderflow_store_writer_microseconds_total",
            [("idle", self.idle), ("exec", self.exec), ("hold", self.hold), ("commit", self.commit)],
        );
    }
}

/// Adds each phase's time to `counter{phase}`, in microseconds.
fn count_time<const N: usize>(counter: &'static str, phases: [(&'static str, Duration); N]) {
    for (phase, time) in phases {
        metrics::counter!(counter, "phase" => phase).increment(time.as_micros() as u64);
    }
}

/// Makes a commit durable: on the writer's own thread when it has nothing
/// else to do (`idle`) and no other commit waits for a sync, since the
/// hand-off to the sync thread and back would only add to its callers' wait;
/// else on the sync thread, while the writer goes on. Gives the commit back
/// when a sync has failed.
fn sync_or_hand_over(syncer: &sync::Syncer, idle: bool, commit: sync::Commit) -> Result<(), sync::Commit> {
    let commit = if idle {
        match syncer.sync_here(commit) {
            Ok(()) => return Ok(()),
            Err(commit) => commit,
        }
    } else {
        commit
    };
    syncer.send(commit)
}

/// The jobs the writer has taken from its channel and not yet run, urgent
/// and background apart.
#[derive(Default)]
struct Pending {
    urgent: VecDeque<Work>,
    background: VecDeque<Work>,
}

impl Pending {
    fn push(&mut self, job: Job) {
        match job {
            Job::Urgent(work) => self.urgent.push_back(work),
            Job::Background(work) => self.background.push_back(work),
            // Taking it was the point.
            Job::Wake => {}
        }
    }

    /// Takes what waits in the channel, up to a transaction's worth of jobs.
    fn take_from(&mut self, rx: &mut mpsc::Receiver<Job>) {
        while self.len() < MAX_JOBS_PER_COMMIT {
            match rx.try_recv() {
                Ok(job) => self.push(job),
                Err(_) => break,
            }
        }
    }

    fn len(&self) -> usize {
        self.urgent.len() + self.background.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The writer's loop: one transaction per round.
///
/// A round runs the urgent jobs first, those clients wait for. Once it has
/// run some and the disk is idle, it commits at once and hands the commit to
/// the sync thread, and the background jobs, a consumer's parts of a batch,
/// run in the next round while the disk works. A consumer's part of a batch
/// thus never stands between a client and its answer for longer than the
/// part it is running. So that background jobs are never starved when syncs
/// are quick, a round after one that committed early with background jobs
/// waiting runs one of them before it may commit early itself.
///
/// While an earlier commit is being synced, a commit now would wait for that
/// sync anyway: the round keeps taking and running jobs until it ends, so
/// that there is about one commit per sync. Fewer, larger commits write each
/// hot page to the WAL fewer times.
fn run_writer(
    conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    syncer: sync::Syncer,
    checkpointer: checkpoint::Waker,
    recent: Arc<recent::Recent>,
) {
    let conn = Writer::new(&conn, recent);
    let mut pending = Pending::default();
    let mut idle_since = Instant::now();
    // The last round committed early, leaving background jobs waiting.
    let mut background_owed = false;
    loop {
        while pending.is_empty() {
            match rx.blocking_recv() {
                Some(job) => pending.push(job),
                None => return,
            }
        }
        let began = Instant::now();
        let mut time = WriterTime { idle: began - idle_since, ..WriterTime::default() };
        let mut replies: Vec<Reply> = Vec::with_capacity(MAX_JOBS_PER_COMMIT);
        let outcome = match conn.begin() {
            Ok(()) => {
                let (mut urgent_ran, mut background_ran) = (false, false);
                while replies.len() < MAX_JOBS_PER_COMMIT && !ABORT.get() {
                    pending.take_from(&mut rx);
                    let owed = background_owed && !background_ran && !pending.background.is_empty();
                    if let Some(work) = pending.urgent.pop_front() {
                        urgent_ran = true;
                        replies.push(run_job(work, &conn));
                    } else if urgent_ran && !owed && syncer.idle() {
                        break;
                    } else if let Some(work) = pending.background.pop_front() {
                        background_ran = true;
                        replies.push(run_job(work, &conn));
                    } else if syncer.hold() {
                        let holding = Instant::now();
                        let Some(job) = rx.blocking_recv() else { break };
                        time.hold += holding.elapsed();
                        pending.push(job);
                    } else {
                        break;
                    }
                }
                background_owed = !pending.background.is_empty();
                let committing = Instant::now();
                time.exec = committing - began - time.hold;
                let outcome = if ABORT.replace(false) {
                    let _ = conn.execute_batch("ROLLBACK");
                    Err("a write failed; the transaction was rolled back".to_owned())
                } else {
                    conn.commit().map_err(|e| {
                        let _ = conn.execute_batch("ROLLBACK");
                        e.to_string()
                    })
                };
                time.commit = committing.elapsed();
                outcome
            }
            Err(e) => {
                // The jobs are dropped: their callers hear that the writer failed them.
                pending = Pending::default();
                Err(e.to_string())
            }
        };
        checkpointer.wake();
        time.record();
        idle_since = Instant::now();
        metrics::counter!("orderflow_store_commits_total").increment(1);
        metrics::counter!("orderflow_store_jobs_total").increment(replies.len() as u64);
        let queued = orders::QUEUED.replace(false);
        let (replies, error) = match outcome {
            Ok(()) => {
                let idle = pending.is_empty() && rx.is_empty();
                let handed_over = sync_or_hand_over(&syncer, idle, sync::Commit { replies, queued });
                // A sync made here counts as the sync's time, not as the writer's idle time.
                idle_since = Instant::now();
                match handed_over {
                    Ok(()) => continue,
                    Err(commit) => (commit.replies, "an earlier sync of the WAL failed".to_owned()),
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "SQLite commit failed");
                (replies, e)
            }
        };
        for reply in replies {
            reply(Err(error.clone()));
        }
        if syncer.failed() {
            // Dropping the channel fails every write still waiting, and later ones.
            return;
        }
    }
}

/// Read connections, opened on demand and kept for reuse.
struct ReadPool {
    path: String,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    fn get(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().expect("read pool lock").pop() {
            return Ok(conn);
        }
        let conn = connect(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|e| StoreError::Unavailable(format!("opening a read connection: {e}")))?;
        conn.pragma_update(None, "busy_timeout", 5000).map_err(db_err)?;
        Ok(conn)
    }

    fn put(&self, conn: Connection) {
        let mut idle = self.idle.lock().expect("read pool lock");
        if idle.len() < 16 {
            idle.push(conn);
        }
    }
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
mod tests {
    use super::{connect, SqliteStore, MIGRATIONS};
    use crate::domain::{CustomerId, LineItem, NewOrder, OrderId, Quantity, Sku, Status};
    use crate::store::{OrderFilter, PlaceOrder, Store};
    use rusqlite::{Connection, OpenFlags};
    use std::time::Duration;

    /// A database made by an earlier version keeps its orders, loses the
    /// index on `status`, and still finds its orders by status.
    #[tokio::test]
    async fn a_version_1_database_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        let (done, failed) = (OrderId::new(), OrderId::new());
        let v1 = connect(&path, OpenFlags::default()).unwrap();
        v1.execute_batch(&format!("{} PRAGMA user_version = 1;", MIGRATIONS[0])).unwrap();
        for (id, status, at) in [(done, "completed", "completed_at"), (failed, "rejected", "rejected_at")] {
            v1.execute(
                &format!(
                    "INSERT INTO orders (id, customer_id, status, items, created_at, updated_at, {at})
                     VALUES (?1, 'c1', ?2, '[]', 1, 2, 2)"
                ),
                [id.to_string(), status.to_owned()],
            )
            .unwrap();
        }
        drop(v1);

        let store = SqliteStore::open(&path.to_string_lossy()).await.unwrap();
        for (status, id) in [(Status::Completed, Some(done)), (Status::Rejected, Some(failed)), (Status::Placed, None)]
        {
            let filter = OrderFilter { status: Some(status), customer_id: None, before: None, limit: 10 };
            let found: Vec<OrderId> =
                store.list_orders(filter).await.unwrap().orders.iter().map(|o| o.order_id).collect();
            assert_eq!(found, Vec::from_iter(id), "{status}");
        }
        assert_current(&path);
    }

    /// A client's write that arrives while a consumer's part of a batch runs
    /// is committed once that part is done, with the disk idle, not after the
    /// consumer's next part: that one waits here until the client has its
    /// answer, so a writer that held the client's write behind it would time
    /// out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_clients_write_is_committed_before_the_background_work_queued_ahead_of_it() {
        use super::{outcome, Guard, Job};
        use crate::store::StoreError;
        use std::sync::mpsc::channel;
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("orders.db").to_str().unwrap()).await.unwrap();
        let (running, started) = channel::<()>();
        let (go, wait_for_go) = channel::<()>();
        let (release, wait_for_release) = channel::<()>();
        let waited = |r: Result<(), std::sync::mpsc::RecvTimeoutError>| {
            r.map_err(|e| StoreError::Other(anyhow::anyhow!("not told to go on: {e}")))
        };
        let first = store
            .send(Guard::AbortOnError, Job::Background, move |_| {
                running.send(()).unwrap();
                waited(wait_for_go.recv_timeout(Duration::from_secs(30)))
            })
            .unwrap();
        let second = store
            .send(Guard::AbortOnError, Job::Background, move |_| {
                waited(wait_for_release.recv_timeout(Duration::from_secs(30)))
            })
            .unwrap();
        started.recv_timeout(Duration::from_secs(10)).expect("the first background job runs");
        let client = store.send(Guard::Savepoint, Job::Urgent, |c| super::pipeline::set_stock(c, "tea", 7)).unwrap();
        go.send(()).unwrap();

        tokio::time::timeout(Duration::from_secs(10), outcome(client))
            .await
            .expect("the client's write waited for the background job queued ahead of it")
            .unwrap();
        let stock = store.list_stock().await.unwrap();
        assert_eq!((stock[0].sku.as_str(), stock[0].available), ("tea", 7));
        release.send(()).unwrap();
        outcome(first).await.unwrap();
        outcome(second).await.unwrap();
    }

    /// A batch larger than a part is applied and settled part by part, in
    /// order, as one call: every order reserved, every message gone, and the
    /// stock taken once per order.
    #[tokio::test]
    async fn a_batch_of_many_parts_is_applied_and_settled_whole() {
        use crate::broker::RetryPolicy;
        use crate::store::{Effect, QueueStore, QUEUE_ORDER_EVENTS};
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("orders.db").to_str().unwrap()).await.unwrap();
        store.set_stock("tea", 1000).await.unwrap();
        let n = 3 * super::impls::SETTLE_PART + 5;
        let mut ids = Vec::new();
        for _ in 0..n {
            ids.push(store.place_order(order()).await.unwrap().id);
        }
        let consumed =
            store.consume("inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 512, RetryPolicy::default()).await.unwrap();
        assert_eq!((consumed.taken, consumed.applied.len()), (n, n));
        let applied: Vec<OrderId> = consumed.applied.iter().map(|e| e.order_id).collect();
        assert_eq!(applied, ids, "applied in the order placed");
        for id in ids {
            assert_eq!(store.get_order(id).await.unwrap().unwrap().status, Status::Reserved);
        }
        assert_eq!(store.list_stock().await.unwrap()[0].available, 1000 - n as i64);
        let again =
            store.consume("inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 512, RetryPolicy::default()).await.unwrap();
        assert_eq!(again.taken, 0, "every message was settled");
    }

    fn order() -> PlaceOrder {
        let items = vec![LineItem { sku: Sku::parse("tea").unwrap(), quantity: Quantity::parse(1).unwrap() }];
        let order = NewOrder::new(CustomerId::parse("c1").unwrap(), items).unwrap();
        PlaceOrder { id: OrderId::new(), order, idempotency: None }
    }

    /// The ids of every queued message, in order.
    pub(super) fn message_ids(conn: &Connection) -> Vec<i64> {
        conn.prepare("SELECT id FROM messages ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// A consumer deletes the messages it settled by id, so no id is given
    /// out twice: not after the queue drains, not by another process's
    /// writer, and not after a migration from the schema that used
    /// AUTOINCREMENT.
    #[tokio::test]
    async fn message_ids_are_never_given_out_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids.db");
        // A version 2 database whose newest messages were consumed: SQLite's
        // own counter is ahead of every id left.
        let v2 = connect(&path, OpenFlags::default()).unwrap();
        v2.execute_batch(&format!("{} {} PRAGMA user_version = 2;", MIGRATIONS[0], MIGRATIONS[1])).unwrap();
        for _ in 0..3 {
            v2.execute(
                "INSERT INTO messages (queue, routing_key, body) VALUES ('order-events', 'order.placed', '{}')",
                [],
            )
            .unwrap();
        }
        v2.execute("DELETE FROM messages WHERE id > 1", []).unwrap();
        drop(v2);

        let name = path.to_string_lossy();
        let store = SqliteStore::open(&name).await.unwrap();
        let raw = connect(&path, OpenFlags::default()).unwrap();
        assert_eq!(message_ids(&raw), [1], "a queued message keeps its id");
        store.place_order(order()).await.unwrap();
        assert_eq!(message_ids(&raw), [1, 4]);

        // The queue drains; the next id is still a new one.
        raw.execute("DELETE FROM messages", []).unwrap();
        store.place_order(order()).await.unwrap();
        assert_eq!(message_ids(&raw), [5]);

        // A second store on the same file, as another process would open it.
        let other = SqliteStore::open(&name).await.unwrap();
        raw.execute("DELETE FROM messages", []).unwrap();
        other.place_order(order()).await.unwrap();
        store.place_order(order()).await.unwrap();
        assert_eq!(message_ids(&raw), [6, 7]);
    }

    /// Schema version 4 moves each queue's messages to a table of its own,
    /// with their delivery state; messages of a queue no consumer reads
    /// become dead letters. The `messages` view still takes hand-written
    /// messages, with new ids, and refuses a queue that does not exist.
    #[tokio::test]
    async fn a_version_3_queue_is_split_into_a_table_per_queue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.db");
        let v3 = connect(&path, OpenFlags::default()).unwrap();
        v3.execute_batch(&format!("{} {} {} PRAGMA user_version = 3;", MIGRATIONS[0], MIGRATIONS[1], MIGRATIONS[2]))
            .unwrap();
        v3.execute_batch(
            "INSERT INTO messages (id, queue, routing_key, body, attempts, available_at, last_error) VALUES
                 (3, 'inventory-events', 'inventory.reserved', '{\"a\":1}', 2, 99, 'order not found'),
                 (5, 'order-events', 'order.placed', '{\"b\":2}', 0, 0, NULL),
                 (7, 'audit', 'order.placed', '{\"c\":3}', 1, 0, NULL);
             UPDATE message_ids SET last = 9;",
        )
        .unwrap();
        drop(v3);

        let store = SqliteStore::open(&path.to_string_lossy()).await.unwrap();
        let raw = connect(&path, OpenFlags::default()).unwrap();
        let rows = |sql: &str| -> Vec<String> {
            raw.prepare(sql)
                .unwrap()
                .query_map([], |r| r.get::<_, String>(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(
            rows("SELECT id || ' ' || routing_key || ' ' || attempts || ' ' || available_at || ' ' || coalesce(last_error, '-') FROM queue_inventory_events"),
            ["3 inventory.reserved 2 99 order not found"]
        );
        assert_eq!(rows("SELECT id || ' ' || body FROM queue_order_events"), ["5 {\"b\":2}"]);
        assert_eq!(
            rows("SELECT queue || ' ' || body || ' ' || error FROM dead_letters"),
            ["audit {\"c\":3} no such queue"]
        );
        assert_eq!(
            rows("SELECT id || ' ' || queue FROM messages ORDER BY id"),
            ["3 inventory-events", "5 order-events"]
        );
        assert_eq!(rows("SELECT name FROM sqlite_master WHERE name = 'messages_by_queue'"), Vec::<String>::new());

        // A message written by hand gets an id after every one given out,
        // and the writer's next one comes after it.
        raw.execute(
            "INSERT INTO messages (queue, routing_key, body) VALUES ('order-events', 'order.placed', '{}')",
            [],
        )
        .unwrap();
        assert_eq!(rows("SELECT CAST(id AS TEXT) FROM queue_order_events ORDER BY id"), ["5", "10"]);
        store.place_order(order()).await.unwrap();
        assert_eq!(rows("SELECT CAST(id AS TEXT) FROM queue_order_events ORDER BY id"), ["5", "10", "11"]);
        let refused = raw.execute("INSERT INTO messages (queue, routing_key, body) VALUES ('audit', 'x', '{}')", []);
        assert!(refused.unwrap_err().to_string().contains("no such queue"));

        // Updates and deletes through the view reach the queue's table.
        raw.execute("UPDATE messages SET attempts = 4 WHERE id = 3", []).unwrap();
        raw.execute("DELETE FROM messages WHERE id = 5", []).unwrap();
        assert_eq!(rows("SELECT id || ' ' || attempts FROM messages ORDER BY id"), ["3 4", "10 0", "11 0"]);
        assert_current(&path);
    }

    #[tokio::test]
    async fn stores_opened_together_on_a_new_database_all_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        let name = path.to_string_lossy();
        let opened = futures::future::join_all((0..4).map(|_| SqliteStore::open(&name))).await;
        for result in opened {
            if let Err(e) = result {
                panic!("a store did not open: {e:#}");
            }
        }
        assert_current(&path);
    }

    /// The database is at the latest version, with the latest indexes.
    fn assert_current(path: &std::path::Path) {
        let conn = connect(path, OpenFlags::default()).unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'orders' AND sql IS NOT NULL ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(indexes, ["orders_by_customer", "orders_completed", "orders_open", "orders_rejected"]);
    }
}
