//! The order cache (`--cache-url`) end to end, against a `redis-server` of
//! each test's own with no persistence, as a cache is run: statuses read
//! through the cache move only forward and end where the store ends, across
//! processes (the API reads, the inventory service and the notifier change
//! statuses, each a process of its own on PostgreSQL); hits are counted in
//! `/metrics`; the cache's Redis killed under read load costs no request an
//! error, and hits come back once it is restarted. Skipped when
//! `redis-server` (or PostgreSQL) is missing; a failure under
//! ORDERFLOW_REQUIRE_SERVICES=1.

use crate::helpers::{order, Client, Env, RedisServer, Server, SETTLE};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `redis-server` for the cache, in the environment's directory.
pub fn cache_server(env: &Env) -> Option<RedisServer> {
    let dir = env.dir.path().join("cache");
    std::fs::create_dir_all(&dir).expect("cache dir");
    match RedisServer::start(dir, &["--appendonly", "no"]) {
        Ok(server) => Some(server),
        Err(e) => {
            assert!(
                std::env::var("ORDERFLOW_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "redis-server is required (ORDERFLOW_REQUIRE_SERVICES=1): {e}"
            );
            eprintln!("SKIPPED: redis-server is not available ({e})");
            None
        }
    }
}

fn step(status: &str) -> u8 {
    match status {
        "placed" => 0,
        "reserved" | "rejected" => 1,
        "completed" => 2,
        "cancelled" | "shipped" => 3,
        other => panic!("unknown status {other}"),
    }
}

/// A counter's value in `/metrics` (0 when absent).
async fn counter(client: &Client, series: &str) -> u64 {
    let text = client.http.get(client.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(series)).map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

const HITS: &str = "orderflow_cache_requests_total{result=\"hit\"}";
const ERRORS: &str = "orderflow_cache_requests_total{result=\"error\"}";

/// PostgreSQL, the API, the inventory service and the notifier each in a
/// process of its own, all with the cache. Readers poll every order from the
/// moment it is placed, through both routes, so copies of `placed` and
/// `reserved` orders are cached while other processes move them on. Each
/// order's statuses, as read, only move forward, and end where the store
/// does: a status cached by the API is never left behind by a change made
/// in another process.
#[tokio::test]
async fn statuses_read_through_the_cache_only_move_forward_across_processes() {
    let Some(env) = Env::postgres(false) else { return };
    let Some(cache) = cache_server(&env) else { return };
    let url = format!("redis://127.0.0.1:{}/0", cache.port);
    let flags = ["--cache-url", url.as_str()];
    env.set_stock("widget", 30);
    let api = Server::start(&env, "api", &flags).await;
    // The API first: readers cache placed orders before any worker runs.
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(api.client.place(&order(&format!("c{i}"), &[("widget", 1)])).await);
    }
    let seen: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let (client, ids, seen, stop) = (api.client.clone(), ids.clone(), seen.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    for id in &ids {
                        let path = if r % 2 == 0 { format!("/orders/{id}") } else { format!("/order/get/{id}") };
                        let (status, body) = client.get(&path).await;
                        assert_eq!(status, 200, "{path}: {body}");
                        let now = body["status"].as_str().expect("status").to_owned();
                        let mut seen = seen.lock().unwrap();
                        let history = seen.entry(id.clone()).or_default();
                        if let Some(before) = history.last() {
                            assert!(step(&now) >= step(before), "{id} went from {before} back to {now}: {history:?}");
                        }
                        if history.last() != Some(&now) {
                            history.push(now);
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _workers = [Server::start(&env, "inventory", &flags).await, Server::start(&env, "notifier", &flags).await];
    let done = api.client.wait_terminal(&ids, SETTLE).await;
    // Still read, the terminal status stays, through both routes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.expect("a reader failed");
    }
    let completed = done.iter().filter(|o| o["status"] == "completed").count();
    assert_eq!((completed, done.len() - completed), (30, 10), "30 in stock for 40 orders");
    for (id, order) in ids.iter().zip(&done) {
        let stored = env.sql(&format!("SELECT status FROM orders WHERE id = '{id}'"));
        assert_eq!(order["status"], stored.as_str(), "{id}");
        for path in [format!("/orders/{id}"), format!("/order/get/{id}")] {
            assert_eq!(api.client.get(&path).await.1["status"], stored.as_str(), "{path}");
        }
    }
    let saw_placed = seen.lock().unwrap().values().any(|h| h.first().is_some_and(|s| s == "placed"));
    assert!(saw_placed, "readers saw placed orders");
    assert!(counter(&api.client, HITS).await > 0, "cache hits counted");
    // Full copies are what GET /orders/{id} answers without a cache.
    let (_, full) = api.client.get(&format!("/orders/{}", ids[0])).await;
    assert!(full["history"].as_array().is_some_and(|h| h.len() == 3), "{full}");
}

/// The cache's Redis killed with `kill -9` while clients read orders as fast
/// as they can: every read is answered 200 from the store (errors counted),
/// and once Redis is back, reads hit the cache again.
#[tokio::test]
async fn the_caches_redis_killed_under_read_load_fails_no_request() {
    let env = Env::embedded();
    let Some(mut cache) = cache_server(&env) else { return };
    let url = format!("redis://127.0.0.1:{}/0", cache.port);
    env.set_stock("nut", 100);
    let server = Server::start(&env, "run", &["--cache-url", &url]).await;
    let client = server.client.clone();
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(client.place(&order(&format!("k{i}"), &[("nut", 1)])).await);
    }
    client.wait_terminal(&ids, SETTLE).await;
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (client, ids, stop) = (client.clone(), ids.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut answered, mut slowest) = (0u64, Duration::ZERO);
                while !stop.load(Ordering::Relaxed) {
                    for id in &ids {
                        let started = Instant::now();
                        let (status, body) = client.get(&format!("/orders/{id}")).await;
                        assert_eq!(status, 200, "{body}");
                        assert_eq!(body["status"], "completed");
                        slowest = slowest.max(started.elapsed());
                        answered += 1;
                    }
                }
                (answered, slowest)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let hits_before = counter(&client, HITS).await;
    assert!(hits_before > 0, "reads hit the cache while Redis runs");
    cache.kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cache.restart().expect("restarting the cache's Redis");
    let hits_down = counter(&client, HITS).await;
    // Hits come back once the breaker lets the cache be tried again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter(&client, HITS).await < hits_down + 100 {
        assert!(Instant::now() < deadline, "no cache hits after Redis came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut answered = 0;
    for reader in readers {
        let (n, slowest) = reader.await.expect("a read failed");
        answered += n;
        assert!(slowest < Duration::from_secs(2), "a read took {slowest:?}");
    }
    assert!(answered > 1000, "{answered} reads");
    assert!(counter(&client, ERRORS).await > 0, "errors counted while Redis was down");
}
