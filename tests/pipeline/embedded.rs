//! The embedded mode: SQLite and its own queue, every role in one process.
//! What it shares with the other modes is in `contract`; here is what the
//! one process does on its own: health, kill -9 and SIGTERM under load,
//! shedding overload.

use crate::helpers::{order, Env, Server, SETTLE};
use rusqlite::Connection;
use serde_json::Value;
use std::time::Duration;

async fn start() -> (Env, Server) {
    let env = Env::embedded();
    let server = Server::start(&env, "run", &["--max-attempts", "3"]).await;
    (env, server)
}

#[tokio::test]
async fn health_and_ready() {
    let (env, server) = start().await;
    let (status, body) = server.client.get("/health").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = server.client.get("/ready").await;
    assert_eq!(status, 200);
    assert_eq!(body["checks"]["store"]["status"], "ok");
    assert_eq!(body["checks"]["broker"]["status"], "ok");
    env.set_stock("tea", 1);
    let id = server.client.place(&order("c1", &[("tea", 1)])).await;
    server.client.wait_terminal(&[id], SETTLE).await;
    let metrics = server.client.http.get(server.client.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("orderflow_queued_messages"), "{metrics}");
    // Commits and the jobs they carried are counted, and so is where the
    // writer's time goes.
    for counter in [
        "orderflow_store_commits_total",
        "orderflow_store_jobs_total",
        "orderflow_store_writer_duration_seconds_count{phase=\"exec\"}",
        "orderflow_store_writer_duration_seconds_sum{phase=\"commit\"}",
    ] {
        let n = metrics.lines().find_map(|l| l.strip_prefix(counter)).map(|v| v.trim().parse::<f64>().unwrap());
        assert!(n.is_some_and(|n| n > 0.0), "{counter} in {metrics}");
    }
}

/// Places orders from many tasks until `stop`, returning the ids that got a 202.
async fn load(server: &Server, n: usize) -> tokio::task::JoinHandle<Vec<String>> {
    let client = server.client.clone();
    tokio::spawn(async move {
        let mut ok = Vec::new();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let c = client.clone();
            tasks.spawn(async move {
                // Requests in flight when the server dies fail; that is expected.
                let body = order("load", &[("gadget", 1 + (i % 3) as i64)]);
                let resp = c.http.post(c.url("/orders")).json(&body).send().await.ok()?;
                match resp.status().as_u16() {
                    202 => Some(resp.json::<Value>().await.ok()?["order_id"].as_str()?.to_owned()),
                    _ => None,
                }
            });
            if tasks.len() >= 32 {
                if let Some(Ok(Some(id))) = tasks.join_next().await {
                    ok.push(id);
                }
            }
        }
        while let Some(r) = tasks.join_next().await {
            if let Ok(Some(id)) = r {
                ok.push(id);
            }
        }
        ok
    })
}

/// Checks that every accepted order finished, that none reserved twice and
/// that stock is conserved. Orders stored just before the kill whose answer
/// was lost with the connection count too: they are in the store.
async fn audit(env: &Env, server: &Server, accepted: &[String], initial: i64) {
    server.client.wait_terminal(accepted, SETTLE).await;
    let all = server.client.orders_of("load").await;
    let ids: Vec<String> = all.iter().map(|o| o["order_id"].as_str().unwrap().to_owned()).collect();
    let done = server.client.wait_terminal(&ids, SETTLE).await;
    let held: i64 =
        done.iter().filter(|o| o["status"] == "completed").map(|o| o["items"][0]["quantity"].as_i64().unwrap()).sum();
    let (available, reserved) = env.stock("gadget");
    assert_eq!(reserved, held, "stock reserved equals what completed orders hold: none reserved twice");
    assert_eq!(available + reserved, initial, "stock is conserved");
}

#[tokio::test]
async fn kill_9_under_load_loses_nothing() {
    let env = Env::embedded();
    env.set_stock("gadget", 1500);
    let mut server = Server::start(&env, "run", &[]).await;
    let load = load(&server, 3000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill9();
    let accepted = load.await.unwrap();
    assert!(!accepted.is_empty(), "some orders were accepted before the kill");
    let server = Server::start(&env, "run", &[]).await;
    audit(&env, &server, &accepted, 1500).await;
}

#[tokio::test]
async fn sigterm_finishes_in_flight_work_and_exits_0() {
    let env = Env::embedded();
    env.set_stock("gadget", 800);
    // Without the drain, so SIGTERM meets the work in flight (drain.rs tests the drain).
    let mut server = Server::start(&env, "run", &["--drain-secs", "0"]).await;
    let load = load(&server, 1500).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}; its log:\n{}", server.log());
    // Every notification recorded before the exit has its line in the log.
    let recorded: usize = sqlite(&env).query_row("SELECT count(*) FROM notifications", [], |r| r.get(0)).unwrap();
    let lines = server.log().lines().filter(|l| l.contains(" notification ")).count();
    assert!(recorded > 0, "the notifier recorded nothing before the exit");
    assert_eq!(lines, recorded, "one line for each notification recorded");
    let accepted = load.await.unwrap();
    let server = Server::start(&env, "run", &[]).await;
    audit(&env, &server, &accepted, 800).await;
}

fn sqlite(env: &Env) -> Connection {
    let conn = Connection::open(env.dir.path().join("orderflow.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

/// Past its in-flight limit a replica answers 503 with Retry-After at once
/// instead of queueing requests until they time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_quickly() {
    let env = Env::embedded();
    let server = Server::start(&env, "run", &["--max-in-flight", "2"]).await;
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let c = server.client.clone();
            tokio::spawn(async move {
                let resp = c.post("/orders", &order(&format!("busy{i}"), &[("pen", 1)]), None).await;
                let retry_after = resp.headers().get("retry-after").is_some();
                (resp.status().as_u16(), retry_after, resp.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let (mut accepted, mut shed) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            (202, _, _) => accepted += 1,
            (503, true, body) => {
                assert_eq!(body["error"]["code"], "overloaded");
                shed += 1;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(accepted > 0 && shed > 0, "{accepted} accepted, {shed} shed");
    assert!(started.elapsed() < Duration::from_secs(10), "answers came fast: {:?}", started.elapsed());
}

/// The in-flight limit is the process's, across every route, and leaves out
/// the liveness check: a request still sending its body holds the only slot.
#[tokio::test]
async fn the_in_flight_limit_spans_every_route_but_health() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = Env::embedded();
    let server = Server::start(&env, "run", &["--max-in-flight", "1"]).await;
    let body = order("slow", &[("pen", 1)]).to_string();
    let head = format!(
        "POST /orders HTTP/1.1\r\nHost: orderflow\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let addr = server.client.url("").trim_start_matches("http://").to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut slow = 'held: loop {
        let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
        slow.write_all(head.as_bytes()).await.unwrap();
        slow.write_all(&body.as_bytes()[..5]).await.unwrap();
        // Once the server holds it, another route is shed. A probe that
        // gets in first takes the slot for a moment, and may have the slow
        // request shed instead: then it is sent again.
        loop {
            let (status, answer) = server.client.get("/ready").await;
            if status == 503 {
                assert_eq!(answer["error"]["code"], "overloaded");
                break 'held slow;
            }
            assert!(std::time::Instant::now() < deadline, "GET /ready was never shed: {status} {answer}");
            let mut byte = [0u8; 1];
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(20), slow.peek(&mut byte)).await {
                break; // answered (shed) or closed: send it again
            }
        }
    };
    let (status, _) = server.client.get("/order/get/01900000-0000-7000-8000-000000000000").await;
    assert_eq!(status, 503);
    assert_eq!(server.client.get("/health").await.0, 200, "the liveness check is not limited");

    // The rest of the body arrives: the order is accepted and the slot freed.
    slow.write_all(&body.as_bytes()[5..]).await.unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    assert_eq!(server.client.get("/ready").await.0, 200);
}
