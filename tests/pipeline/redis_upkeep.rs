//! How the Redis Streams broker copes over a long life, against
//! `redis-server` processes of the tests' own: a failing entry's retries
//! wait `--retry-base-ms`, as with the other brokers; a Redis restarted
//! without its append-only file is refused until it persists again, with the
//! orders waiting in the outbox meanwhile; and the consumer names of workers
//! that are gone are deleted from their group, those of live ones kept.

use crate::helpers::{eventually, order, Env, Server, REDIS_DURABLE, SETTLE};
use crate::redis::{cluster, order_placed, place_many, xadd};
use std::time::Duration;

/// The milliseconds part of a stream entry id.
fn millis(id: &str) -> u64 {
    id.split('-').next().and_then(|ms| ms.parse().ok()).unwrap_or_else(|| panic!("not an entry id: {id}"))
}

/// An event for an order that does not exist fails at each delivery: with
/// `--retry-base-ms 1500` and two attempts it is dead-lettered no sooner
/// than 1.5 s after it was added (it was 0.2 s whatever the flag said).
#[tokio::test]
async fn retries_wait_the_first_delay_the_flag_sets() {
    let Some(env) = Env::sqlite_redis() else { return };
    let _server = Server::start(&env, "run", &["--retry-base-ms", "1500", "--max-attempts", "2"]).await;
    let missing = uuid::Uuid::now_v7().to_string();
    let event = order_placed(&uuid::Uuid::now_v7().to_string(), &missing, "late", ("pen", 1));
    let added = xadd(&env, &["message_id", "by-hand", "routing_key", "order.placed", "body", &event]);
    eventually(SETTLE, "the event dead-lettered", || async { env.dead_letters().len() == 1 }).await;
    let letter = env.dead_letters().remove(0);
    assert_eq!(letter["attempts"], 2, "{letter}");
    assert_eq!(letter["error"], "delivery_limit", "{letter}");
    let waited = millis(letter["id"].as_str().expect("id")) - millis(&added);
    assert!(waited >= 1500, "dead-lettered {waited} ms after it was added, before its retry was due");
}

/// Redis killed and started again on its port and directory without the
/// append-only file: every role notices (a command failed, so Redis is
/// checked again) and refuses it. Orders are still accepted and wait in the
/// outbox; `/ready` says why; nothing reaches the volatile Redis. Started
/// durable again (it reads its append-only file back), everything resumes and
/// every order completes, each reserved once.
#[tokio::test]
async fn a_redis_restarted_without_persistence_is_refused_until_it_persists() {
    let Some(mut env) = Env::postgres_redis() else { return };
    env.set_stock("mug", 1000);
    let (api, _workers) = cluster(&env, &["--redis-claim-idle-ms", "1000"]).await;
    let before = place_many(&api, "durable", "mug", 10).await;
    api.client.wait_terminal(&before, SETTLE).await;

    env.redis_mut().kill9();
    env.redis_mut().restart_with(&["--appendonly", "no"]).expect("redis-server restarted without persistence");
    let during = place_many(&api, "volatile", "mug", 10).await;
    eventually(SETTLE, "/ready reporting the refused broker", || async {
        let (status, body) = api.client.get("/ready").await;
        let why = body["checks"]["broker"]["error"].as_str().unwrap_or_default().to_owned();
        status == 503 && why.contains("refusing Redis as the broker") && why.contains("appendonly is no")
    })
    .await;
    // Long enough for the relay and the workers to have tried, and backed off.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.sql("SELECT count(*) FROM messages"), "10", "the events wait in the outbox");
    assert_eq!(env.redis().cli(&["DBSIZE"]), "0", "nothing was written to the volatile Redis");
    for id in &during {
        assert_eq!(api.client.get(&format!("/orders/{id}")).await.1["status"], "placed");
    }
    assert!(api.log().contains("publishing and consuming stop until it persists every write"), "{}", api.log());

    env.redis_mut().kill9();
    env.redis_mut().restart_with(REDIS_DURABLE).expect("redis-server restarted durable");
    let after = place_many(&api, "again", "mug", 10).await;
    let ids: Vec<String> = during.into_iter().chain(after).collect();
    let done = api.client.wait_terminal(&ids, SETTLE).await;
    assert!(done.iter().all(|o| o["status"] == "completed"), "{done:?}");
    assert_eq!(env.stock("mug"), (970, 30), "each order reserved once");
    assert_eq!(env.sql("SELECT count(*) FROM inbox WHERE consumer = 'inventory'"), "30");
    assert!(api.log().contains("publishing and consuming resume"), "{}", api.log());
    let (status, _) = api.client.get("/ready").await;
    assert_eq!(status, 200);
}

/// The consumer names of a group, from `XINFO CONSUMERS`.
fn consumers(env: &Env, stream: &str, group: &str) -> Vec<String> {
    let out = env.redis().cli(&["XINFO", "CONSUMERS", stream, group]);
    let lines: Vec<&str> = out.lines().collect();
    lines.windows(2).filter(|pair| pair[0] == "name").map(|pair| pair[1].to_owned()).collect()
}

/// A worker killed with `kill -9` leaves its consumer name in the group; with
/// nothing pending and idle for ten claim timeouts (1 s here), the worker
/// that replaced it deletes it. The live consumers stay.
#[tokio::test]
async fn consumers_that_are_gone_are_deleted() {
    let Some(env) = Env::postgres_redis() else { return };
    env.set_stock("cap", 100);
    let claim = ["--redis-claim-idle-ms", "100"];
    let api = Server::start(&env, "api", &claim).await;
    let _notifier = Server::start(&env, "notifier", &claim).await;
    let mut first = Server::start(&env, "inventory", &claim).await;
    let ids = place_many(&api, "a", "cap", 5).await;
    api.client.wait_terminal(&ids, SETTLE).await;
    let old = consumers(&env, "order-events", "inventory");
    assert_eq!(old.len(), 1, "{old:?}");
    let notifiers = consumers(&env, "inventory-events", "notifier");

    first.kill9();
    let second = Server::start(&env, "inventory", &claim).await;
    let id = api.client.place(&order("b", &[("cap", 1)])).await;
    api.client.wait_terminal(&[id], SETTLE).await;
    eventually(SETTLE, "the killed worker's consumer deleted", || async {
        let now = consumers(&env, "order-events", "inventory");
        now.len() == 1 && now != old
    })
    .await;
    assert!(second.log().contains("deleted consumers that were gone"), "{}", second.log());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(consumers(&env, "inventory-events", "notifier"), notifiers, "the live notifier is kept");
    assert_eq!(consumers(&env, "order-events", "inventory").len(), 1, "the live worker is kept");
    assert_eq!(env.stock("cap"), (94, 6));
}
