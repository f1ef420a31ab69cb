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
//! A sync that fails leaves unknown what the disk holds. The callers waiting
//! for it are told their write failed, and the writer stops: every later write
//! fails, and `/ready` reports the store down.

use super::Reply;
use anyhow::Context;
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use tokio::sync::watch;

/// A commit waiting for its sync.
pub(super) struct Commit {
    pub replies: Vec<Reply>,
    /// It queued messages: the consumers are woken once it is durable.
    pub queued: bool,
}

pub(super) struct Syncer {
    commits: Sender<Commit>,
    failed: Arc<AtomicBool>,
}

impl Syncer {
    /// Hands a commit over; gives it back when a sync has failed.
    pub(super) fn send(&self, commit: Commit) -> Result<(), Commit> {
        if self.failed() {
            return Err(commit);
        }
        self.commits.send(commit).map_err(|e| e.0)
    }

    pub(super) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
}

/// Starts the syncer of the database at `path`, whose WAL must exist (the
/// writer's connection has opened it).
pub(super) fn start(path: &str, messages: watch::Sender<u64>) -> anyhow::Result<Syncer> {
    let wal_path = format!("{path}-wal");
    let wal = File::open(&wal_path).with_context(|| format!("opening the SQLite WAL {wal_path} to sync it"))?;
    spawn(wal, messages)
}

/// Starts a syncer of the file `wal`.
fn spawn(wal: File, messages: watch::Sender<u64>) -> anyhow::Result<Syncer> {
    let (commits, pending) = channel();
    let failed = Arc::new(AtomicBool::new(false));
    std::thread::Builder::new()
        .name("sqlite-sync".into())
        .spawn({
            let failed = failed.clone();
            move || run(wal, pending, messages, &failed)
        })
        .context("starting the SQLite sync thread")?;
    Ok(Syncer { commits, failed })
}

fn run(wal: File, pending: Receiver<Commit>, messages: watch::Sender<u64>, failed: &AtomicBool) {
    while let Ok(first) = pending.recv() {
        let mut commits = vec![first];
        commits.extend(pending.try_iter());
        let outcome = wal.sync_data().map_err(|e| format!("syncing the WAL failed: {e}"));
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "SQLite writes stop: what the disk holds is unknown");
            failed.store(true, Ordering::Release);
        }
        metrics::counter!("orderflow_store_syncs_total").increment(1);
        if outcome.is_ok() && commits.iter().any(|c| c.queued) {
            messages.send_modify(|n| *n = n.wrapping_add(1));
        }
        for reply in commits.into_iter().flat_map(|c| c.replies) {
            reply(outcome.clone());
        }
        if outcome.is_err() {
            // Commits sent after the failure are answered by the writer.
            for reply in pending.try_iter().flat_map(|c| c.replies) {
                reply(Err("an earlier sync of the WAL failed".to_owned()));
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{spawn, Commit};
    use std::fs::File;
    use std::os::fd::OwnedFd;
    use std::sync::mpsc::{channel, Receiver};
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
        let syncer = spawn(wal, messages).unwrap();
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
        let syncer = spawn(File::from(OwnedFd::from(pipe)), messages).unwrap();
        let (c, answer) = commit(true);
        assert!(syncer.send(c).is_ok());
        let outcome = answer.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(outcome.unwrap_err().contains("syncing the WAL failed"));
        assert!(syncer.failed());
        let (c, _answer) = commit(false);
        assert!(syncer.send(c).is_err(), "the writer is given the commit back to fail it");
    }
}
