//! Checkpoints beside the writer, not inside its commits.
//!
//! SQLite's automatic checkpoint runs in the committing connection: every few
//! thousand pages one unlucky commit also copies the whole WAL into the
//! database and fsyncs it, and every order waiting on that commit waits too.
//! Here the writer only nudges this thread after a commit; it waits a moment
//! for more frames, then runs a PASSIVE checkpoint on its own connection,
//! which copies what it can without ever blocking the writer. With
//! `synchronous=FULL` the database file is synced before the copied frames
//! count as checkpointed, so the WAL is only reused once its content is safe.
//!
//! A passive checkpoint cannot finish while readers hold old snapshots. If
//! the WAL still grows past `WAL_LIMIT` frames, one RESTART checkpoint waits
//! for them (and briefly for the writer) so that the file is reused.

use anyhow::Context;
use rusqlite::Connection;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::time::Duration;

/// How long the checkpointer lets frames gather after a nudge.
const GATHER: Duration = Duration::from_millis(20);
/// WAL frames (pages) beyond which a blocking checkpoint resets the WAL.
const WAL_LIMIT: i64 = 262_144;

/// Nudges the checkpointer; it stops when this is dropped.
pub(super) struct Waker(SyncSender<()>);

impl Waker {
    pub(super) fn wake(&self) {
        // A nudge already pending is enough.
        let _ = self.0.try_send(());
    }
}

pub(super) fn start(path: &str) -> anyhow::Result<Waker> {
    let conn = Connection::open(path).with_context(|| format!("opening SQLite database {path} to checkpoint"))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    let (tx, rx) = sync_channel(1);
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || run(conn, rx))
        .context("starting the SQLite checkpoint thread")?;
    Ok(Waker(tx))
}

fn run(conn: Connection, nudges: Receiver<()>) {
    while nudges.recv().is_ok() {
        std::thread::sleep(GATHER);
        let closed = matches!(nudges.try_recv(), Err(TryRecvError::Disconnected));
        match checkpoint(&conn, "PASSIVE") {
            Ok(frames) if frames > WAL_LIMIT => {
                if let Err(e) = checkpoint(&conn, "RESTART") {
                    tracing::warn!(error = %e, frames, "SQLite checkpoint could not reset a long WAL");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "SQLite checkpoint failed; the next commit retries it"),
        }
        if closed {
            return;
        }
    }
}

/// Runs one checkpoint and returns the frames in the WAL.
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<i64> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get::<_, i64>(1))
}
