//! The embedded pipeline in this process, on a database whose files may sit
//! on the simulated disk, and clients placing orders through its HTTP API.

use orderflow::api::{self, AppState};
use orderflow::broker::DbBroker;
use orderflow::messaging::RetryPolicy;
use orderflow::services::{Service, WorkerSettings};
use orderflow::store::{Database, SqliteOptions, SqliteStore};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub const SKUS: [&str; 4] = ["tea", "cake", "milk", "jam"];
pub const STOCK: i64 = 60;

/// The API, the inventory service and the notifier on one store.
pub struct Pipeline {
    pub url: String,
    shutdown: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Pipeline {
    pub async fn start(store: Arc<dyn Database>) -> Pipeline {
        let broker = Arc::new(DbBroker::new(store.clone()));
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = AppState {
            live: orderflow::live::Hub::new(store.clone(), 16),
            store: store.clone(),
            broker: broker.clone(),
            cache: None,
            metrics: None,
            max_in_flight: 1024,
            operator: None,
            replay_rate: 100,
            draining: CancellationToken::new(),
            clients: api::ClientLimits {
                header_timeout: Duration::from_secs(30),
                body_timeout: Duration::from_secs(30),
                idle_timeout: Duration::from_secs(15),
                max_connections: 1024,
            },
            retention: Default::default(),
        };
        tasks.spawn(api::serve(listener, state, shutdown.clone()));
        let settings = WorkerSettings {
            batch_size: 64,
            retry: RetryPolicy { max_attempts: 5, base: Duration::from_millis(20) },
            cache: None,
        };
        for service in [Service::Inventory, Service::Notifier] {
            tasks.spawn(service.run(store.clone(), broker.clone(), settings.clone(), shutdown.clone()));
        }
        Pipeline { url, shutdown, tasks }
    }

    /// A role that has ended on its own: the pipeline gave up, with this error.
    pub fn gave_up(&mut self) -> Option<String> {
        match self.tasks.try_join_next()? {
            Ok(Ok(())) => Some("a role stopped without an error".into()),
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(e) => Some(format!("a role panicked: {e}")),
        }
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(20), all).await.is_err() {
            panic!("the pipeline did not stop within 20 s of its shutdown");
        }
    }
}

/// Opens the store at `dir/orders.db` as `options` say.
pub async fn open(dir: &Path, options: SqliteOptions) -> Arc<dyn Database> {
    let path = dir.join("orders.db");
    Arc::new(SqliteStore::open_with(path.to_str().unwrap(), options).await.expect("opening the store"))
}

/// Creates the database on `options`' disk, stocks it, and closes it: what
/// this leaves was synced.
pub async fn prepare(dir: &Path, options: SqliteOptions) {
    let store = open(dir, options).await;
    for sku in SKUS {
        store.set_stock(sku, STOCK).await.expect("setting stock");
    }
}

/// What the clients were told.
#[derive(Default)]
pub struct Answers {
    /// Order ids answered 202, with their items.
    pub accepted: HashMap<String, Vec<(String, i64)>>,
    /// Other answers, by status and error code.
    pub refused: HashMap<String, u64>,
}

/// Clients placing orders until `stop`, each with its own Idempotency-Key.
pub struct Load {
    stop: Arc<AtomicBool>,
    clients: JoinSet<Answers>,
}

impl Load {
    pub fn start(url: &str, clients: usize, seed: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let mut set = JoinSet::new();
        for client in 0..clients {
            let (http, url, stop) = (http.clone(), format!("{url}/orders"), stop.clone());
            let mut rng = crate::disk::Rng::new(seed ^ (client as u64) << 32);
            set.spawn(async move {
                let mut answers = Answers::default();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let items: Vec<(String, i64)> = (0..1 + rng.below(2))
                        .map(|i| (SKUS[(rng.below(4) as usize + i as usize) % 4].to_owned(), 1 + rng.below(3) as i64))
                        .collect();
                    let mut distinct = items.clone();
                    distinct.dedup_by(|a, b| a.0 == b.0);
                    let body = json!({
                        "customer_id": format!("c{client}"),
                        "items": distinct.iter().map(|(sku, q)| json!({"sku": sku, "quantity": q})).collect::<Vec<_>>(),
                    });
                    let sent = http.post(&url).header("Idempotency-Key", format!("{seed}-{client}-{n}")).json(&body);
                    match sent.send().await {
                        Ok(resp) if resp.status() == 202 => {
                            let body: Value = resp.json().await.expect("a 202 has a JSON body");
                            let id = body["order_id"].as_str().expect("a 202 names its order").to_owned();
                            answers.accepted.insert(id, distinct);
                        }
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let body: Value = resp.json().await.unwrap_or(Value::Null);
                            let code = body["error"]["code"].as_str().unwrap_or("-").to_owned();
                            *answers.refused.entry(format!("{status} {code}")).or_default() += 1;
                        }
                        Err(e) if e.is_timeout() => panic!("a POST /orders hung for 10 s"),
                        Err(e) => panic!("POST /orders failed: {e}"),
                    }
                }
                answers
            });
        }
        Load { stop, clients: set }
    }

    pub async fn stop(self) -> Answers {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Answers::default();
        for answers in self.clients.join_all().await {
            all.accepted.extend(answers.accepted);
            for (k, n) in answers.refused {
                *all.refused.entry(k).or_default() += n;
            }
        }
        all
    }
}

/// Places one order; its status code.
pub async fn place_one(url: &str) -> Result<u16, String> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let body = json!({"customer_id": "probe", "items": [{"sku": "tea", "quantity": 1}]});
    match http.post(format!("{url}/orders")).json(&body).send().await {
        Ok(resp) => Ok(resp.status().as_u16()),
        Err(e) => Err(e.to_string()),
    }
}
