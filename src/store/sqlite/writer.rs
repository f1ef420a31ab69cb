//! The writer thread: every write of the process, one transaction per round.
//!
//! SQLite allows one writer at a time, so the store sends every write to this
//! thread. A round takes the jobs waiting in its channel, runs them in one
//! transaction and commits once: with `synchronous=FULL` the commit syncs the
//! WAL itself, so when it returns the round is durable and its callers are
//! answered. Jobs that arrive during a commit's sync make up the next round:
//! under load many orders share one sync (group commit).
//!
//! The jobs clients wait for (orders, stock, replays) run first in a round; a
//! consumer's batch comes in parts (background jobs) and a round runs a few
//! of them after its urgent jobs, so that an order waits behind little of it.
//!
//! A round either commits whole or fails whole. A job that fails on its own
//! input rolls back its savepoint and its neighbours commit; a database error
//! fails the round. After some errors (I/O, a full disk, an interrupt) SQLite
//! rolls the whole transaction back by itself and returns the connection to
//! autocommit: the writer checks for that after every job, so that no job of
//! the round runs outside the round's transaction. When a commit fails, what
//! the disk holds is unknown (its frames may be on disk, unpublished): its
//! callers hear `OutcomeUnknown`, and the writer closes its connection and
//! opens a new one before it runs anything else, as after any failed round.

use super::connection::Opener;
use super::recent::Recent;
use super::statements::Writer;
use crate::store::StoreError;
use rusqlite::Connection;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Jobs one transaction may hold; bounds latency of the unlucky last one.
const MAX_JOBS_PER_COMMIT: usize = 2048;
/// Background jobs (parts of consumers' batches) a round runs after its
/// urgent ones: enough to keep the consumers up with the orders, few enough
/// that an order is not kept waiting long behind them.
const BACKGROUND_PER_ROUND: usize = 8;
/// Jobs that may wait for the writer; beyond this, callers are told to back off.
pub(super) const WRITER_QUEUE: usize = 16_384;

/// How a round that did not commit ended, as its callers hear it.
#[derive(Debug, Clone)]
pub(super) enum Failure {
    /// Nothing of the round was committed.
    RolledBack(String),
    /// The commit failed: the round may or may not be on disk.
    Unknown(String),
}

impl From<Failure> for StoreError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::RolledBack(why) => StoreError::Unavailable(why),
            Failure::Unknown(why) => StoreError::OutcomeUnknown(why),
        }
    }
}

/// Answers a job's caller once its round's fate is known.
pub(super) type Reply = Box<dyn FnOnce(Result<(), Failure>) + Send>;

/// What running a job left: its reply, and whether it failed in a way that
/// fails its round (a database error in a job without its own savepoint).
pub(super) struct Ran {
    pub reply: Reply,
    pub fails_round: bool,
}

/// A job's writes.
pub(super) type Work = Box<dyn FnOnce(&Writer<'_>) -> Ran + Send>;

/// What the writer is asked to do.
pub(super) enum Job {
    /// A write a client waits for: an order placed, stock set, a replay.
    Urgent(Work),
    /// A part of a consumer's batch, which no client waits for.
    Background(Work),
}

/// The jobs the writer has taken from its channel and not yet run.
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
}

/// What the writer thread needs besides its jobs.
pub(super) struct Context {
    pub opener: Opener,
    /// Bumped after every commit that queued messages, to wake consumers.
    pub messages: watch::Sender<u64>,
    /// Nudged after every commit (`checkpoint`).
    pub checkpointer: super::checkpoint::Waker,
    pub recent: Arc<Recent>,
    pub meters: Meters,
}

/// The writer's metrics, resolved once: a round records without a lookup.
pub(super) struct Meters {
    commits: metrics::Counter,
    jobs: metrics::Counter,
    batch: metrics::Histogram,
    exec: metrics::Histogram,
    commit: metrics::Histogram,
}

impl Meters {
    pub(super) fn new() -> Self {
        use crate::telemetry::catalog::{
            BATCH_SIZE, STAGE_STORE_WRITER, STORE_COMMITS, STORE_JOBS, STORE_WRITER_DURATION,
        };
        Self {
            commits: metrics::counter!(STORE_COMMITS),
            jobs: metrics::counter!(STORE_JOBS),
            batch: metrics::histogram!(BATCH_SIZE, "stage" => STAGE_STORE_WRITER),
            exec: metrics::histogram!(STORE_WRITER_DURATION, "phase" => "exec"),
            commit: metrics::histogram!(STORE_WRITER_DURATION, "phase" => "commit"),
        }
    }
}

/// The writer's loop: rounds on one connection until a round fails, then a
/// new connection. Returns when every sender of jobs is gone.
pub(super) fn run(first: Connection, mut rx: mpsc::Receiver<Job>, cx: Context) {
    let mut conn = Some(first);
    let mut pending = Pending::default();
    loop {
        let Some(open) = conn.take() else {
            match reopen(&cx.opener, &mut rx, &mut pending) {
                Some(open) => conn = Some(open),
                None => return,
            }
            continue;
        };
        let writer = Writer::new(&open, cx.recent.clone());
        loop {
            if pending.len() == 0 {
                match rx.blocking_recv() {
                    Some(job) => pending.push(job),
                    None => return,
                }
            }
            if !round(&writer, &mut rx, &mut pending, &cx) {
                break;
            }
        }
        // The connection's state is unknown after a failed round: SQLite may
        // hold pages that no longer match the disk. A new one starts clean.
        tracing::warn!("reopening the SQLite write connection after a failed round");
    }
}

/// Opens a new write connection, retrying with backoff. Once an attempt has
/// failed, the jobs waiting and those that arrive are dropped, which fails
/// them at once (their callers hear that the writer is unavailable), so
/// nobody waits on a database that cannot be opened. `None` once every
/// sender is gone.
fn reopen(opener: &Opener, rx: &mut mpsc::Receiver<Job>, pending: &mut Pending) -> Option<Connection> {
    let mut backoff = Duration::from_millis(50);
    loop {
        match opener.writer() {
            Ok(conn) => return Some(conn),
            Err(e) => tracing::error!(error = format!("{e:#}"), "cannot reopen the SQLite database; retrying"),
        }
        *pending = Pending::default();
        let deadline = Instant::now() + backoff;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.try_recv() {
                Ok(job) => drop(job),
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => std::thread::sleep(left.min(Duration::from_millis(10))),
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Runs one round. Returns false when it failed and the connection must go.
fn round(conn: &Writer<'_>, rx: &mut mpsc::Receiver<Job>, pending: &mut Pending, cx: &Context) -> bool {
    let began = Instant::now();
    pending.take_from(rx);
    if let Err(e) = conn.begin() {
        tracing::error!(error = %e, "SQLite could not begin a transaction");
        // Dropping the jobs fails them: their callers hear the writer failed.
        *pending = Pending::default();
        return false;
    }
    let mut replies: Vec<Reply> = Vec::with_capacity(pending.len());
    let mut failed = None;
    let mut background = 0;
    while replies.len() < MAX_JOBS_PER_COMMIT {
        let work = match pending.urgent.pop_front() {
            Some(work) => work,
            None if background < BACKGROUND_PER_ROUND => match pending.background.pop_front() {
                Some(work) => {
                    background += 1;
                    work
                }
                None => break,
            },
            None => break,
        };
        let ran = run_job(work, conn);
        replies.push(ran.reply);
        if ran.fails_round || conn.is_autocommit() {
            failed = Some(if conn.is_autocommit() {
                "SQLite rolled the transaction back after an error".to_owned()
            } else {
                "a write failed; the transaction was rolled back".to_owned()
            });
            break;
        }
    }
    let committing = Instant::now();
    let outcome = match failed {
        Some(why) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(Failure::RolledBack(why))
        }
        None => conn.commit().map_err(|e| {
            tracing::error!(error = %e, "SQLite commit failed; its outcome is unknown");
            let _ = conn.execute_batch("ROLLBACK");
            Failure::Unknown(format!("the commit failed: {e}"))
        }),
    };
    let committed = Instant::now();
    let meters = &cx.meters;
    meters.exec.record(committing - began);
    meters.commit.record(committed - committing);
    meters.commits.increment(1);
    meters.jobs.increment(replies.len() as u64);
    meters.batch.record(replies.len() as f64);
    let ok = outcome.is_ok();
    if ok {
        cx.checkpointer.wake();
        if conn.queued_messages() {
            cx.messages.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
    for reply in replies {
        reply(outcome.clone());
    }
    ok
}

/// Runs one job; a panic in it fails the whole round, not the writer.
fn run_job(work: Work, conn: &Writer<'_>) -> Ran {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(conn))) {
        Ok(ran) => ran,
        Err(_) => {
            tracing::error!("a store job panicked; rolling its transaction back");
            Ran { reply: Box::new(|_| ()), fails_round: true }
        }
    }
}
