//! What SIGTERM does to a process with the API: `/ready` answers 503 at once
//! while orders are still taken and processed, for `--drain-secs`; then the
//! process stops cleanly. A second signal cuts the drain short.

use crate::helpers::{eventually, order, Env, Server, SETTLE};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn sigterm_drains_then_stops() {
    let env = Env::embedded();
    env.set_stock("gadget", 10);
    let mut server = Server::start(&env, "run", &["--drain-secs", "2"]).await;
    assert_eq!(server.client.get("/ready").await.0, 200);
    let started = Instant::now();
    server.signal("TERM");
    eventually(Duration::from_secs(1), "/ready answering 503", || async {
        server.client.get("/ready").await == (503, json!({ "status": "draining" }))
    })
    .await;
    // Still served, and still processed: the workers stop after the API.
    let id = server.client.place(&order("drain", &[("gadget", 1)])).await;
    let done = server.client.wait_terminal(&[id], SETTLE).await;
    assert_eq!(done[0]["status"], "completed");
    let status = server.wait_exit();
    assert!(status.success(), "exit status {status:?}; its log:\n{}", server.log());
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "stopped after {:?}, before the drain ended",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_second_signal_skips_the_drain() {
    let env = Env::embedded();
    let mut server = Server::start(&env, "run", &["--drain-secs", "60"]).await;
    server.signal("INT");
    eventually(Duration::from_secs(1), "/ready answering 503", || async { server.client.get("/ready").await.0 == 503 })
        .await;
    let started = Instant::now();
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}; its log:\n{}", server.log());
    assert!(started.elapsed() < Duration::from_secs(10), "the drain went on for {:?}", started.elapsed());
}
