//! The open connections, oldest first, and what each is doing: enough to
//! pick one to close when a new client arrives at the cap, and to close a
//! kept-alive connection that has waited too long for its next request.
//!
//! A connection is *handling* while a request is in the router; otherwise it
//! is idle between requests or still sending a header, and may be closed
//! without losing an answer. The answers are whole bodies that hyper takes
//! in the same poll as the handler returns, so "out of the router" is also
//! "answer handed over". The flags are set by the connection's own task
//! (hyper calls the router from it), so a request costs two stores and a
//! clock read; only arrivals at the cap walk the map.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The registry of open connections.
#[derive(Default)]
pub(super) struct Connections {
    /// A std mutex: it is held for one map operation, never across an await.
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    /// By accept order, so the first entries are the oldest.
    open: BTreeMap<u64, Arc<Connection>>,
}

/// One open connection, shared by its task and the registry.
pub(super) struct Connection {
    opened: Instant,
    handling: AtomicBool,
    /// Milliseconds from `opened` to the end of the last answer, plus one;
    /// zero until the first answer.
    answered: AtomicU64,
    /// Fired to ask the connection to close: to make room, or at shutdown
    /// (it is a child of the shutdown token).
    pub close: CancellationToken,
}

impl Connections {
    /// Registers a new connection; it leaves the registry when the returned
    /// handle is dropped.
    pub fn insert(self: &Arc<Self>, close: CancellationToken) -> Registered {
        let conn = Arc::new(Connection {
            opened: Instant::now(),
            handling: AtomicBool::new(false),
            answered: AtomicU64::new(0),
            close,
        });
        let mut inner = self.inner.lock().expect("connections lock");
        let id = inner.next_id;
        inner.next_id += 1;
        inner.open.insert(id, conn.clone());
        Registered { id, conn, all: self.clone() }
    }

    /// Asks the oldest connection that is not handling a request (and not
    /// already asked) to close. Returns false if every one is handling.
    pub fn close_oldest_idle(&self) -> bool {
        let inner = self.inner.lock().expect("connections lock");
        match inner.open.values().find(|c| !c.is_handling() && !c.close.is_cancelled()) {
            Some(victim) => {
                victim.close.cancel();
                true
            }
            None => false,
        }
    }
}

impl Connection {
    /// A request enters the router.
    pub fn begin(&self) {
        self.handling.store(true, Relaxed);
    }

    /// Its answer is out of the router.
    pub fn end(&self) {
        let since_open = self.opened.elapsed().as_millis() as u64;
        self.answered.store(since_open + 1, Relaxed);
        self.handling.store(false, Relaxed);
    }

    pub fn is_handling(&self) -> bool {
        self.handling.load(Relaxed)
    }

    /// When this connection has been idle for `timeout`: `timeout` after its
    /// last answer. `None` while it handles a request or before its first
    /// answer (until then the header timeout governs it).
    pub fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        match self.answered.load(Relaxed) {
            0 => None,
            _ if self.is_handling() => None,
            answered => Some(self.opened + Duration::from_millis(answered - 1) + timeout),
        }
    }
}

/// A connection's place in the registry; dropping it takes the connection out.
pub(super) struct Registered {
    id: u64,
    conn: Arc<Connection>,
    all: Arc<Connections>,
}

impl Registered {
    pub fn shared(&self) -> Arc<Connection> {
        self.conn.clone()
    }
}

impl Deref for Registered {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.all.inner.lock().expect("connections lock").open.remove(&self.id);
    }
}
