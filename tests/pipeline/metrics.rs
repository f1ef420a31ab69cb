//! What `/metrics` tells an operator, read from every process of the
//! embedded mode and of a distributed one (PostgreSQL and RabbitMQ, each
//! role a process of its own), after one order completed and one was
//! rejected: every family is described and typed, counters end in `_total`,
//! request latency is labelled by route template and status class, the
//! order-time histogram counts the orders that reached each status, and
//! queue lag and batch sizes are there per queue and stage.

use crate::helpers::{eventually, order, Deployment, Env, Mode, Server, SETTLE};
use std::collections::{BTreeMap, BTreeSet};

/// One sample: its metric name and labels.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape: the families' declared types and help, and the samples.
#[derive(Debug, Default)]
struct Scrape {
    types: BTreeMap<String, String>,
    helps: BTreeSet<String>,
    samples: Vec<Sample>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut scrape = Scrape::default();
        for line in text.lines().filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                scrape.helps.insert(rest.split(' ').next().unwrap().to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                scrape.types.insert(name.to_owned(), kind.to_owned());
            } else if !line.starts_with('#') {
                scrape.samples.push(sample(line));
            }
        }
        scrape
    }

    /// The family a sample belongs to: a histogram's `_bucket`, `_sum` and
    /// `_count` series are its own.
    fn family<'a>(&self, name: &'a str) -> &'a str {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if self.types.get(base).is_some_and(|t| t == "histogram" || t == "summary") {
                    return base;
                }
            }
        }
        name
    }

    /// The samples of `name` whose labels include every pair of `labels`.
    fn find<'a>(&'a self, name: &'a str, labels: &'a [(&str, &str)]) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
    }

    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).map(|s| s.value).sum()
    }

    /// The values a label takes on `name`'s samples.
    fn label_values(&self, name: &str, label: &str) -> BTreeSet<String> {
        self.find(name, &[]).filter_map(|s| s.labels.get(label).cloned()).collect()
    }
}

/// `name{k="v",…} value` (label values escape `\`, `"` and newlines).
fn sample(line: &str) -> Sample {
    let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
    let value = value.parse().unwrap_or_else(|_| panic!("a numeric value: {line}"));
    let Some((name, rest)) = series.split_once('{') else {
        return Sample { name: series.to_owned(), labels: BTreeMap::new(), value };
    };
    let mut labels = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() || key == "}" {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "a quoted value: {line}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.push(chars.next().expect("an escaped character")),
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_owned(), value);
        if chars.peek() == Some(&'}') {
            break;
        }
    }
    Sample { name: name.to_owned(), labels, value }
}

async fn scrape(server: &Server) -> Scrape {
    let response = server.client.http.get(server.client.url("/metrics")).send().await.expect("GET /metrics");
    assert_eq!(response.status(), 200);
    Scrape::parse(&response.text().await.expect("the metrics' text"))
}

async fn scrape_all(app: &Deployment) -> Vec<Scrape> {
    let mut all = vec![scrape(&app.api).await];
    for worker in &app.workers {
        all.push(scrape(worker).await);
    }
    all
}

/// Prometheus' conventions, on one process's scrape.
fn assert_conventions(scrape: &Scrape) {
    assert!(!scrape.samples.is_empty(), "a scrape with samples");
    for s in &scrape.samples {
        let family = scrape.family(&s.name);
        assert!(scrape.types.contains_key(family), "{family} has no # TYPE");
        assert!(scrape.helps.contains(family), "{family} has no # HELP");
    }
    for (name, kind) in &scrape.types {
        assert_eq!(kind == "counter", name.ends_with("_total"), "{name} is a {kind}: _total is for counters");
        assert_ne!(kind, "summary", "{name}: every distribution has buckets");
    }
}

/// Places an order that completes and one that is rejected (unknown SKU),
/// asks for a route that does not exist, and waits for both outcomes;
/// returns the completed order's id.
async fn run_orders(env: &Env, app: &Deployment) -> String {
    env.set_stock("metrics-tea", 5);
    let client = app.client();
    let done = client.place(&order("metrics", &[("metrics-tea", 1)])).await;
    let rejected = client.place(&order("metrics", &[("no-such-sku", 1)])).await;
    let outcomes = client.wait_terminal(&[done.clone(), rejected], SETTLE).await;
    assert_eq!(outcomes[0]["status"], "completed");
    assert_eq!(outcomes[1]["status"], "rejected");
    let (status, _) = client.get("/no/such/route").await;
    assert_eq!(status, 404);
    done
}

async fn check(mode: Mode, lagging: &[&str], stages: &[&str]) {
    let Some((env, app)) = mode.start().await else { return };
    let order_id = run_orders(&env, &app).await;

    // Each commit records its order's time after it returns: wait for all three.
    let statuses = ["reserved", "rejected", "completed"];
    let total = |all: &[Scrape], status: &str| {
        all.iter().map(|s| s.sum("orderflow_order_duration_seconds_count", &[("status", status)])).sum::<f64>()
    };
    eventually(SETTLE, "each order's time to each status", || async {
        let all = scrape_all(&app).await;
        total(&all, "reserved") == 1.0 && total(&all, "completed") == 1.0 && total(&all, "rejected") == 1.0
    })
    .await;
    let all = scrape_all(&app).await;
    for scrape in &all {
        assert_conventions(scrape);
    }
    for status in statuses {
        assert_eq!(total(&all, status), 1.0, "one order reached {status}");
    }

    // Request latency, by template and status class, on the API.
    let api = &all[0];
    let http = "orderflow_http_request_duration_seconds_count";
    assert!(api.sum(http, &[("method", "POST"), ("route", "/orders"), ("status", "2xx")]) >= 2.0);
    assert!(api.sum(http, &[("method", "GET"), ("route", "/orders/{id}"), ("status", "2xx")]) >= 2.0);
    assert!(api.sum(http, &[("route", "unmatched"), ("status", "4xx")]) >= 1.0);
    let routes = api.label_values(http, "route");
    assert!(routes.iter().all(|r| !r.contains(&order_id)), "a raw id in a route label: {routes:?}");
    let classes = api.label_values(http, "status");
    assert!(classes.iter().all(|c| ["1xx", "2xx", "3xx", "4xx", "5xx"].contains(&c.as_str())), "{classes:?}");

    // Queue lag per queue, on the API; a message's age on delivery per queue.
    let lag = api.label_values("orderflow_queue_lag_seconds", "queue");
    for queue in lagging {
        assert!(lag.contains(*queue), "lag of {queue} in {lag:?}");
    }
    for queue in ["order-events", "inventory-events"] {
        let delivered: f64 =
            all.iter().map(|s| s.sum("orderflow_delivery_age_seconds_count", &[("queue", queue)])).sum();
        assert!(delivered >= 2.0, "both orders' events delivered from {queue}: {delivered}");
    }

    // Batch sizes per stage, wherever each stage runs.
    let seen: BTreeSet<String> =
        all.iter().flat_map(|s| s.label_values("orderflow_batch_size_count", "stage")).collect();
    for stage in stages {
        assert!(seen.contains(*stage), "batch sizes of {stage} in {seen:?}");
    }
}

#[tokio::test]
async fn embedded_metrics_follow_prometheus_conventions() {
    check(Mode::SqliteDb, &["order-events", "inventory-events"], &["store_writer", "inventory", "notifier"]).await;
}

#[tokio::test]
async fn every_process_of_a_distributed_deployment_is_scraped() {
    check(Mode::PostgresRabbitmq, &["outbox"], &["relay", "inventory", "notifier"]).await;
}

#[tokio::test]
async fn redis_streams_report_their_lag() {
    let lagging = ["outbox", "order-events", "inventory-events"];
    check(Mode::SqliteRedis, &lagging, &["relay", "store_writer", "inventory", "notifier"]).await;
}

/// With nobody reading `order-events`, its lag is the age of the order
/// waiting at its front; once the inventory service starts, it drops to 0.
async fn lag_grows_while_no_worker_reads(mode: Mode) {
    let Some(env) = mode.env() else { return };
    let api = Server::start(&env, "api", &[]).await;
    env.set_stock("metrics-tea", 5);
    api.client.place(&order("metrics", &[("metrics-tea", 1)])).await;
    let lag = |scrape: Scrape| scrape.sum("orderflow_queue_lag_seconds", &[("queue", "order-events")]);
    eventually(SETTLE, "order-events to lag by a second", || async { lag(scrape(&api).await) >= 1.0 }).await;
    let _inventory = Server::start(&env, "inventory", &[]).await;
    eventually(SETTLE, "the lag of order-events to drop to 0", || async { lag(scrape(&api).await) == 0.0 }).await;
}

#[tokio::test]
async fn the_db_queue_lags_by_its_front_row() {
    lag_grows_while_no_worker_reads(Mode::PostgresDb).await;
}

#[tokio::test]
async fn a_redis_stream_lags_by_its_oldest_unacknowledged_entry() {
    lag_grows_while_no_worker_reads(Mode::PostgresRedis).await;
}

#[test]
fn samples_are_read_with_their_labels() {
    let s = sample(r#"orderflow_x_count{route="/orders/{id}",status="2xx",odd="a\"b,c"} 3"#);
    assert_eq!((s.name.as_str(), s.value), ("orderflow_x_count", 3.0));
    assert_eq!(s.labels["route"], "/orders/{id}");
    assert_eq!(s.labels["status"], "2xx");
    assert_eq!(s.labels["odd"], "a\"b,c");
    assert!(sample("orderflow_y 1.5").labels.is_empty());
}
