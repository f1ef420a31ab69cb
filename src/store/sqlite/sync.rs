//! Making commits durable beside the writer.
//!
//! The writer's connection runs with `synchronous=NORMAL`: in WAL mode a
//! commit then appends its frames to the WAL without waiting for the disk.
//! This thread makes them durable. It takes the callers of every commit made
//! since its last sync, syncs the WAL file once for all of them, and only then
//! answers them. Meanwhile the writer runs the next transaction, so the disk's
//! latency no longer stops it. Commits are appended to the WAL in order, so one
//! sync covers every commit before it: a `202` still means the order is on
//! disk. Checkpoints sync the WAL before they copy it into the database and
//! sync the database before the WAL starts over (SQLite does both at
//! `NORMAL`), so nothing reaches the database file unsynced, and nothing
//! acknowledged is overwritten before it is in the database file.
//!
//! Until its sync, a commit is visible to readers: a `GET /orders` may list an
//! order whose `202` is still on its way. What leaves the process waits for a
//! sync that covers everything it depends on: an answer waits for its own, a
//! notification line for the sync of the notifier's commit, which comes later
//! in the WAL than the commits it read.
//!
//! When the writer has no job waiting and no commit is still to be synced,
//! it syncs its commit itself (`Syncer::sync_here`): handing it over would
//! only add two hand-offs between threads to its callers' wait.
//!
//! A sync that fails leaves unknown what the disk holds. The callers waiting
//! for it are told their write failed, and the writer stops: every later write
//! fails, and `/ready` reports the store down.

use super::Reply;
use anyhow::Context;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// A commit waiting for its sync.
pub(super) struct Commit {
    pub replies: Vec<Reply>,
    /// It queued messages: the consumers are woken once it is durable.
    pub queued: bool,
}

pub(super) struct Syncer {
    commits: Sender<Commit>,
    state: Arc<State>,
    /// For syncs on the writer's own thread (`sync_here`).
    wal: File,
    messages: watch::Sender<u64>,
}

/// What the writer and the sync thread share.
struct State {
    failed: AtomicBool,
    /// Commits handed over and not yet synced.
    unsynced: AtomicUsize,
    /// The writer waits for the sync thread to become idle.
    holding: AtomicBool,
    /// Wakes the writer when it holds.
    wake_writer: Box<dyn Fn() + Send + Sync>,
}

impl State {
    fn new(wake_writer: Box<dyn Fn() + Send + Sync>) -> Self {
        Self {
            failed: AtomicBool::new(false),
            unsynced: AtomicUsize::new(0),
            holding: AtomicBool::new(false),
            wake_writer,
        }
    }

    /// `n` commits are synced (or failed); wakes the writer if it waits for that.
    fn done(&self, n: usize) {
        if self.unsynced.fetch_sub(n, Ordering::SeqCst) == n && self.holding.swap(false, Ordering::SeqCst) {
            (self.wake_writer)();
        }
    }
}

impl Syncer {
    /// Hands a commit over; gives it back when a sync has failed.
    pub(super) fn send(&self, commit: Commit) -> Result<(), Commit> {
        if self.failed() {
            return Err(commit);
        }
        self.state.unsynced.fetch_add(1, Ordering::SeqCst);
        self.commits.send(commit).map_err(|e| {
            self.state.unsynced.fetch_sub(1, Ordering::SeqCst);
            e.0
        })
    }

    /// Syncs `commit` on the calling thread and answers its callers, when no
    /// commit handed over is still to be synced (it would have to wait for
    /// that one anyway) and no sync has failed; gives it back otherwise. A
    /// sync that fails here fails its callers and every later commit, as on
    /// the sync thread.
    pub(super) fn sync_here(&self, commit: Commit) -> Result<(), Commit> {
        if self.failed() || !self.idle() {
            return Err(commit);
        }
        // A failure is recorded in `state`: `send` and this refuse what comes next.
        let _ = sync_and_answer(&self.wal, vec![commit], &self.messages, &self.state);
        Ok(())
    }

    /// No commit handed over is still to be synced.
    pub(super) fn idle(&self) -> bool {
        self.state.unsynced.load(Ordering::SeqCst) == 0
    }

    pub(super) fn failed(&self) -> bool {
        self.state.failed.load(Ordering::Acquire)
    }

    /// True while an earlier commit is still being synced: a commit made now
    /// would wait for that sync, and then for its own, so the writer may as
    /// well keep its transaction open and take in more jobs. The sync thread
    /// then calls `wake_writer` once it has synced everything handed over.
    /// (A wake may come after the writer has moved on; it is harmless.)
    pub(super) fn hold(&self) -> bool {
        let busy = || self.state.unsynced.load(Ordering::SeqCst) > 0;
        if !busy() {
            return false;
        }
        self.state.holding.store(true, Ordering::SeqCst);
        // The sync may have ended before `holding` was set, without a wake.
        if !busy() {
            self.state.holding.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }
}

/// Starts the syncer of the database at `path`, whose WAL must exist (the
/// writer's connection has opened it).
/// `wake_writer` is called when the writer holds (`Syncer::hold`) and the
/// last commit handed over has been synced.
pub(super) fn start(
    path: &str,
    messages: watch::Sender<u64>,
    wake_writer: impl Fn() + Send + Sync + 'static,
) -> anyhow::Result<Syncer> {
    let wal_path = format!("{path}-wal");
    let wal = File::open(&wal_path).with_context(|| format!("opening the SQLite WAL {wal_path} to sync it"))?;
    spawn(wal, messages, Box::new(wake_writer))
}

/// Starts a syncer of the file `wal`.
fn spawn(wal: File, messages: watch::Sender<u64>, wake_writer: Box<dyn Fn() + Send + Sync>) -> anyhow::Result<Syncer> {
    let (commits, pending) = channel();
    let state = Arc::new(State::new(wake_writer));
    // The writer's own handles, for `sync_here`.
    let (writer_wal, writer_messages) =
        (wal.try_clone().context("opening the SQLite WAL to sync it")?, messages.clone());
    std::thread::Builder::new()
        .name("sqlite-sync".into())
        .spawn({
            let state = state.clone();
            move || run(wal, pending, messages, &state)
        })
        .context("starting the SQLite sync thread")?;
    Ok(Syncer { commits, state, wal: writer_wal, messages: writer_messages })
}

fn run(wal: File, pending: Receiver<Commit>, messages: watch::Sender<u64>, state: &State) {
    let mut idle_since = Instant::now();
    while let Ok(first) = pending.recv() {
        let syncing = Instant::now();
        let mut commits = vec![first];
        commits.extend(pending.try_iter());
        let count = commits.len();
        let outcome = sync_and_answer(&wal, commits, &messages, state);
        super::count_time("orderflow_store_sync_microseconds_total", [("idle", syncing - idle_since)]);
        idle_since = Instant::now();
        if outcome.is_err() {
            // Commits sent after the failure are answered by the writer.
            let late: Vec<Commit> = pending.try_iter().collect();
            let failed = late.len();
            for reply in late.into_iter().flat_map(|c| c.replies) {
                reply(Err("an earlier sync of the WAL failed".to_owned()));
            }
            state.done(count + failed);
            return;
        }
        state.done(count);
    }
}

/// Syncs the WAL once for `commits`, wakes the consumers if they queued
/// messages, and answers every caller.
fn sync_and_answer(
    wal: &File,
    commits: Vec<Commit>,
    messages: &watch::Sender<u64>,
    state: &State,
) -> Result<(), String> {
    let syncing = Instant::now();
    let outcome = wal.sync_data().map_err(|e| format!("syncing the WAL failed: {e}"));
    let synced = Instant::now();
    if let Err(e) = &outcome {
        tracing::error!(error = %e, "SQLite writes stop: what the disk holds is unknown");
        state.failed.store(true, Ordering::Release);
    }
    metrics::counter!("orderflow_store_syncs_total").increment(1);
    if outcome.is_ok() && commits.iter().any(|c| c.queued) {
        messages.send_modify(|n| *n = n.wrapping_add(1));
    }
    for reply in commits.into_iter().flat_map(|c| c.replies) {
        reply(outcome.clone());
    }
    // Where the time goes: syncing, answering.
    super::count_time(
        "orderflow_store_sync_microseconds_total",
        [("sync", synced - syncing), ("answer", synced.elapsed())],
    );
    outcome
}

#[cfg(test)]
mod tests {
    use super::{spawn, Commit, State, Syncer};
    use std::fs::File;
    use std::os::fd::OwnedFd;
    use std::sync::mpsc::{channel, Receiver};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::sync::watch;

    /// A commit whose one caller's answer arrives on the receiver.
    fn commit(queued: bool) -> (Commit, Receiver<Result<(), String>>) {
        let (tx, rx) = channel();
        let reply: super::Reply = Box::new(move |outcome| tx.send(outcome).unwrap());
        (Commit { replies: vec![reply], queued }, rx)
    }

    #[test]
    fn callers_hear_after_the_sync_and_consumers_are_woken() {
        let wal = tempfile::tempfile().unwrap();
        let (messages, mut woken) = watch::channel(0u64);
        let syncer = spawn(wal, messages, Box::new(|| ())).unwrap();
        let (c, answer) = commit(true);
        assert!(syncer.send(c).is_ok());
        assert_eq!(answer.recv_timeout(Duration::from_secs(5)).unwrap(), Ok(()));
        assert!(woken.has_changed().unwrap(), "the consumers are woken");
        woken.mark_unchanged();
        let (c, answer) = commit(false);
        assert!(syncer.send(c).is_ok());
        assert_eq!(answer.recv_timeout(Duration::from_secs(5)).unwrap(), Ok(()));
        assert!(!woken.has_changed().unwrap(), "nothing queued, nobody woken");
    }

    /// A pipe cannot be synced: the sync fails as a failing disk's would.
    #[test]
    fn a_failed_sync_fails_its_callers_and_every_later_commit() {
        let (pipe, _writer) = std::io::pipe().unwrap();
        let (messages, _woken) = watch::channel(0u64);
        let syncer = spawn(File::from(OwnedFd::from(pipe)), messages, Box::new(|| ())).unwrap();
        let (c, answer) = commit(true);
        assert!(syncer.send(c).is_ok());
        let outcome = answer.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(outcome.unwrap_err().contains("syncing the WAL failed"));
        assert!(syncer.failed());
        let (c, _answer) = commit(false);
        assert!(syncer.send(c).is_err(), "the writer is given the commit back to fail it");
    }

    /// A syncer without a sync thread: the test plays its part. The
    /// receiver stands for the thread's end of the channel.
    fn idle_syncer(
        wal: File,
        messages: watch::Sender<u64>,
        wake_writer: Box<dyn Fn() + Send + Sync>,
    ) -> (Syncer, Receiver<Commit>) {
        let (commits, pending) = channel();
        (Syncer { commits, state: Arc::new(State::new(wake_writer)), wal, messages }, pending)
    }

    /// The writer syncs a commit itself only when no commit handed over is
    /// still unsynced; its callers hear before `sync_here` returns.
    #[test]
    fn a_commit_is_synced_here_only_when_none_is_pending() {
        let (messages, mut woken) = watch::channel(0u64);
        let (syncer, _pending) = idle_syncer(tempfile::tempfile().unwrap(), messages, Box::new(|| ()));
        let (c, answer) = commit(true);
        assert!(syncer.sync_here(c).is_ok());
        assert_eq!(answer.try_recv(), Ok(Ok(())), "answered at once");
        assert!(woken.has_changed().unwrap(), "the consumers are woken");
        woken.mark_unchanged();

        assert!(syncer.send(commit(false).0).is_ok(), "a commit handed over, not yet synced");
        let (c, answer) = commit(false);
        let Err(back) = syncer.sync_here(c) else { panic!("synced before the commit handed over") };
        assert!(answer.try_recv().is_err(), "its callers still wait");
        syncer.state.done(1);
        assert!(syncer.sync_here(back).is_ok());
        assert_eq!(answer.try_recv(), Ok(Ok(())));
        assert!(!woken.has_changed().unwrap(), "nothing queued, nobody woken");
    }

    /// A sync that fails on the writer's thread fails its callers and makes
    /// every later commit fail, as one on the sync thread does.
    #[test]
    fn a_failed_sync_here_fails_its_callers_and_every_later_commit() {
        let (pipe, _writer) = std::io::pipe().unwrap();
        let (messages, _woken) = watch::channel(0u64);
        let (syncer, _pending) = idle_syncer(File::from(OwnedFd::from(pipe)), messages, Box::new(|| ()));
        let (c, answer) = commit(true);
        assert!(syncer.sync_here(c).is_ok());
        assert!(answer.try_recv().unwrap().unwrap_err().contains("syncing the WAL failed"));
        assert!(syncer.failed());
        assert!(syncer.sync_here(commit(false).0).is_err());
        assert!(syncer.send(commit(false).0).is_err());
    }

    /// The writer holds its transaction only while a commit is unsynced, and
    /// is woken when the last one is.
    #[test]
    fn a_holding_writer_is_woken_when_every_commit_is_synced() {
        let (wake, woken) = channel();
        let (messages, _woken) = watch::channel(0u64);
        let wake_writer = Box::new(move || wake.send(()).unwrap());
        let (syncer, _pending) = idle_syncer(tempfile::tempfile().unwrap(), messages, wake_writer);
        let state = syncer.state.clone();
        assert!(!syncer.hold(), "nothing is being synced");
        for _ in 0..2 {
            assert!(syncer.send(commit(false).0).is_ok());
        }
        assert!(syncer.hold());
        state.done(1);
        assert!(woken.try_recv().is_err(), "one commit is still unsynced");
        assert!(syncer.hold());
        state.done(1);
        assert!(woken.try_recv().is_ok(), "the writer is woken");
        assert!(!syncer.hold());
        state.done(0);
        assert!(woken.try_recv().is_err(), "woken once");
    }
}
