//! Steady load through nginx: about 1,000 orders/s over several SKUs, sent by
//! one of two clients. `drive`: every tenth request with an Idempotency-Key
//! and sent twice (a deliberate retry), and three orders in ten moved on:
//! one cancelled as soon as it is accepted (racing its reservation), one
//! cancelled and one shipped once decided. `drive_careful`: every request
//! with a key of its own, sent again once after 0.5 s if it failed, the way a
//! careful client rides out a replica going away.

use crate::helpers::{order, Client, OPERATOR_TOKEN};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const RATE_PER_SEC: u64 = 1000;
const MAX_IN_FLIGHT: usize = 128;
/// How long the careful client waits before its one retry.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// How long a cancel or a shipment is retried, and an order waited for to
/// be decided: longer than any fault keeps the pipeline away.
const MOVE_PATIENCE: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Tally {
    pub sent: usize,
    pub accepted: HashSet<String>,
    /// Failed answers (5xx; with `drive_careful`, any status but 202, after the retry).
    pub server_errors: usize,
    pub transport_errors: usize,
    /// Retries with the same key that came back with a different order.
    pub duplicate_retries: usize,
    /// `drive_careful`: first attempts that failed and were sent again.
    pub retried: usize,
    /// `drive_careful`: the order each key was answered with.
    pub orders_by_key: HashMap<String, String>,
    /// `drive_careful`: the first few failures that survived the retry, to show.
    pub failures: Vec<String>,
    /// `drive`: orders cancelled and shipped, as answered.
    pub cancelled: HashSet<String>,
    pub shipped: HashSet<String>,
    /// `drive`: cancels and shipments still failing after `MOVE_PATIENCE`,
    /// or answered other than the order's status allows.
    pub move_failures: Vec<String>,
}

pub async fn drive(client: Client, skus: Vec<String>, duration: Duration, tag: String) -> Tally {
    let end = Instant::now() + duration;
    let moves = Arc::new(Mutex::new(tokio::task::JoinSet::new()));
    let tally = pace(
        || Instant::now() < end,
        |n, tally| {
            let client = client.clone();
            let body = order(&format!("{tag}-c{}", n % 50), &[(&skus[n % skus.len()], 1 + (n % 3) as i64)]);
            let key = n.is_multiple_of(10).then(|| format!("{tag}-key-{n}"));
            let moves = moves.clone();
            async move {
                let first = send(&client, &body, key.as_deref(), &tally).await;
                if let Some(key) = key {
                    let second = send(&client, &body, Some(&key), &tally).await;
                    if let (Some(a), Some(b)) = (&first, second) {
                        if *a != b {
                            tally.lock().unwrap().duplicate_retries += 1;
                        }
                    }
                }
                let step = match n % 10 {
                    3 => Move::CancelAtOnce,
                    6 => Move::CancelOnceDecided,
                    8 => Move::ShipOnceDecided,
                    _ => return,
                };
                if let Some(id) = first {
                    // Outside the pace's budget: waiting for the order to be decided
                    // must not slow the orders down.
                    moves.lock().unwrap().spawn(step.run(client, id, tally));
                }
            }
        },
    )
    .await;
    let mut moves = std::mem::take(&mut *moves.lock().unwrap());
    while moves.join_next().await.is_some() {}
    finished(tally)
}

/// What `drive` does with an accepted order after placing it.
#[derive(Clone, Copy)]
enum Move {
    CancelAtOnce,
    CancelOnceDecided,
    ShipOnceDecided,
}

impl Move {
    /// Makes the move, as a careful client would: retried while the answer
    /// is a `5xx` or none (both moves are idempotent). A refusal (`409`) is
    /// right only for an order that was rejected.
    async fn run(self, client: Client, id: String, tally: Arc<Mutex<Tally>>) {
        let deadline = Instant::now() + MOVE_PATIENCE;
        if !matches!(self, Move::CancelAtOnce) && decided(&client, &id, deadline).await.as_deref() != Some("completed")
        {
            return; // rejected, or never decided: the audit counts it lost
        }
        let (path, ship) = match self {
            Move::ShipOnceDecided => (format!("/admin/orders/{id}/ship"), true),
            _ => (format!("/orders/{id}/cancel"), false),
        };
        let outcome = loop {
            let mut req = client.http.post(client.url(&path)).timeout(Duration::from_secs(20));
            if ship {
                req = req.bearer_auth(OPERATOR_TOKEN);
            }
            let answer = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let body: serde_json::Value = resp.json().await.unwrap_or_default();
                    Some((status, body))
                }
                Err(_) => None,
            };
            match answer {
                Some((200, body)) => break Ok(body["status"].as_str().unwrap_or_default().to_owned()),
                Some((409, _)) => break Err("409".to_owned()),
                Some((status, body)) if status < 500 => break Err(format!("{status} {body}")),
                _ if Instant::now() > deadline => break Err(format!("still failing at the deadline: {answer:?}")),
                _ => tokio::time::sleep(RETRY_AFTER).await,
            }
        };
        let refused_rightly = outcome.as_ref().err().is_some_and(|e| e == "409")
            && decided(&client, &id, deadline).await.as_deref() == Some("rejected");
        let mut tally = tally.lock().unwrap();
        match outcome.as_deref() {
            Ok("cancelled") if !ship => {
                tally.cancelled.insert(id);
            }
            Ok("shipped") if ship => {
                tally.shipped.insert(id);
            }
            _ if refused_rightly => {}
            _ => tally.move_failures.push(format!("{path}: {outcome:?}")),
        }
    }
}

/// Polls the order until it is no longer `placed` or `reserved`: its status,
/// or None at the deadline. Errors count as "not yet", as faults make them.
async fn decided(client: &Client, id: &str, deadline: Instant) -> Option<String> {
    while Instant::now() < deadline {
        let resp = client.http.get(client.url(&format!("/orders/{id}"))).timeout(Duration::from_secs(5)).send().await;
        if let Ok(resp) = resp {
            if resp.status() == 200 {
                let body: serde_json::Value = resp.json().await.unwrap_or_default();
                match body["status"].as_str() {
                    Some("placed" | "reserved") | None => {}
                    Some(status) => return Some(status.to_owned()),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

/// Runs the careful client until `stop` fires.
pub async fn drive_careful(client: Client, skus: Vec<String>, stop: CancellationToken, tag: String) -> Tally {
    let tally = pace(
        || !stop.is_cancelled(),
        |n, tally| {
            let client = client.clone();
            let body = order(&format!("{tag}-c{}", n % 50), &[(&skus[n % skus.len()], 1 + (n % 3) as i64)]);
            let key = format!("{tag}-key-{n}");
            async move {
                let mut answer = attempt(&client, &body, &key, &tally).await;
                if answer.is_err() {
                    tally.lock().unwrap().retried += 1;
                    tokio::time::sleep(RETRY_AFTER).await;
                    answer = attempt(&client, &body, &key, &tally).await;
                }
                let mut tally = tally.lock().unwrap();
                match answer {
                    Ok(id) => {
                        tally.accepted.insert(id.clone());
                        tally.orders_by_key.insert(key, id);
                    }
                    Err(failure) => {
                        if failure.starts_with("no answer") {
                            tally.transport_errors += 1;
                        } else {
                            tally.server_errors += 1;
                        }
                        if tally.failures.len() < 5 {
                            tally.failures.push(format!("{key}: {failure}"));
                        }
                    }
                }
            }
        },
    )
    .await;
    finished(tally)
}

/// Starts `request(n, tally)` about RATE_PER_SEC times a second, at most
/// MAX_IN_FLIGHT at once, while `more()` holds; waits for them all.
async fn pace<F, R>(more: impl Fn() -> bool, mut request: R) -> Arc<Mutex<Tally>>
where
    R: FnMut(usize, Arc<Mutex<Tally>>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut tasks = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE_PER_SEC));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut n = 0usize;
    while more() {
        tick.tick().await;
        while tasks.len() >= MAX_IN_FLIGHT {
            tasks.join_next().await;
        }
        n += 1;
        tasks.spawn(request(n, tally.clone()));
    }
    while tasks.join_next().await.is_some() {}
    tally
}

/// The tally, once every task that counts into it has finished.
fn finished(tally: Arc<Mutex<Tally>>) -> Tally {
    Arc::try_unwrap(tally).ok().expect("every task finished").into_inner().unwrap()
}

async fn send(client: &Client, body: &serde_json::Value, key: Option<&str>, tally: &Mutex<Tally>) -> Option<String> {
    let mut req = client.http.post(client.url("/orders")).json(body).timeout(Duration::from_secs(20));
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    tally.lock().unwrap().sent += 1;
    let resp = match req.send().await {
        Ok(resp) => resp,
        Err(_) => {
            tally.lock().unwrap().transport_errors += 1;
            return None;
        }
    };
    let status = resp.status();
    if status == 202 {
        let id = resp.json::<serde_json::Value>().await.ok()?["order_id"].as_str()?.to_owned();
        tally.lock().unwrap().accepted.insert(id.clone());
        Some(id)
    } else {
        if status.is_server_error() {
            tally.lock().unwrap().server_errors += 1;
        }
        None
    }
}

/// One POST of the careful client: the order id, or what went wrong.
async fn attempt(client: &Client, body: &serde_json::Value, key: &str, tally: &Mutex<Tally>) -> Result<String, String> {
    tally.lock().unwrap().sent += 1;
    let req = client.http.post(client.url("/orders")).json(body).header("Idempotency-Key", key);
    let resp = req.timeout(Duration::from_secs(20)).send().await.map_err(|e| format!("no answer: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| format!("no answer: {e}"))?;
    if status != 202 {
        let start: String = text.chars().take(60).collect();
        return Err(format!("{status} {}", start.split_whitespace().collect::<Vec<_>>().join(" ")));
    }
    let body: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{status} {e}: {text}"))?;
    body["order_id"].as_str().map(str::to_owned).ok_or_else(|| format!("{status} without an order id: {text}"))
}
