//! Fault tests: the real servers are stopped and started under load.
//!
//! They stop the machine's PostgreSQL and RabbitMQ with their own commands,
//! so they run one at a time (a lock below) in their own test binary, which
//! cargo runs apart from the others. Skipped when the servers are absent,
//! unless ORDERFLOW_REQUIRE_SERVICES=1.

#[allow(dead_code)]
#[path = "../pipeline/helpers.rs"]
mod helpers;

use helpers::{order, Client, Env, Server};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// One fault at a time: they share the machine's servers.
static SERIAL: Mutex<()> = Mutex::const_new(());

const SETTLE: Duration = Duration::from_secs(90);

fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd).args(args).status().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(status.success(), "{cmd} {args:?} failed");
}

fn pg_cluster(action: &str) {
    let version = std::fs::read_dir("/etc/postgresql").expect("/etc/postgresql").next().expect("a cluster").unwrap();
    let version = version.file_name().into_string().unwrap();
    run("pg_ctlcluster", &["--skip-systemctl-redirect", &version, "main", action]);
}

#[derive(Default)]
struct Tally {
    accepted: Vec<(Instant, String)>,
    unavailable: usize,
    other_errors: Vec<String>,
    slowest: Duration,
}

/// Places orders from 8 clients until `until`, recording every answer.
async fn drive(client: Client, until: Instant) -> Tally {
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let client = client.clone();
        tasks.spawn(async move {
            let mut tally = Tally::default();
            let mut n = 0;
            while Instant::now() < until {
                n += 1;
                let started = Instant::now();
                let sent = tokio::time::timeout(
                    Duration::from_secs(10),
                    client.post("/orders", &order(&format!("fault{worker}"), &[("bolt", 1 + n % 2)]), None),
                )
                .await;
                tally.slowest = tally.slowest.max(started.elapsed());
                match sent {
                    Ok(resp) if resp.status() == 202 => {
                        let body: serde_json::Value = resp.json().await.unwrap();
                        tally.accepted.push((started, body["order_id"].as_str().unwrap().to_owned()));
                    }
                    Ok(resp) if resp.status() == 503 => {
                        assert!(resp.headers().contains_key("retry-after"), "503 without Retry-After");
                        tally.unavailable += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Ok(resp) => tally.other_errors.push(format!("{}", resp.status())),
                    Err(_) => tally.other_errors.push("no answer within 10 s".into()),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tally
        });
    }
    let mut all = Tally::default();
    while let Some(t) = tasks.join_next().await {
        let t = t.unwrap();
        all.accepted.extend(t.accepted);
        all.unavailable += t.unavailable;
        all.other_errors.extend(t.other_errors);
        all.slowest = all.slowest.max(t.slowest);
    }
    all
}

/// Every accepted order is terminal, none reserved twice, stock conserved.
async fn audit(env: &Env, client: &Client, tally: &Tally, initial: i64) {
    let ids: Vec<String> = tally.accepted.iter().map(|(_, id)| id.clone()).collect();
    let done = client.wait_terminal(&ids, SETTLE).await;
    let held: i64 =
        done.iter().filter(|o| o["status"] == "completed").map(|o| o["items"][0]["quantity"].as_i64().unwrap()).sum();
    let (available, reserved) = env.stock("bolt");
    assert_eq!(reserved, held, "reserved stock equals what completed orders hold");
    assert_eq!(available + reserved, initial, "stock is conserved");
}

#[tokio::test]
async fn rabbitmq_stopped_for_10_seconds() {
    let _serial = SERIAL.lock().await;
    let Some(env) = Env::postgres(true) else { return };
    env.set_stock("bolt", 400);
    let api = Server::start(&env, "api", &[]).await;
    let _workers = [Server::start(&env, "inventory", &[]).await, Server::start(&env, "notifier", &[]).await];
    let start = Instant::now();
    let load = tokio::spawn(drive(api.client.clone(), start + Duration::from_secs(18)));
    tokio::time::sleep(Duration::from_secs(3)).await;
    run("rabbitmqctl", &["-q", "stop_app"]);
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let restarted = Instant::now();
    run("rabbitmqctl", &["-q", "start_app"]);
    let tally = load.await.unwrap();
    assert!(tally.other_errors.is_empty(), "errors seen by clients: {:?}", tally.other_errors);
    let during = tally.accepted.iter().filter(|(at, _)| *at > stopped && *at < restarted).count();
    assert!(during > 0, "orders are accepted into the outbox while RabbitMQ is down");
    audit(&env, &api.client, &tally, 400).await;
}

#[tokio::test]
async fn postgres_restarted_under_load() {
    let _serial = SERIAL.lock().await;
    let Some(env) = Env::postgres(true) else { return };
    env.set_stock("bolt", 400);
    let api = Server::start(&env, "api", &[]).await;
    let _workers = [Server::start(&env, "inventory", &[]).await, Server::start(&env, "notifier", &[]).await];
    let load = tokio::spawn(drive(api.client.clone(), Instant::now() + Duration::from_secs(14)));
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg_cluster("stop");
    tokio::time::sleep(Duration::from_secs(4)).await;
    pg_cluster("start");
    let tally = load.await.unwrap();
    assert!(tally.unavailable > 0, "the API answered 503 while PostgreSQL was down");
    assert!(tally.other_errors.is_empty(), "only 503s during the outage: {:?}", tally.other_errors);
    assert!(tally.slowest < Duration::from_secs(5), "no request hung: slowest took {:?}", tally.slowest);
    audit(&env, &api.client, &tally, 400).await;
}
