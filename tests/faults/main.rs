//! The fault suite: steady load through nginx into the distributed topology
//! (3 API replicas, relay, 2 inventory workers, a notifier, PostgreSQL, and
//! RabbitMQ or Redis Streams), one fault injected per scenario. After each,
//! once the system is idle, it checks what a user would: no accepted order
//! lost, none reserved twice, stock conserved, only the poison messages in
//! the DLQ, cancelled orders hold no stock and shipped stock is gone for
//! good, and prints a table row. Faults really kill processes and stop the
//! machine's servers with their own commands, so this binary runs its tests
//! one at a time. Each broker has its test (`fault_suite`,
//! `redis_fault_suite`); `ORDERFLOW_FAULT_ONLY` runs only the scenarios whose
//! name contains it (`Redis` for the Redis ones). A fast rolling restart,
//! seen by a client that retries, has its own test (`restart.rs`). Skipped
//! when the servers are absent, unless ORDERFLOW_REQUIRE_SERVICES=1.

mod audit;
mod cluster;
#[allow(dead_code)]
#[path = "../pipeline/helpers.rs"]
mod helpers;
mod load;
mod restart;

use audit::{audit, wait_idle, Row};
use cluster::{Cluster, Topology};
use helpers::{Client, Env};
use std::io::Write;
use std::process::Command;
use std::time::Duration;
use tokio::sync::Mutex;

/// One fault at a time: they share the machine's servers.
static SERIAL: Mutex<()> = Mutex::const_new(());

const STOCK_PER_SKU: i64 = 2_000;
const POISON: usize = 20;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    KillInventory,
    KillApi,
    StopRabbitMq,
    KillRedis,
    RestartPostgres,
    KillRelay,
    PoisonBurst,
    RollingRestart,
}

impl Fault {
    const RABBITMQ: [Fault; 7] = [
        Fault::KillInventory,
        Fault::KillApi,
        Fault::StopRabbitMq,
        Fault::RestartPostgres,
        Fault::KillRelay,
        Fault::PoisonBurst,
        Fault::RollingRestart,
    ];

    /// The rolling restart is left out: it is the same on either broker.
    const REDIS: [Fault; 6] = [
        Fault::KillInventory,
        Fault::KillApi,
        Fault::KillRedis,
        Fault::RestartPostgres,
        Fault::KillRelay,
        Fault::PoisonBurst,
    ];

    fn name(self, topology: Topology) -> String {
        let name = match self {
            Fault::KillInventory => "kill -9 an inventory worker mid-batch",
            Fault::KillApi => "kill -9 an API replica",
            Fault::StopRabbitMq => "RabbitMQ stopped for 10 s",
            Fault::KillRedis => "kill -9 Redis, restarted 5 s later",
            Fault::RestartPostgres => "PostgreSQL restarted",
            Fault::KillRelay => "kill -9 the relay",
            Fault::PoisonBurst => "burst of 20 poison messages",
            Fault::RollingRestart => "rolling restart (SIGTERM) of the API replicas",
        };
        match topology {
            Topology::RabbitMq => name.to_owned(),
            Topology::Redis => format!("Redis: {name}"),
        }
    }

    fn load_for(self) -> Duration {
        Duration::from_secs(match self {
            Fault::StopRabbitMq => 16,
            Fault::KillRedis => 11,
            // Each replica drains for 5 s, restarts, and the script waits 3 s:
            // about 27 s from the fault's start, 3 s into the load.
            Fault::RollingRestart => 32,
            _ => 10,
        })
    }

    /// Injects the fault while the load runs, and undoes it.
    async fn inject(self, cluster: &Cluster) {
        let sleep = |s: u64| tokio::time::sleep(Duration::from_secs(s));
        sleep(3).await;
        match self {
            Fault::KillInventory | Fault::KillApi | Fault::KillRelay => {
                let name = match self {
                    Fault::KillInventory => "inventory1",
                    Fault::KillApi => "api2",
                    _ => "relay",
                };
                cluster.kill(name);
                sleep(3).await;
                cluster.start(name);
            }
            Fault::StopRabbitMq => {
                run("rabbitmqctl", &["-q", "stop_app"]);
                sleep(10).await;
                run("rabbitmqctl", &["-q", "start_app"]);
            }
            Fault::KillRedis => {
                cluster.kill("redis");
                sleep(5).await;
                cluster.start("redis");
            }
            Fault::RestartPostgres => {
                pg_cluster("stop");
                sleep(3).await;
                pg_cluster("start");
            }
            Fault::PoisonBurst => match cluster.redis_port {
                Some(port) => add_poison_entries(port),
                None => publish_poison(cluster.broker_url()).await,
            },
            Fault::RollingRestart => {
                let out = cluster.script(&["restart-api"]);
                assert!(out.contains("rolling restart done"), "{out}");
            }
        }
    }
}

fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd).args(args).status().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(status.success(), "{cmd} {args:?} failed");
}

fn pg_cluster(action: &str) {
    let version = std::fs::read_dir("/etc/postgresql").expect("/etc/postgresql").next().expect("a cluster").unwrap();
    run("pg_ctlcluster", &["--skip-systemctl-redirect", &version.file_name().to_string_lossy(), "main", action]);
}

/// Publishes bodies that are not events straight to both work queues.
async fn publish_poison(broker_url: &str) {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    use lapin::{BasicProperties, Connection, ConnectionProperties};
    let conn = Connection::connect(broker_url, ConnectionProperties::default()).await.expect("RabbitMQ");
    let channel = conn.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    for i in 0..POISON {
        let queue = if i % 2 == 0 { "order-events" } else { "inventory-events" };
        let body = format!("poison {i}: not an event");
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let _ = conn.close(200, "done".into()).await;
}

/// Adds entries whose body is not an event to both streams, as someone at
/// `redis-cli` would.
fn add_poison_entries(port: u16) {
    for i in 0..POISON {
        let stream = if i % 2 == 0 { "order-events" } else { "inventory-events" };
        let body = format!("poison {i}: not an event");
        let fields = ["message_id", "poison", "routing_key", "order.placed", "body", body.as_str()];
        run("redis-cli", &[&["-p", &port.to_string(), "XADD", stream, "*"][..], &fields[..]].concat());
    }
}

fn report(text: &str) {
    // Straight to stderr, past the test harness's capture, so the table shows.
    let _ = writeln!(std::io::stderr(), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_suite() {
    run_suite(Topology::RabbitMq, &Fault::RABBITMQ).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_fault_suite() {
    run_suite(Topology::Redis, &Fault::REDIS).await;
}

/// Brings the cluster up on `topology` and runs the scenarios of `faults`
/// that `ORDERFLOW_FAULT_ONLY` selects (all when it is unset).
async fn run_suite(topology: Topology, faults: &[Fault]) {
    // Part of a scenario's name, to run only the scenarios that match.
    let only = std::env::var("ORDERFLOW_FAULT_ONLY").unwrap_or_default();
    let chosen: Vec<(usize, Fault)> =
        faults.iter().copied().enumerate().filter(|(_, f)| f.name(topology).contains(only.as_str())).collect();
    if chosen.is_empty() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let Some(mut env) = Env::postgres(topology == Topology::RabbitMq) else { return };
    let cluster = Cluster::up(&env, topology);
    env.broker_url = cluster.broker_url().to_owned();
    let client = Client::new(&format!("127.0.0.1:{}", cluster.port));
    let mut rows: Vec<Row> = Vec::new();
    for (n, fault) in chosen {
        let tag = format!("f{n}");
        let skus: Vec<String> = (1..=4).map(|k| format!("{tag}-sku{k}")).collect();
        for sku in &skus {
            env.set_stock(sku, STOCK_PER_SKU);
        }
        let dead_before = env.dead_letters().len();
        let load = tokio::spawn(load::drive(client.clone(), skus.clone(), fault.load_for(), tag));
        fault.inject(&cluster).await;
        let tally = load.await.unwrap();
        wait_idle(&env, Duration::from_secs(120)).await;
        let expected_dead = if fault == Fault::PoisonBurst { POISON } else { 0 };
        let mut dead = env.dead_letters().len() - dead_before;
        for _ in 0..100 {
            if dead >= expected_dead {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            dead = env.dead_letters().len() - dead_before;
        }
        let row = audit(&env, fault.name(topology), &tally, &skus, STOCK_PER_SKU, dead);
        report(&format!("{}\n{}", Row::HEADER, row.line()));
        assert_eq!(row.lost, 0, "{}: accepted orders lost", row.scenario);
        assert_eq!(row.reserved_twice, 0, "{}: stock reserved twice", row.scenario);
        assert!(row.stock_conserved, "{}: stock not conserved", row.scenario);
        assert_eq!(row.cancelled_holding, 0, "{}: cancelled orders still hold stock", row.scenario);
        assert!(
            tally.move_failures.is_empty(),
            "{}: cancels or shipments failed: {:?}",
            row.scenario,
            tally.move_failures
        );
        assert!(row.cancelled > 0 && row.shipped > 0, "{}: nothing cancelled or shipped", row.scenario);
        assert_eq!(row.duplicate_retries, 0, "{}: a retried key made a second order", row.scenario);
        assert_eq!(row.dead_letters, expected_dead, "{}: dead letters", row.scenario);
        assert!(row.accepted > 0, "{}: no order was accepted", row.scenario);
        if fault != Fault::RestartPostgres {
            assert_eq!(row.client_errors, 0, "{}: clients saw errors", row.scenario);
        }
        rows.push(row);
    }
    let table: Vec<String> = rows.iter().map(Row::line).collect();
    report(&format!("\nfault suite ({topology:?})\n{}\n{}", Row::HEADER, table.join("\n")));
}
