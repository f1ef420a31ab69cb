//! The test harness: real `orderflow` processes against real databases.
//!
//! `Env` names a database (a temporary SQLite file, or a fresh PostgreSQL
//! database) and a broker (`db`, a fresh RabbitMQ vhost, or a `redis-server`
//! of its own, `RedisServer`). `Server` starts
//! the binary on port 0 in that environment and kills it when dropped.
//! `Client` has one typed method per endpoint. Suites that need PostgreSQL,
//! RabbitMQ or `redis-server` are skipped with a message when the server is not reachable,
//! unless `ORDERFLOW_REQUIRE_SERVICES=1`, which turns a skip into a failure.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_orderflow");
pub const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const AMQP_BASE: &str = "amqp://guest:guest@127.0.0.1:5672";
/// How long a test waits for the pipeline to finish what it was given.
pub const SETTLE: Duration = Duration::from_secs(30);

/// Where one test keeps its data.
pub struct Env {
    pub database_url: String,
    pub broker_url: String,
    pub dir: TempDir,
    pg_database: Option<String>,
    vhost: Option<String>,
    redis: Option<RedisServer>,
}

fn required() -> bool {
    std::env::var("ORDERFLOW_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Reports a missing server: a failure under `ORDERFLOW_REQUIRE_SERVICES=1`,
/// a loud skip otherwise.
fn unavailable(what: &str, why: &str) -> Option<Env> {
    assert!(!required(), "{what} is required (ORDERFLOW_REQUIRE_SERVICES=1) but unreachable: {why}");
    // Written to stderr directly, not with eprintln!, so the test harness
    // shows it even for a passing test.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {}: {what} is not reachable ({why}); set ORDERFLOW_REQUIRE_SERVICES=1 to make this a failure",
        std::thread::current().name().unwrap_or("test")
    );
    None
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Runs SQL with psql, passing it on stdin (it may be longer than a command line).
fn psql(url: &str, sql: &str) -> Result<String, String> {
    let child = Command::new("psql")
        .args(["-qtA", "-v", "ON_ERROR_STOP=1", url, "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let out = child.and_then(|mut child| {
        child.stdin.take().expect("stdin").write_all(sql.as_bytes())?;
        child.wait_with_output()
    });
    match out {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

fn rabbitmqctl(args: &[&str]) -> Result<(), String> {
    match Command::new("rabbitmqctl").args(args).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

impl Env {
    pub fn embedded() -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let database_url = format!("sqlite://{}", dir.path().join("orderflow.db").display());
        Env { database_url, broker_url: "db".into(), dir, pg_database: None, vhost: None, redis: None }
    }

    /// A fresh PostgreSQL database, with the `db` broker or a fresh RabbitMQ vhost.
    pub fn postgres(rabbitmq: bool) -> Option<Env> {
        if let Err(e) = psql(PG_ADMIN, "SELECT 1") {
            return unavailable("PostgreSQL", &e);
        }
        let name = unique("orderflow_test");
        psql(PG_ADMIN, &format!("CREATE DATABASE {name}")).expect("creating a test database");
        let database_url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        let env = Env {
            database_url,
            broker_url: "db".into(),
            dir: tempfile::tempdir().expect("temp dir"),
            pg_database: Some(name),
            vhost: None,
            redis: None,
        };
        if rabbitmq {
            env.with_rabbitmq()
        } else {
            Some(env)
        }
    }

    /// A SQLite file, with a fresh RabbitMQ vhost as the broker.
    pub fn sqlite_rabbitmq() -> Option<Env> {
        Env::embedded().with_rabbitmq()
    }

    /// This environment with a fresh RabbitMQ vhost as its broker.
    fn with_rabbitmq(mut self) -> Option<Env> {
        let vhost = unique("orderflow");
        if let Err(e) = rabbitmqctl(&["add_vhost", &vhost]) {
            return unavailable("RabbitMQ", &e);
        }
        rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]).expect("vhost permissions");
        self.broker_url = format!("{AMQP_BASE}/{vhost}");
        self.vhost = Some(vhost);
        Some(self)
    }

    /// A fresh PostgreSQL database, with a `redis-server` of its own (append
    /// only, fsync always) as the broker.
    pub fn postgres_redis() -> Option<Env> {
        Env::postgres(false)?.with_redis(REDIS_DURABLE)
    }

    /// A SQLite file, with a `redis-server` of its own as the broker.
    pub fn sqlite_redis() -> Option<Env> {
        Env::embedded().with_redis(REDIS_DURABLE)
    }

    /// This environment with a `redis-server` of its own as its broker,
    /// persisting as `persistence` says (`REDIS_DURABLE`, or other settings).
    pub fn with_redis(mut self, persistence: &[&str]) -> Option<Env> {
        let dir = self.dir.path().join("redis");
        std::fs::create_dir_all(&dir).expect("redis dir");
        let server = match RedisServer::start(dir, persistence) {
            Ok(server) => server,
            Err(e) => return unavailable("redis-server", &e),
        };
        self.broker_url = format!("redis://127.0.0.1:{}/0", server.port);
        self.redis = Some(server);
        Some(self)
    }

    /// This environment's own `redis-server`.
    pub fn redis(&self) -> &RedisServer {
        self.redis.as_ref().expect("an environment with Redis")
    }

    /// This environment's own `redis-server`, to kill or restart.
    pub fn redis_mut(&mut self) -> &mut RedisServer {
        self.redis.as_mut().expect("an environment with Redis")
    }

    /// Runs an operator command (`stock …`, `dlq …`) and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .args(["--database-url", &self.database_url, "--broker-url", &self.broker_url])
            .args(args)
            .output()
            .expect("running orderflow");
        assert!(out.status.success(), "orderflow {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    pub fn set_stock(&self, sku: &str, n: i64) {
        self.cli(&["stock", "set", sku, &n.to_string()]);
    }

    /// (available, reserved) of a SKU, from `orderflow stock list`.
    pub fn stock(&self, sku: &str) -> (i64, i64) {
        let (available, reserved, _) = self.stock_levels(sku);
        (available, reserved)
    }

    /// (available, reserved, shipped) of a SKU, from `orderflow stock list`.
    pub fn stock_levels(&self, sku: &str) -> (i64, i64, i64) {
        let listing = self.cli(&["stock", "list"]);
        assert_eq!(listing.lines().next(), Some("sku\tavailable\treserved\tshipped"), "the listing's header");
        let line = listing.lines().find(|l| l.split('\t').next() == Some(sku)).expect("sku listed");
        let cols: Vec<i64> = line.split('\t').skip(1).map(|c| c.parse().expect("number")).collect();
        (cols[0], cols[1], cols[2])
    }

    /// Dead letters as `orderflow dlq list` prints them.
    pub fn dead_letters(&self) -> Vec<Value> {
        self.cli(&["dlq", "list"]).lines().map(|l| serde_json::from_str(l).expect("json line")).collect()
    }

    /// Runs SQL against this test's database and returns its rows as
    /// `psql -qtA` prints them: a line per row, columns between `|`.
    pub fn sql(&self, sql: &str) -> String {
        match self.database_url.strip_prefix("sqlite://") {
            Some(path) => sqlite(path, sql).unwrap_or_else(|e| panic!("{sql}: {e}")),
            None => psql(&self.database_url, sql).expect("psql"),
        }
    }
}

fn sqlite(path: &str, sql: &str) -> rusqlite::Result<String> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let mut stmt = conn.prepare(sql)?;
    let columns = stmt.column_count();
    if columns == 0 {
        stmt.execute([])?;
        return Ok(String::new());
    }
    let rows = stmt.query_map([], |row| {
        let cells = (0..columns).map(|i| {
            Ok(match row.get::<_, rusqlite::types::Value>(i)? {
                rusqlite::types::Value::Null => String::new(),
                rusqlite::types::Value::Integer(n) => n.to_string(),
                rusqlite::types::Value::Real(x) => x.to_string(),
                rusqlite::types::Value::Text(t) => t,
                rusqlite::types::Value::Blob(b) => String::from_utf8_lossy(&b).into_owned(),
            })
        });
        cells.collect::<rusqlite::Result<Vec<_>>>().map(|cells| cells.join("|"))
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?.join("\n"))
}

/// A store and a broker: the combinations the contract suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    SqliteDb,
    SqliteRabbitmq,
    SqliteRedis,
    PostgresDb,
    PostgresRabbitmq,
    PostgresRedis,
}

/// Which broker a mode runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    Db,
    Rabbitmq,
    Redis,
}

impl Mode {
    /// A fresh environment for this mode, or `None` when its servers are
    /// unreachable (and the test is skipped).
    pub fn env(self) -> Option<Env> {
        match self {
            Mode::SqliteDb => Some(Env::embedded()),
            Mode::SqliteRabbitmq => Env::sqlite_rabbitmq(),
            Mode::PostgresDb => Env::postgres(false),
            Mode::PostgresRabbitmq => Env::postgres(true),
            Mode::SqliteRedis => Env::sqlite_redis(),
            Mode::PostgresRedis => Env::postgres_redis(),
        }
    }

    pub fn broker(self) -> Broker {
        match self {
            Mode::SqliteDb | Mode::PostgresDb => Broker::Db,
            Mode::SqliteRabbitmq | Mode::PostgresRabbitmq => Broker::Rabbitmq,
            Mode::SqliteRedis | Mode::PostgresRedis => Broker::Redis,
        }
    }

    fn sqlite(self) -> bool {
        matches!(self, Mode::SqliteDb | Mode::SqliteRabbitmq | Mode::SqliteRedis)
    }

    /// A fresh environment and the processes of this mode on it: on SQLite
    /// every role in one `run` process, on PostgreSQL the API, the inventory
    /// service and the notifier each in its own.
    pub async fn start(self) -> Option<(Env, Deployment)> {
        let env = self.env()?;
        let role = if self.sqlite() { "run" } else { "api" };
        let api = Server::start_with(&env, role, FLAGS, &[("ORDERFLOW_OPERATOR_TOKEN", OPERATOR_TOKEN)]).await;
        let mut app = Deployment { api, notifier: None, workers: Vec::new() };
        if !self.sqlite() {
            app.add(&env, "inventory", &[]).await;
            app.add(&env, "notifier", &[]).await;
            app.notifier = Some(app.workers.len() - 1);
        }
        Some((env, app))
    }
}

/// The operator token of a deployment's API (`Mode::start`).
pub const OPERATOR_TOKEN: &str = "test-operator-token";

/// What every process of a deployment is started with.
const FLAGS: &[&str] = &["--max-attempts", "3"];

/// The processes a test runs; each is killed when this is dropped.
pub struct Deployment {
    pub api: Server,
    /// Which of `workers` runs the notifier (the API's process when `None`).
    notifier: Option<usize>,
    pub workers: Vec<Server>,
}

impl Deployment {
    pub fn client(&self) -> &Client {
        &self.api.client
    }

    /// Starts one more process with `role` beside the others.
    pub async fn add(&mut self, env: &Env, role: &str, extra: &[&str]) {
        let args: Vec<&str> = FLAGS.iter().chain(extra).copied().collect();
        self.workers.push(Server::start(env, role, &args).await);
    }

    /// What the process running the notifier has logged.
    pub fn notifier_log(&self) -> String {
        self.notifier.map_or(&self.api, |i| &self.workers[i]).log()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(db) = &self.pg_database {
            let _ = psql(PG_ADMIN, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
        }
        if let Some(vhost) = &self.vhost {
            let _ = rabbitmqctl(&["delete_vhost", vhost]);
        }
    }
}

/// A running `orderflow` process.
pub struct Server {
    log: std::path::PathBuf,
    child: Child,
    pub client: Client,
}

impl Server {
    /// Starts `orderflow <role> --listen 127.0.0.1:0 <extra>` and waits until
    /// it listens (the API, or a worker's metrics).
    pub async fn start(env: &Env, role: &str, extra: &[&str]) -> Server {
        Server::start_with(env, role, extra, &[]).await
    }

    /// `start`, with these environment variables set for the process.
    pub async fn start_with(env: &Env, role: &str, extra: &[&str], vars: &[(&str, &str)]) -> Server {
        let log_path = env.dir.path().join(format!("{role}.log"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("log file");
        // Fast retries, unless the test sets its own.
        let retry: &[&str] = if extra.contains(&"--retry-base-ms") { &[] } else { &["--retry-base-ms", "20"] };
        let mut child = Command::new(BIN)
            .args(["--database-url", &env.database_url, "--broker-url", &env.broker_url, role])
            .args(["--listen", "127.0.0.1:0"])
            .args(retry)
            .args(extra)
            .envs(vars.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("starting orderflow");
        // Every serving role prints where it listens: the API, or a worker's
        // `/metrics` and `/health`.
        let stdout = child.stdout.take().expect("stdout");
        let addr = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).expect("reading stdout");
            line.trim().strip_prefix("listening on ").map(str::to_owned)
        })
        .await
        .expect("reader")
        .unwrap_or_else(|| panic!("orderflow {role} did not start; see {}", env.dir.path().display()));
        let client = Client::new(&addr);
        Server { log: log_path, child, client }
    }

    /// What the process has written to its log so far (all its runs with this role).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`TERM`, `INT`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").args([&format!("-{name}"), &self.pid().to_string()]).status().expect("kill");
        assert!(status.success());
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit()
    }

    /// SIGTERM, without waiting.
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Waits for the process to exit (fails after 30 s).
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "orderflow did not exit within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Typed requests to one API process.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
}

pub fn order(customer: &str, items: &[(&str, i64)]) -> Value {
    let items: Vec<Value> = items.iter().map(|(sku, n)| json!({ "sku": sku, "quantity": n })).collect();
    json!({ "customer_id": customer, "items": items })
}

impl Client {
    pub fn new(addr: &str) -> Client {
        Client { http: reqwest::Client::new(), base: format!("http://{addr}") }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: &Value, key: Option<&str>) -> reqwest::Response {
        let mut req = self.http.post(self.url(path)).json(body);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        req.send().await.expect("POST")
    }

    /// `POST` with a `traceparent` header: the request joins that trace.
    pub async fn post_traced(&self, path: &str, body: &Value, traceparent: &str) -> reqwest::Response {
        self.http.post(self.url(path)).header("traceparent", traceparent).json(body).send().await.expect("POST")
    }

    /// Places an order and returns its id; panics unless the answer is 202.
    pub async fn place(&self, body: &Value) -> String {
        let resp = self.post("/orders", body, None).await;
        assert_eq!(resp.status(), 202, "placing {body}");
        resp.json::<Value>().await.expect("json")["order_id"].as_str().expect("order_id").to_owned()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self.http.get(self.url(path)).send().await.expect("GET");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// `POST /orders/{id}/cancel`: its status and body.
    pub async fn cancel(&self, id: &str) -> (u16, Value) {
        let resp = self.http.post(self.url(&format!("/orders/{id}/cancel"))).send().await.expect("POST cancel");
        (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
    }

    /// `POST /admin/orders/{id}/ship` with the deployment's operator token.
    pub async fn ship(&self, id: &str) -> (u16, Value) {
        let url = self.url(&format!("/admin/orders/{id}/ship"));
        let resp = self.http.post(url).bearer_auth(OPERATOR_TOKEN).send().await.expect("POST ship");
        (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
    }

    /// Waits until every order is `completed` or `rejected`; returns them.
    pub async fn wait_terminal(&self, ids: &[String], timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut done = Vec::with_capacity(ids.len());
        for id in ids {
            loop {
                let (status, body) = self.get(&format!("/orders/{id}")).await;
                if status == 200 && matches!(body["status"].as_str(), Some("completed" | "rejected")) {
                    done.push(body);
                    break;
                }
                assert!(Instant::now() < deadline, "order {id} is not terminal after {timeout:?}: {status} {body}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        done
    }

    /// Opens `GET /orders/{id}/events`, resuming after `last` when given.
    pub async fn events(&self, id: &str, last: Option<&str>) -> EventStream {
        let mut request = self.http.get(self.url(&format!("/orders/{id}/events")));
        if let Some(last) = last {
            request = request.header("Last-Event-ID", last);
        }
        self.stream(request, id).await
    }

    /// Opens `GET /events?QUERY`, resuming after `last` when given.
    pub async fn feed(&self, query: &str, last: Option<&str>) -> EventStream {
        let mut request = self.http.get(self.url(&format!("/events?{query}")));
        if let Some(last) = last {
            request = request.header("Last-Event-ID", last);
        }
        self.stream(request, "every order").await
    }

    pub async fn stream(&self, request: reqwest::RequestBuilder, what: &str) -> EventStream {
        let response = request.send().await.expect("GET events");
        assert_eq!(response.status(), 200, "opening the stream of {what}");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        EventStream { response, buffer: String::new() }
    }

    /// Every order of a customer, following the cursor.
    pub async fn orders_of(&self, customer: &str) -> Vec<Value> {
        self.list(&format!("customer_id={customer}"), 1000).await
    }

    /// Every order `GET /orders?{filter}` finds, `limit` a page, following the cursor.
    pub async fn list(&self, filter: &str, limit: usize) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor = String::new();
        loop {
            let (status, page) = self.get(&format!("/orders?{filter}&limit={limit}&cursor={cursor}")).await;
            assert_eq!(status, 200, "{page}");
            all.extend(page["orders"].as_array().expect("orders").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = next.to_owned(),
                None => return all,
            }
        }
    }
}

/// Lets this process hold `n` descriptors, if the hard limit allows: a soft
/// limit of 1024 is common, and the tests running beside this one need some.
pub fn allow_descriptors(n: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|current| current < n) {
        limit.current = Some(limit.maximum.map_or(n, |max| max.min(n)));
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

/// The resident anonymous memory of a process, in KiB (`RssAnon`).
pub fn rss_anon_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process's status");
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).expect("RssAnon");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a number of KiB")
}

/// One Server-Sent Events stream, read event by event.
pub struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

/// One event: its type (`event:`), `id` and its data, parsed as JSON.
#[derive(Debug)]
pub struct SseEvent {
    pub kind: String,
    pub id: String,
    pub data: Value,
}

impl EventStream {
    /// The next event, or `None` once the server ended the stream; fails
    /// when nothing arrives within `patience` (heartbeat comments do not count).
    pub async fn next(&mut self, patience: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + patience;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field =
                    |name: &str| block.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim_start().to_owned()));
                if let Some(data) = field("data:") {
                    let data = serde_json::from_str(&data).expect("JSON data");
                    let (kind, id) = (field("event:").unwrap_or_default(), field("id:").unwrap_or_default());
                    return Some(SseEvent { kind, id, data });
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.response.chunk()).await;
            match chunk.unwrap_or_else(|_| panic!("no event within {patience:?}")).expect("reading the stream") {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes).expect("UTF-8")),
                None => return None,
            }
        }
    }

    /// Every event until the server ends the stream.
    pub async fn rest(&mut self, patience: Duration) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next(patience).await {
            events.push(event);
        }
        events
    }
}

/// Polls `check` until it is true, or fails after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The settings under which Redis loses nothing it acknowledged.
pub const REDIS_DURABLE: &[&str] = &["--appendonly", "yes", "--appendfsync", "always"];

/// A free port and the `n` after it, for servers a test starts (or restarts)
/// later on those numbers. They are picked below the kernel's ephemeral range,
/// so that no outgoing connection, which takes its local port from that range,
/// can hold one of them by then.
pub fn free_port_block(n: u16) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000, ephemeral_low.saturating_sub(n).max(10_001));
    loop {
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let base = low + (random % u64::from(high - low)) as u16;
        if (0..=n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
}

/// A `redis-server` this test started, on a port and in a directory of its
/// own; it is killed (that process only) when dropped.
pub struct RedisServer {
    pub port: u16,
    dir: std::path::PathBuf,
    args: Vec<String>,
    persistence: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` with `persistence` settings and waits until it answers.
    pub fn start(dir: std::path::PathBuf, persistence: &[&str]) -> Result<RedisServer, String> {
        match Command::new("redis-server").arg("--version").output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => return Err(String::from_utf8_lossy(&o.stderr).into_owned()),
            Err(e) => return Err(format!("redis-server is not installed ({e})")),
        }
        let port = free_port_block(0);
        let mut args: Vec<String> =
            ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--daemonize", "no"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        args.extend(["--dir".to_owned(), dir.display().to_string()]);
        args.extend(["--logfile".to_owned(), dir.join("redis.log").display().to_string()]);
        let persistence = persistence.iter().map(|s| s.to_string()).collect();
        let mut server = RedisServer { port, dir, args, persistence, child: None };
        server.restart()?;
        Ok(server)
    }

    /// Starts the server again, same port, directory and settings.
    pub fn restart(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(&self.args)
            .args(&self.persistence)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.try_cli(&["PING"]).is_ok_and(|out| out == "PONG") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("redis-server did not answer; see {}", self.dir.join("redis.log").display()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the server again, same port and directory, persisting as
    /// `persistence` says from now on.
    pub fn restart_with(&mut self, persistence: &[&str]) -> Result<(), String> {
        self.persistence = persistence.iter().map(|s| s.to_string()).collect();
        self.restart()
    }

    /// SIGKILL: Redis gets no chance to write anything more.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output();
        match out {
            Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned()),
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_owned()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Runs a command with `redis-cli` and returns its output (raw: one
    /// value a line).
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args).unwrap_or_else(|e| panic!("redis-cli {args:?}: {e}"))
    }

    /// `XLEN stream`.
    pub fn xlen(&self, stream: &str) -> u64 {
        self.cli(&["XLEN", stream]).parse().expect("XLEN")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
    }
}
