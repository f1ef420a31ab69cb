//! Steady load through nginx: about 1,000 orders/s over several SKUs, every
//! tenth request with an Idempotency-Key and sent twice (a deliberate retry).

use crate::helpers::{order, Client};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RATE_PER_SEC: u64 = 1000;
const MAX_IN_FLIGHT: usize = 128;

#[derive(Default)]
pub struct Tally {
    pub sent: usize,
    pub accepted: HashSet<String>,
    pub server_errors: usize,
    pub transport_errors: usize,
    /// Retries with the same key that came back with a different order.
    pub duplicate_retries: usize,
}

pub async fn drive(client: Client, skus: Vec<String>, duration: Duration, tag: String) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut tasks = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE_PER_SEC));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let end = Instant::now() + duration;
    let mut n = 0usize;
    while Instant::now() < end {
        tick.tick().await;
        while tasks.len() >= MAX_IN_FLIGHT {
            tasks.join_next().await;
        }
        n += 1;
        let (client, tally) = (client.clone(), tally.clone());
        let body = order(&format!("{tag}-c{}", n % 50), &[(&skus[n % skus.len()], 1 + (n % 3) as i64)]);
        let key = n.is_multiple_of(10).then(|| format!("{tag}-key-{n}"));
        tasks.spawn(async move {
            let first = send(&client, &body, key.as_deref(), &tally).await;
            if let Some(key) = key {
                let second = send(&client, &body, Some(&key), &tally).await;
                if let (Some(a), Some(b)) = (first, second) {
                    if a != b {
                        tally.lock().unwrap().duplicate_retries += 1;
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
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
