//! Webhooks reach a real receiver: an axum server on 127.0.0.1 in the test
//! that answers slowly, fails at random (500, 503, answers past the
//! timeout), refuses one customer's webhooks with a 400, and is stopped and
//! started again on the same port. Every signature is checked here with an
//! HMAC of the test's own, every notification must arrive at least once,
//! copies must share their `webhook-id`, a 400 is never retried, and orders
//! placed while the receiver is down complete before it returns.

use crate::helpers::{eventually, order, Env, Mode, Server, BIN};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde_json::Value;
use sha2::Sha256;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The receiver's webhooks are refused for good (400) for this customer.
const REFUSED: &str = "refuse-me";
/// The Standard Webhooks libraries' default tolerance for a timestamp.
const TOLERANCE_SECS: i64 = 300;

/// One request the receiver saw.
#[derive(Debug, Clone)]
struct Seen {
    id: String,
    body: String,
    order_id: String,
    /// The answer: 200, 400, 500, 503, or 0 for one held past the timeout.
    answered: u16,
}

#[derive(Default)]
struct Log {
    seen: Vec<Seen>,
    /// Requests whose signature or timestamp did not check out.
    forged: Vec<String>,
}

#[derive(Clone)]
struct Receiver {
    key: Arc<Vec<u8>>,
    log: Arc<Mutex<Log>>,
}

/// A receiver bound to a port it keeps across restarts.
struct Hooks {
    port: u16,
    receiver: Receiver,
    running: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

impl Hooks {
    async fn start() -> Hooks {
        let key = STANDARD.decode(SECRET.strip_prefix("whsec_").unwrap()).unwrap();
        let receiver = Receiver { key: Arc::new(key), log: Arc::default() };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut hooks = Hooks { port, receiver, running: None };
        hooks.serve(listener);
        hooks
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks", self.port)
    }

    fn serve(&mut self, listener: TcpListener) {
        let app = Router::new().route("/hooks", post(receive)).with_state(self.receiver.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        self.running = Some((stop, task));
    }

    /// Stops accepting, closes every connection, and returns once it is down.
    async fn stop(&mut self) {
        let (stop, task) = self.running.take().expect("running");
        let _ = stop.send(());
        task.await.unwrap();
    }

    /// Listens again on the same port.
    async fn restart(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.expect("the same port again");
        self.serve(listener);
    }

    fn log(&self) -> (Vec<Seen>, Vec<String>) {
        let log = self.receiver.log.lock().unwrap();
        (log.seen.clone(), log.forged.clone())
    }

    /// The orders whose webhook was answered 200 at least once.
    fn delivered(&self) -> HashSet<String> {
        self.log().0.into_iter().filter(|s| s.answered == 200).map(|s| s.order_id).collect()
    }
}

/// Checks the request as a Standard Webhooks receiver would, records it,
/// then answers as its dice say.
async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let (id, timestamp, signature) = (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
    let mut mac = Hmac::<Sha256>::new_from_slice(&receiver.key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    let age = timestamp.parse::<i64>().map(|t| (chrono::Utc::now().timestamp() - t).abs());
    let text = String::from_utf8_lossy(&body).into_owned();
    let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let order_id = parsed["data"]["order_id"].as_str().unwrap_or_default().to_owned();
    let refused = parsed["data"]["customer_id"] == REFUSED;
    let valid = !id.is_empty() && signature.split(' ').any(|s| s == expected) && age.is_ok_and(|a| a <= TOLERANCE_SECS);

    let roll: u32 = rand::rng().random_range(0..100);
    let answered = match () {
        _ if !valid => 401,
        _ if refused => 400,
        _ if roll < 15 => 500,
        _ if roll < 25 => 503,
        _ if roll < 35 => 0,
        _ => 200,
    };
    {
        let mut log = receiver.log.lock().unwrap();
        if !valid {
            log.forged.push(format!("{id} {timestamp} {signature}"));
        }
        log.seen.push(Seen { id, body: text, order_id, answered });
    }
    match answered {
        // Held past the sender's timeout (300 ms): it gives up first.
        0 => {
            tokio::time::sleep(Duration::from_millis(1_000)).await;
            StatusCode::OK
        }
        200 => {
            if roll < 55 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            StatusCode::OK
        }
        code => StatusCode::from_u16(code).unwrap(),
    }
}

/// The flags every process that runs the notifier gets here.
fn webhook_flags(url: &str) -> Vec<String> {
    [
        "--webhook-url",
        url,
        "--webhook-timeout-ms",
        "300",
        "--webhook-retry-base-ms",
        "20",
        "--webhook-concurrency",
        "8",
        "--max-attempts",
        "3",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The processes of one mode: on SQLite one `run`; on PostgreSQL the API,
/// the inventory service and the notifier apart.
struct Deployed {
    api: Server,
    workers: Vec<Server>,
    embedded: bool,
    flags: Vec<String>,
}

impl Deployed {
    async fn start(env: &Env, embedded: bool, url: &str) -> Deployed {
        let flags = webhook_flags(url);
        let args: Vec<&str> = flags.iter().map(String::as_str).collect();
        let vars = [("ORDERFLOW_WEBHOOK_SECRET", SECRET)];
        if embedded {
            let api = Server::start_with(env, "run", &args, &vars).await;
            return Deployed { api, workers: Vec::new(), embedded, flags };
        }
        let api = Server::start(env, "api", &["--max-attempts", "3"]).await;
        let inventory = Server::start(env, "inventory", &["--max-attempts", "3"]).await;
        let notifier = Server::start_with(env, "notifier", &args, &vars).await;
        Deployed { api, workers: vec![inventory, notifier], embedded, flags }
    }

    /// Kills the process that runs the notifier (SIGKILL) and starts it again.
    async fn crash_notifier(&mut self, env: &Env) {
        let args: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        let vars = [("ORDERFLOW_WEBHOOK_SECRET", SECRET)];
        if self.embedded {
            self.api.kill9();
            self.api = Server::start_with(env, "run", &args, &vars).await;
        } else {
            self.workers[1].kill9();
            self.workers[1] = Server::start_with(env, "notifier", &args, &vars).await;
        }
    }
}

async fn place_all(api: &Server, orders: &[Value]) -> Vec<String> {
    let mut ids = Vec::new();
    for body in orders {
        ids.push(api.client.place(body).await);
    }
    ids
}

fn orders(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| match i % 10 {
            3 => order("c-rejected", &[("no-such-sku", 1)]),
            7 => order(REFUSED, &[("tea", 1)]),
            _ => order(&format!("c{i}"), &[("tea", 1)]),
        })
        .collect()
}

async fn webhooks_arrive_signed_at_least_once(mode: Mode) {
    let Some(env) = mode.env() else { return };
    let mut hooks = Hooks::start().await;
    env.set_stock("tea", 10_000);
    let mut app = Deployed::start(&env, matches!(mode, Mode::SqliteDb), &hooks.url()).await;

    let before = orders(40);
    let mut ids = place_all(&app.api, &before).await;
    app.api.client.wait_terminal(&ids, Duration::from_secs(30)).await;

    // The receiver goes away: orders still complete, and their deliveries
    // wait, through a crash of the notifier's process too.
    hooks.stop().await;
    let during = place_all(&app.api, &orders(20)).await;
    app.api.client.wait_terminal(&during, Duration::from_secs(30)).await;
    let waiting: i64 = env.sql("SELECT count(*) FROM webhook_deliveries").parse().unwrap();
    assert!(waiting > 0, "deliveries wait for the receiver");
    app.crash_notifier(&env).await;
    hooks.restart().await;
    ids.extend(during);

    // Every notification arrives (a 400 is not a delivery, but arrives too).
    let all: HashSet<String> = ids.iter().cloned().collect();
    let refused: HashSet<String> = {
        let mut refused = HashSet::new();
        for id in &ids {
            let (_, order) = app.api.client.get(&format!("/orders/{id}")).await;
            if order["customer_id"] == REFUSED {
                refused.insert(id.clone());
            }
        }
        refused
    };
    assert_eq!(refused.len(), 6);
    let wanted: HashSet<String> = all.difference(&refused).cloned().collect();
    eventually(Duration::from_secs(60), "every webhook delivered", || {
        let done = wanted.is_subset(&hooks.delivered());
        async move { done }
    })
    .await;
    eventually(Duration::from_secs(30), "every refused webhook dead-lettered", || {
        let done = env.cli(&["webhooks", "list"]).lines().count() == refused.len();
        async move { done }
    })
    .await;

    let (seen, forged) = hooks.log();
    assert!(forged.is_empty(), "every signature verifies and is recent: {forged:?}");
    // One notification per order: one id per order, and every copy of an id
    // carries the same body.
    let mut by_id: HashMap<&str, &Seen> = HashMap::new();
    let mut ids_of: HashMap<&str, HashSet<&str>> = HashMap::new();
    for s in &seen {
        let first = by_id.entry(&s.id).or_insert(s);
        assert_eq!(first.body, s.body, "copies of {} differ", s.id);
        ids_of.entry(&s.order_id).or_default().insert(&s.id);
    }
    assert!(ids_of.values().all(|ids| ids.len() == 1), "one webhook-id per order: {ids_of:?}");
    assert_eq!(ids_of.len(), all.len(), "a webhook for every order and no other");
    assert!(seen.len() > all.len(), "the random failures were retried ({} requests)", seen.len());
    // A 400 is final: each refused webhook was sent once, and is listed.
    for s in seen.iter().filter(|s| refused.contains(&s.order_id)) {
        assert_eq!(seen.iter().filter(|o| o.id == s.id).count(), 1, "a refused webhook is not retried");
    }
    let dead: Vec<Value> =
        env.cli(&["webhooks", "list"]).lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    for letter in &dead {
        assert!(refused.contains(letter["body"]["data"]["order_id"].as_str().unwrap()), "{letter}");
        assert_eq!(letter["error"], "HTTP 400 Bad Request");
        // Attempts while the receiver was down count too.
        assert!(letter["attempts"].as_i64().unwrap() >= 1, "{letter}");
    }
    // The body a receiver reads.
    let confirmed = seen.iter().find(|s| s.answered == 200 && s.body.contains("order.confirmed")).unwrap();
    let body: Value = serde_json::from_str(&confirmed.body).unwrap();
    assert_eq!(body["data"]["status"], "completed");
    assert_eq!(body["data"]["items"][0]["sku"], "tea");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    let rejected = seen.iter().find(|s| s.body.contains("order.rejected")).unwrap();
    let body: Value = serde_json::from_str(&rejected.body).unwrap();
    assert_eq!(body["data"]["reason"], "unknown_sku:no-such-sku");

    eventually(Duration::from_secs(10), "no delivery left waiting", || {
        let done = env.sql("SELECT count(*) FROM webhook_deliveries") == "0";
        async move { done }
    })
    .await;
    if app.embedded {
        let metrics = reqwest::get(app.api.client.url("/metrics")).await.unwrap().text().await.unwrap();
        for outcome in ["delivered", "retried", "failed"] {
            let line = format!("orderflow_webhook_deliveries_total{{outcome=\"{outcome}\"}}");
            assert!(metrics.contains(&line), "{line} in /metrics");
        }
        assert!(metrics.contains("orderflow_webhook_deliveries_waiting"), "the gauge in /metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_webhooks_arrive_signed_at_least_once() {
    webhooks_arrive_signed_at_least_once(Mode::SqliteDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_webhooks_arrive_signed_at_least_once() {
    webhooks_arrive_signed_at_least_once(Mode::PostgresDb).await;
}

/// A webhook URL without a usable secret stops the process at start, with
/// a message that names the variable and does not repeat the secret.
#[test]
fn a_webhook_url_without_a_valid_secret_is_refused() {
    let env = Env::embedded();
    for secret in [None, Some("whsec_dG9vLXNob3J0"), Some("not-a-secret")] {
        let mut command = std::process::Command::new(BIN);
        command
            .args(["--database-url", &env.database_url, "notifier", "--webhook-url", "http://127.0.0.1:9/hooks"])
            .env_remove("ORDERFLOW_WEBHOOK_SECRET");
        if let Some(secret) = secret {
            command.env("ORDERFLOW_WEBHOOK_SECRET", secret);
        }
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{secret:?} accepted");
        assert!(stderr.contains("ORDERFLOW_WEBHOOK_SECRET"), "{stderr}");
        if let Some(secret) = secret {
            assert!(!stderr.contains(secret), "the secret is not repeated: {stderr}");
        }
    }
}
