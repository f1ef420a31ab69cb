//! What is particular to the Redis Streams broker, against real
//! `redis-server` processes, each test with its own (port, directory,
//! append-only file synced on every write): entries added by hand (twice,
//! poison, foreign fields), a worker and Redis itself killed with `kill -9`,
//! the durability check, and trimming behind a stopped consumer (more in
//! `redis_upkeep`). What every
//! broker promises runs on Redis too, in `contract`. Skipped when `redis-server` (or
//! PostgreSQL) is missing; a failure under ORDERFLOW_REQUIRE_SERVICES=1.

use crate::helpers::{eventually, order, Env, Server, BIN, SETTLE};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// API, inventory and notifier as separate processes, each given `extra`.
pub(crate) async fn cluster(env: &Env, extra: &[&str]) -> (Server, Vec<Server>) {
    let api = Server::start(env, "api", extra).await;
    let workers = vec![Server::start(env, "inventory", extra).await, Server::start(env, "notifier", extra).await];
    (api, workers)
}

/// An `OrderPlaced` event written by hand, as JSON.
pub(crate) fn order_placed(event_id: &str, order_id: &str, customer: &str, (sku, quantity): (&str, i64)) -> String {
    json!({
        "event_id": event_id, "event_type": "OrderPlaced", "order_id": order_id,
        "timestamp": "2026-01-01T00:00:00Z", "customer_id": customer, "items": [{"sku": sku, "quantity": quantity}]
    })
    .to_string()
}

/// `XADD order-events * <fields>`, as someone at `redis-cli` would.
pub(crate) fn xadd(env: &Env, fields: &[&str]) -> String {
    let mut args = vec!["XADD", "order-events", "*"];
    args.extend_from_slice(fields);
    env.redis().cli(&args)
}

/// Places `n` orders of one `sku` each, concurrently; returns their ids.
pub(crate) async fn place_many(api: &Server, prefix: &str, sku: &str, n: usize) -> Vec<String> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let c = api.client.clone();
            let (customer, sku) = (format!("{prefix}{i}"), sku.to_owned());
            tokio::spawn(async move { c.place(&order(&customer, &[(&sku, 1)])).await })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids
}

/// The same event added to the stream twice by hand reserves once.
#[tokio::test]
async fn an_event_added_twice_by_hand_reserves_once() {
    let Some(env) = Env::postgres_redis() else { return };
    env.set_stock("lamp", 10);
    let (api, _workers) = cluster(&env, &[]).await;
    let first = api.client.place(&order("dup", &[("lamp", 4)])).await;
    api.client.wait_terminal(std::slice::from_ref(&first), SETTLE).await;
    let event_id = env.sql("SELECT event_id FROM inbox WHERE consumer = 'inventory'");
    let again = order_placed(&event_id, &first, "dup", ("lamp", 4));
    for _ in 0..2 {
        xadd(&env, &["message_id", "by-hand", "routing_key", "order.placed", "body", &again]);
    }
    let second = api.client.place(&order("dup", &[("lamp", 4)])).await;
    let done = api.client.wait_terminal(&[first, second], SETTLE).await;
    assert!(done.iter().all(|o| o["status"] == "completed"), "{done:?}");
    eventually(SETTLE, "every entry acknowledged", || async {
        env.redis().cli(&["XPENDING", "order-events", "inventory"]).lines().next() == Some("0")
    })
    .await;
    assert_eq!(env.stock("lamp"), (2, 8), "the repeats reserved nothing");
    assert_eq!(env.sql("SELECT count(*) FROM inbox WHERE consumer = 'inventory'"), "2");
    assert!(env.dead_letters().is_empty());
}

/// Entries that are no events, added by hand (a bad body; fields orderflow
/// never writes) go to the dead-letter stream at once, and the orders
/// around them finish. `dlq list` shows their fields as they were; `dlq
/// replay` puts them back, and, still poison, they are dead-lettered again.
#[tokio::test]
async fn poison_entries_are_dead_lettered_at_once() {
    let Some(env) = Env::sqlite_redis() else { return };
    env.set_stock("pen", 10);
    let server = Server::start(&env, "run", &["--max-attempts", "5"]).await;
    let before = server.client.place(&order("poison", &[("pen", 1)])).await;
    xadd(&env, &["message_id", "m1", "routing_key", "order.placed", "body", "not json"]);
    xadd(&env, &["payload", "{}", "origin", "someone at redis-cli"]);
    let after = server.client.place(&order("poison", &[("pen", 1)])).await;
    let done = server.client.wait_terminal(&[before, after], SETTLE).await;
    assert!(done.iter().all(|o| o["status"] == "completed"), "{done:?}");
    eventually(SETTLE, "both poison entries in the dead-letter stream", || async { env.dead_letters().len() == 2 })
        .await;
    let letters = env.dead_letters();
    let by_body = |body: &str| letters.iter().find(|l| l["body"] == body).cloned().expect("listed");
    let bad_body = by_body("not json");
    assert_eq!(
        bad_body["fields"],
        json!([["message_id", "m1"], ["routing_key", "order.placed"], ["body", "not json"]])
    );
    assert_eq!(bad_body["attempts"], 1, "dead-lettered at its first delivery: {bad_body}");
    assert_eq!(bad_body["queue"], "order-events");
    let foreign = by_body("");
    assert_eq!(foreign["fields"], json!([["payload", "{}"], ["origin", "someone at redis-cli"]]));
    assert_eq!(foreign["attempts"], 1);
    assert!(foreign["error"].as_str().unwrap().contains("unexpected fields"), "{foreign}");
    assert_eq!(env.redis().xlen("order-events-dlq"), 2);

    let replayed = env.cli(&["dlq", "replay", "--all"]);
    assert!(replayed.contains("replayed 2 message"), "{replayed}");
    let old_ids: Vec<Value> = letters.iter().map(|l| l["id"].clone()).collect();
    eventually(SETTLE, "the replayed entries dead-lettered again", || async {
        let again = env.dead_letters();
        again.len() == 2 && again.iter().all(|l| !old_ids.contains(&l["id"]))
    })
    .await;
    let again = env.dead_letters();
    assert!(again.iter().any(|l| l["fields"] == foreign["fields"]), "replayed as they were: {again:?}");
    // One by id, too.
    let one = again[0]["id"].as_str().unwrap().to_owned();
    assert!(env.cli(&["dlq", "replay", &one]).contains("replayed 1 message"));
    eventually(SETTLE, "the one replayed entry back", || async {
        let letters = env.dead_letters();
        letters.len() == 2 && letters.iter().all(|l| l["id"] != one.as_str())
    })
    .await;
}

/// A worker killed with `kill -9` while it holds a batch (its transaction
/// waits on a row lock held here): the entries it left pending are claimed
/// by another worker once idle for `--redis-claim-idle-ms`, and every order
/// finishes, each reserved once.
#[tokio::test]
async fn a_killed_workers_entries_are_claimed() {
    let Some(env) = Env::postgres_redis() else { return };
    env.set_stock("bolt", 100);
    let claim = ["--redis-claim-idle-ms", "500"];
    let api = Server::start(&env, "api", &claim).await;
    let _notifier = Server::start(&env, "notifier", &claim).await;
    let mut doomed = Server::start(&env, "inventory", &claim).await;
    // Hold the stock row, so the worker's batch stops inside its transaction.
    let mut lock = Command::new("psql")
        .args(["-qtA", "-v", "ON_ERROR_STOP=1", &env.database_url])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("psql");
    let mut sql = lock.stdin.take().expect("stdin");
    writeln!(sql, "BEGIN; SELECT * FROM inventory WHERE sku = 'bolt' FOR UPDATE;").unwrap();
    sql.flush().unwrap();
    eventually(SETTLE, "the row lock taken", || async {
        env.sql("SELECT count(*) FROM pg_locks WHERE mode = 'RowShareLock'") != "0"
    })
    .await;
    let ids = place_many(&api, "k", "bolt", 20).await;
    eventually(SETTLE, "the worker holding entries", || async {
        env.redis().cli(&["XPENDING", "order-events", "inventory"]).lines().next().is_some_and(|n| n != "0")
    })
    .await;
    doomed.kill9();
    drop(sql);
    let _ = lock.kill();
    let _ = lock.wait();
    let rescuer = Server::start(&env, "inventory", &claim).await;
    let done = api.client.wait_terminal(&ids, SETTLE).await;
    assert!(done.iter().all(|o| o["status"] == "completed"), "{done:?}");
    assert_eq!(env.stock("bolt"), (80, 20));
    assert_eq!(env.sql("SELECT count(*) FROM inbox WHERE consumer = 'inventory'"), "20", "each reserved once");
    assert!(rescuer.log().contains("claimed entries left pending by another consumer"), "{}", rescuer.log());
}

/// Redis (append-only, fsync always) killed with `kill -9` under load and
/// started again on the same port and directory: the API keeps accepting
/// into the outbox meanwhile, and every order that got a 202 completes.
#[tokio::test]
async fn redis_killed_under_load_loses_no_accepted_order() {
    let Some(mut env) = Env::postgres_redis() else { return };
    env.set_stock("nut", 1_000_000);
    let (api, _workers) = cluster(&env, &["--redis-claim-idle-ms", "1000"]).await;
    let stop = Instant::now() + Duration::from_secs(5);
    let clients: Vec<_> = (0..6)
        .map(|c| {
            let client = api.client.clone();
            tokio::spawn(async move {
                let mut accepted = Vec::new();
                while Instant::now() < stop {
                    let resp = client.post("/orders", &order(&format!("load{c}"), &[("nut", 1)]), None).await;
                    if resp.status() == 202 {
                        let id = resp.json::<Value>().await.unwrap()["order_id"].as_str().unwrap().to_owned();
                        accepted.push((Instant::now(), id));
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                accepted
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    env.redis_mut().kill9();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let restarted = Instant::now();
    env.redis_mut().restart().expect("redis-server restarted");
    let mut accepted = Vec::new();
    for c in clients {
        accepted.extend(c.await.unwrap());
    }
    let while_down = accepted.iter().filter(|(at, _)| *at > killed && *at < restarted).count();
    assert!(while_down > 10, "the API kept accepting while Redis was down: {while_down}");
    let ids: Vec<String> = accepted.into_iter().map(|(_, id)| id).collect();
    let done = api.client.wait_terminal(&ids, Duration::from_secs(90)).await;
    assert!(done.iter().all(|o| o["status"] == "completed"));
    let reserved = ids.len() as i64;
    assert_eq!(env.stock("nut"), (1_000_000 - reserved, reserved), "each accepted order reserved once");
}

/// Runs `orderflow run` and, if it exits `within`, returns its exit success
/// and stderr; `None` if it is still running then (it is killed).
fn run_briefly(env: &Env, extra: &[&str], within: Duration) -> Option<(bool, String)> {
    let log = env.dir.path().join("refused.log");
    let mut child = Command::new(BIN)
        .args(["--database-url", &env.database_url, "--broker-url", &env.broker_url, "run"])
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("starting orderflow");
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some((status.success(), std::fs::read_to_string(&log).unwrap_or_default()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A Redis that could lose events it acknowledged (no append-only file;
/// fsync once a second; settings that cannot be read) is refused with a
/// clear message, and used with `--allow-volatile-broker`.
#[tokio::test]
async fn a_redis_that_could_lose_events_is_refused() {
    let cases: [(&[&str], &str); 3] = [
        (&["--appendonly", "no"], "appendonly is no"),
        (&["--appendonly", "yes", "--appendfsync", "everysec"], "appendfsync is everysec"),
        (&["--appendonly", "yes", "--appendfsync", "always", "--rename-command", "CONFIG", ""], "cannot be read"),
    ];
    for (settings, why) in cases {
        let Some(env) = Env::embedded().with_redis(settings) else { return };
        let refused = run_briefly(&env, &[], Duration::from_secs(20));
        let (ok, stderr) = refused.expect("orderflow refused the broker and exited");
        assert!(!ok, "{settings:?}");
        assert!(stderr.contains("refusing Redis as the broker") && stderr.contains(why), "{settings:?}: {stderr}");
        assert!(stderr.contains("--allow-volatile-broker"), "{stderr}");
        let accepted = run_briefly(&env, &["--allow-volatile-broker"], Duration::from_secs(3));
        assert!(accepted.is_none(), "{settings:?} accepted with the flag: {accepted:?}");
    }
    let Some(env) = Env::embedded().with_redis(&["--appendonly", "no"]) else { return };
    env.set_stock("cup", 1);
    let server = Server::start(&env, "run", &["--allow-volatile-broker"]).await;
    let id = server.client.place(&order("volatile", &[("cup", 1)])).await;
    let done = server.client.wait_terminal(&[id], SETTLE).await;
    assert_eq!(done[0]["status"], "completed");
    assert!(server.log().contains("may lose events it acknowledged"), "the risk is logged");
}

/// With the notifier stopped (SIGSTOP), the streams are trimmed as often as
/// every 20 ms: `order-events`, acknowledged by the inventory service, is
/// emptied, while every entry of `inventory-events` the notifier has not
/// acknowledged stays. Once it runs again every order completes and its
/// stream is trimmed too.
#[tokio::test]
async fn trimming_keeps_what_a_stopped_consumer_has_not_acknowledged() {
    let Some(env) = Env::postgres_redis() else { return };
    env.set_stock("sock", 1000);
    let (api, workers) = cluster(&env, &["--redis-trim-interval-ms", "20"]).await;
    let warmup = place_many(&api, "w", "sock", 5).await;
    api.client.wait_terminal(&warmup, SETTLE).await;
    workers[1].signal("STOP");
    let mut ids = Vec::new();
    for round in 0..6 {
        ids.extend(place_many(&api, &format!("s{round}-"), "sock", 10).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually(SETTLE, "every order reserved", || async {
        let mut all = true;
        for id in &ids {
            all &= api.client.get(&format!("/orders/{id}")).await.1["status"] == "reserved";
        }
        all
    })
    .await;
    eventually(SETTLE, "order-events trimmed", || async { env.redis().xlen("order-events") == 0 }).await;
    // More publishes, so the relay trims inventory-events after every order above was reserved.
    let more = place_many(&api, "late", "sock", 5).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kept = env.redis().cli(&["XRANGE", "inventory-events", "-", "+"]);
    for id in &ids {
        assert!(kept.contains(id.as_str()), "the event of {id} was trimmed before the notifier had it");
    }
    workers[1].signal("CONT");
    ids.extend(more);
    let done = api.client.wait_terminal(&ids, SETTLE).await;
    assert!(done.iter().all(|o| o["status"] == "completed"));
    eventually(SETTLE, "inventory-events trimmed once acknowledged", || async {
        env.redis().xlen("inventory-events") == 0
    })
    .await;
}
