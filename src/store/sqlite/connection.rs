//! Opening SQLite connections: the writer's, the checkpointer's, the
//! readers', and the schema's migrations.
//!
//! Every connection is plain SQLite: its default page cache, the VFS the
//! options name (SQLite's default unless a test puts a simulated disk under
//! it), WAL mode and `synchronous=FULL`, so that a commit returns only once
//! SQLite has synced its WAL frames, and a checkpoint counts frames as copied
//! only once it has synced the database file. Every sync that makes an order
//! durable is SQLite's own, through the VFS.

use super::{db_err, StoreError};
use anyhow::Context;
use rusqlite::{Connection, OpenFlags};
use std::sync::Mutex;

/// How the store opens its files. The defaults are what production runs.
#[derive(Debug, Clone, Default)]
pub struct SqliteOptions {
    /// The SQLite VFS to open files with, registered beforehand; SQLite's
    /// default when `None`. The durability tests put a simulated disk here.
    pub vfs: Option<String>,
    /// Never sync (`synchronous=OFF`): a commit is then not durable. Only for
    /// the durability tests, which must see accepted orders lost with it.
    #[doc(hidden)]
    pub unsynced: bool,
}

/// Opens connections to one database file.
#[derive(Debug, Clone)]
pub(super) struct Opener {
    pub path: String,
    pub options: SqliteOptions,
}

impl Opener {
    fn open(&self, flags: OpenFlags) -> rusqlite::Result<Connection> {
        match &self.options.vfs {
            Some(vfs) => Connection::open_with_flags_and_vfs(&self.path, flags, vfs.as_str()),
            None => Connection::open_with_flags(&self.path, flags),
        }
    }

    fn synchronous(&self) -> &'static str {
        if self.options.unsynced {
            "OFF"
        } else {
            "FULL"
        }
    }

    /// The writer's connection, configured.
    pub fn writer(&self) -> anyhow::Result<Connection> {
        let conn = self.open(OpenFlags::default()).with_context(|| format!("opening SQLite database {}", self.path))?;
        conn.pragma_update(None, "busy_timeout", 5000)?;
        enable_wal(&conn)?;
        conn.pragma_update(None, "synchronous", self.synchronous())?;
        // Room for every other statement the writer runs (the per-order ones are
        // kept apart, `statements`). The cache is LRU: with the default 16, a
        // busy mix of orders with idempotency keys and rejections would evict
        // and prepare statements again on every commit.
        conn.set_prepared_statement_cache_capacity(64);
        // An 8 MiB page cache holds the pages every commit touches (the
        // tails of the indexes) without growing with the database.
        conn.pragma_update(None, "cache_size", -8192)?;
        // Checkpoints are the checkpointer's (`checkpoint`); this one is a
        // backstop should it fall far behind.
        conn.pragma_update(None, "wal_autocheckpoint", 16384)?;
        // Savepoints keep the pages they change in memory, not in a temporary file.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // Read pages through a mapping instead of a system call per page.
        conn.pragma_update(None, "mmap_size", 1i64 << 30)?;
        Ok(conn)
    }

    /// The checkpointer's connection.
    pub fn checkpointer(&self) -> anyhow::Result<Connection> {
        let conn = self
            .open(OpenFlags::default())
            .with_context(|| format!("opening SQLite database {} to checkpoint", self.path))?;
        conn.pragma_update(None, "synchronous", self.synchronous())?;
        conn.pragma_update(None, "busy_timeout", 5000)?;
        Ok(conn)
    }

    /// A read-only connection.
    fn reader(&self) -> Result<Connection, StoreError> {
        let conn = self
            .open(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|e| StoreError::Unavailable(format!("opening a read connection: {e}")))?;
        conn.pragma_update(None, "busy_timeout", 5000).map_err(db_err)?;
        Ok(conn)
    }
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
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite.sql"),
    include_str!("../migrations/sqlite-2.sql"),
    include_str!("../migrations/sqlite-3.sql"),
    include_str!("../migrations/sqlite-4.sql"),
    include_str!("../migrations/sqlite-5.sql"),
    include_str!("../migrations/sqlite-6.sql"),
    include_str!("../migrations/sqlite-7.sql"),
    include_str!("../migrations/sqlite-8.sql"),
    include_str!("../migrations/sqlite-9.sql"),
];

/// Brings the schema up to date, one version per transaction. The version is
/// read again under the write lock, so processes that start together take
/// turns and each step runs once.
pub(super) fn migrate(conn: &Connection) -> anyhow::Result<()> {
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

/// Read connections, opened on demand and kept for reuse.
pub(super) struct ReadPool {
    opener: Opener,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    pub fn new(opener: Opener) -> Self {
        Self { opener, idle: Mutex::new(Vec::new()) }
    }

    pub fn get(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().expect("read pool lock").pop() {
            return Ok(conn);
        }
        self.opener.reader()
    }

    pub fn put(&self, conn: Connection) {
        let mut idle = self.idle.lock().expect("read pool lock");
        if idle.len() < 16 {
            idle.push(conn);
        }
    }
}
