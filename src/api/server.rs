//! The accept loop: hyper serves HTTP/1 on each connection, and slow, idle
//! and surplus clients cannot hold the process.
//!
//! Left to themselves, clients that send half a header and stop keep their
//! connections, and the memory and descriptors behind them, for as long as
//! they like; enough of them shut everyone else out. So hyper cuts a request
//! whose header has not fully arrived within the header timeout (its clock
//! also runs while a kept-alive connection waits for its next request), a
//! connection closes once it has waited the idle timeout for its next
//! request, and the open connections are capped: a client arriving at the
//! cap takes the place of the oldest connection that has no request in the
//! router (see `connections`), so new clients are still served. A body that
//! stalls is the router's to answer (408). When `shutdown` fires the loop
//! stops accepting, idle connections close at once, requests in flight are
//! answered on connections that then close, and `run` returns.
//!
//! HTTP/1.0 and 1.1 only, as `axum::serve` served them here: axum's `http2`
//! feature was never on. Requests on a connection are served in turn.

use super::connections::Connections;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

/// What the API allows its clients (the `ServeArgs` flags say more).
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// The pause after `accept` fails for want of resources (descriptors,
/// memory): the loop does not spin, and resumes soon after some free up.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Descriptors kept for everything but client connections: the listener,
/// the database's files and connections, the broker, logs, the runtime.
const RESERVED_DESCRIPTORS: u64 = 128;

/// Serves `router` on `listener` until `shutdown` fires and every connection
/// has closed.
pub(super) async fn run(listener: TcpListener, router: Router, limits: ClientLimits, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(fit_descriptor_limit(limits.max_connections)));
    let open = Arc::new(Connections::default());
    let mut http = http1::Builder::new();
    // hyper arms a timer for every request head it waits for; that timer,
    // more than the connection bookkeeping, is what this loop adds to the
    // cost of a request.
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let http = Arc::new(http);
    let tasks = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // The client gave up before we took its connection.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, pause = ?ACCEPT_PAUSE, "cannot accept connections; pausing");
                tokio::select! {
                    _ = tokio::time::sleep(ACCEPT_PAUSE) => continue,
                    _ = shutdown.cancelled() => break,
                }
            }
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if !open.close_oldest_idle() {
                    tracing::debug!("no idle connection left to close; waiting for one to end");
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                    _ = shutdown.cancelled() => break,
                }
            }
        };
        let conn = ConnectionTask { http: http.clone(), router: router.clone(), idle_timeout: limits.idle_timeout };
        tasks.spawn(conn.serve(stream, open.clone(), shutdown.child_token(), slot));
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
}

/// What one connection's task needs.
struct ConnectionTask {
    http: Arc<http1::Builder>,
    router: Router,
    idle_timeout: Duration,
}

impl ConnectionTask {
    /// Serves one connection until it ends or is asked to close. `_slot` is
    /// its place under the cap, given back after the socket is closed.
    async fn serve(
        self,
        stream: TcpStream,
        open: Arc<Connections>,
        close: CancellationToken,
        _slot: OwnedSemaphorePermit,
    ) {
        let conn = open.insert(close);
        let state = conn.shared();
        let router = self.router;
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let state = state.clone();
            state.begin();
            // A Router is always ready, so it is called without poll_ready.
            let answer = router.clone().call(req);
            async move {
                let response = answer.await;
                state.end();
                response
            }
        });
        let served = self.http.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(served);
        let idle = tokio::time::sleep(self.idle_timeout);
        tokio::pin!(idle);
        let mut closing = false;
        loop {
            tokio::select! {
                biased;
                ended = served.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "connection ended");
                    }
                    return;
                }
                // Dropping the connection closes it; a request in the router
                // is answered first, then hyper closes.
                _ = conn.close.cancelled(), if !closing => {
                    if !conn.is_handling() {
                        return;
                    }
                    served.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = idle.as_mut() => {
                    let now = Instant::now();
                    match conn.idle_deadline(self.idle_timeout) {
                        Some(deadline) if deadline <= now => return,
                        Some(deadline) => idle.as_mut().reset(deadline),
                        None => idle.as_mut().reset(now + self.idle_timeout),
                    }
                }
            }
        }
    }
}

/// Errors of one connection that the client abandoned, not of the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// The connection cap the descriptor limit allows. Raises the soft limit
/// towards the hard one if needed (a systemd service starts at 1024); past
/// what that allows, lowers the cap, so that the cap, not `accept` failing,
/// is what turns clients away.
fn fit_descriptor_limit(wanted: usize) -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let needed = wanted as u64 + RESERVED_DESCRIPTORS;
    let mut limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= needed {
        return wanted;
    }
    let raised = limit.maximum.map_or(needed, |max| max.min(needed));
    limit.current = Some(raised);
    let allowed = match setrlimit(Resource::Nofile, limit) {
        Ok(()) => raised,
        Err(_) => current,
    };
    let cap = allowed.saturating_sub(RESERVED_DESCRIPTORS).max(1) as usize;
    if cap < wanted {
        tracing::warn!(
            wanted,
            cap,
            descriptor_limit = allowed,
            "the descriptor limit is too low for --max-connections; capping connections lower"
        );
    }
    cap.min(wanted)
}
