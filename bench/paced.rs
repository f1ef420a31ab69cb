//! An open-loop load generator for `bench/backlog`: it sends requests at a
//! fixed rate whatever the server's speed, and times each one from the moment
//! it was due, not from when it left. A closed loop (wrk) waits for an answer
//! before it sends again, so a slow server is offered less load and its stalls
//! hide from the percentiles; a user placing an order does not wait for the
//! others.
//!
//! Usage: paced post|get BASE_URL RATE SECONDS [ARG]
//! - `post`: `POST /orders`, cycling over eight customers and SKUs; ARG is the
//!   share of requests (0 to 1, default 0) sent with an `Idempotency-Key` of
//!   their own. A `202` counts as accepted.
//! - `get`: `GET /orders/{id}` of ids drawn at random from the file ARG (one
//!   id a line). A `200` counts as answered.
//!
//! Anything else, and any request without an answer within 5 s, is an error.
//! It prints one line: `sent N ok N errors N p50_ms X p99_ms X max_ms X`.
//! With `PACED_SERIES=FILE` it also writes, for each second of the run, the
//! p50, p99 and max of the requests due in it (`second p50_ms p99_ms max_ms`),
//! to see when the slow ones were.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Post,
    Get,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: paced post|get BASE_URL RATE SECONDS [ARG]";
    anyhow::ensure!(args.len() >= 5, usage);
    let kind = match args[1].as_str() {
        "post" => Kind::Post,
        "get" => Kind::Get,
        _ => anyhow::bail!(usage),
    };
    let base = args[2].trim_end_matches('/').to_owned();
    let rate: f64 = args[3].parse()?;
    let seconds: f64 = args[4].parse()?;
    let (key_share, ids) = match kind {
        Kind::Post => (args.get(5).map_or(Ok(0.0), |s| s.parse::<f64>())?, Vec::new()),
        Kind::Get => {
            let file = args.get(5).ok_or_else(|| anyhow::anyhow!("get needs a file of ids"))?;
            let ids: Vec<String> = std::fs::read_to_string(file)?.lines().map(str::to_owned).collect();
            anyhow::ensure!(!ids.is_empty(), "{file} holds no ids");
            (0.0, ids)
        }
    };
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let latencies = Arc::new(Mutex::new(Vec::with_capacity((rate * seconds) as usize)));
    let (ok, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let total = (rate * seconds) as u64;
    let every = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    // A cheap generator of its own (xorshift): ids and key shares need no
    // quality, and a seed per run keeps two runs apart.
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64 | 1;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let run = std::process::id();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..total {
        let due = start + every.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        let request = match kind {
            Kind::Post => {
                let i = n % 8 + 1;
                let body = format!(r#"{{"customer_id":"paced-{i}","items":[{{"sku":"sku-{i}","quantity":1}}]}}"#);
                let mut r = client.post(format!("{base}/orders")).header("content-type", "application/json").body(body);
                if (next() % 1_000_000) as f64 / 1_000_000.0 < key_share {
                    r = r.header("idempotency-key", format!("paced-{run}-{n}"));
                }
                r
            }
            Kind::Get => client.get(format!("{base}/orders/{}", ids[(next() % ids.len() as u64) as usize])),
        };
        let want = if kind == Kind::Post { 202 } else { 200 };
        let (latencies, ok, errors) = (latencies.clone(), ok.clone(), errors.clone());
        tasks.spawn(async move {
            let answered = match request.send().await {
                Ok(r) => r.status().as_u16() == want && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            let took = due.elapsed();
            if answered {
                ok.fetch_add(1, Ordering::Relaxed);
            } else {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            latencies.lock().unwrap().push((due - start, took));
        });
        // Reap the finished ones as we go, so the set stays as small as the
        // requests in flight.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let samples = latencies.lock().unwrap().clone();
    if let Ok(file) = std::env::var("PACED_SERIES") {
        std::fs::write(file, series(&samples))?;
    }
    let mut all: Vec<Duration> = samples.iter().map(|(_, took)| *took).collect();
    all.sort();
    let pct = |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)));
    let ms = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    println!(
        "sent {} ok {} errors {} p50_ms {:.1} p99_ms {:.1} max_ms {:.1}",
        total,
        ok.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(all.last())
    );
    Ok(())
}

/// `second p50_ms p99_ms max_ms` for each second of the run, by when each
/// request was due.
fn series(samples: &[(Duration, Duration)]) -> String {
    let mut by_second: Vec<Vec<Duration>> = Vec::new();
    for (due, took) in samples {
        let second = due.as_secs() as usize;
        if by_second.len() <= second {
            by_second.resize(second + 1, Vec::new());
        }
        by_second[second].push(*took);
    }
    let mut out = String::new();
    for (second, mut took) in by_second.into_iter().enumerate() {
        took.sort();
        let at = |p: f64| took[((took.len() as f64 * p) as usize).min(took.len() - 1)].as_secs_f64() * 1000.0;
        if !took.is_empty() {
            out += &format!("{second} {:.1} {:.1} {:.1}\n", at(0.5), at(0.99), at(1.0));
        }
    }
    out
}
