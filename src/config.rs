//! The command line: one binary, a subcommand per role or operator tool.
//!
//! Every option can also come from an `ORDERFLOW_*` variable, so the same
//! binary is configured by flags on a laptop and by environment in a container.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "orderflow", version, about = "Asynchronous, fault-tolerant order processing")]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand shares.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Where orders live: `sqlite://PATH` or `postgres://…` (PostgreSQL).
    #[arg(long, env = "ORDERFLOW_DATABASE_URL", default_value = "sqlite://orderflow.db", global = true)]
    pub database_url: String,
    /// How events travel: `db` (the database's own queue), `amqp://…`
    /// (RabbitMQ) or `redis://…` / `rediss://…` (Redis Streams).
    #[arg(long, env = "ORDERFLOW_BROKER_URL", default_value = "db", global = true)]
    pub broker_url: String,
    /// Deliveries of a failing message before it is dead-lettered (with
    /// RabbitMQ, the queues' `x-delivery-limit`).
    #[arg(long, env = "ORDERFLOW_MAX_ATTEMPTS", default_value_t = 5, global = true, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// Unacknowledged deliveries a consumer may hold (RabbitMQ prefetch).
    #[arg(long, env = "ORDERFLOW_PREFETCH", default_value_t = 256, global = true)]
    pub prefetch: u16,
    /// Use a Redis broker that could lose events it acknowledged (one without
    /// `appendonly yes` and `appendfsync always`, or whose settings cannot be
    /// read); without this flag orderflow refuses it.
    #[arg(long, env = "ORDERFLOW_ALLOW_VOLATILE_BROKER", global = true)]
    pub allow_volatile_broker: bool,
    /// Milliseconds a Redis stream entry stays pending with a consumer before
    /// another consumer claims it: how long the entries of a worker that died
    /// wait. Longer than the slowest batch, or live workers' entries are
    /// handled twice (harmlessly, but for nothing).
    #[arg(long, env = "ORDERFLOW_REDIS_CLAIM_IDLE_MS", default_value_t = 30_000, global = true, value_parser = clap::value_parser!(u64).range(10..=86_400_000))]
    pub redis_claim_idle_ms: u64,
    /// Milliseconds between two trims of a Redis stream (each drops the
    /// entries every consumer group has acknowledged).
    #[arg(long, env = "ORDERFLOW_REDIS_TRIM_INTERVAL_MS", default_value_t = 1_000, global = true, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub redis_trim_interval_ms: u64,
    /// A Redis that caches single orders for `GET /orders/{id}`
    /// (`redis://…`, `rediss://…`); unset: no cache. Every role that reads
    /// orders or changes their status needs it: the API reads through it, the
    /// inventory service and the notifier tell it of each status change. It
    /// need not persist (no broker check is run on it).
    #[arg(long, env = "ORDERFLOW_CACHE_URL", global = true)]
    pub cache_url: Option<String>,
    /// Milliseconds one cache call may take; slower, or failed, it counts as
    /// an error, the store answers instead, and the cache is skipped for a
    /// second.
    #[arg(long, env = "ORDERFLOW_CACHE_TIMEOUT_MS", default_value_t = 50, global = true, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub cache_timeout_ms: u64,
    /// How long an idempotency key holds (`30s`, `24h`, `7d`): a request
    /// repeated with the key within it gets the first order back; after it
    /// the key is unknown and the request places a new order.
    #[arg(long, env = "ORDERFLOW_IDEMPOTENCY_KEY_TTL", default_value = "24h", value_parser = window, global = true)]
    pub idempotency_key_ttl: Duration,
    /// How long the consumers remember the events they applied (their inbox,
    /// and the notifications), so that a redelivered copy is not applied
    /// twice (`30s`, `24h`, `7d`). It must outlast any redelivery: a shorter
    /// one than the retries and claim timeouts allow is refused at start.
    #[arg(long, env = "ORDERFLOW_INBOX_RETENTION", default_value = "7d", value_parser = window, global = true)]
    pub inbox_retention: Duration,
    /// Log format.
    #[arg(long, env = "ORDERFLOW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

impl Common {
    pub fn redis_claim_idle(&self) -> Duration {
        Duration::from_millis(self.redis_claim_idle_ms)
    }

    pub fn redis_trim_interval(&self) -> Duration {
        Duration::from_millis(self.redis_trim_interval_ms)
    }

    pub fn cache_timeout(&self) -> Duration {
        Duration::from_millis(self.cache_timeout_ms)
    }

    pub fn retention(&self) -> crate::domain::Retention {
        crate::domain::Retention { key_ttl: self.idempotency_key_ttl, inbox: self.inbox_retention }
    }
}

/// A retention window: a duration with its unit (`30s`, `15m`, `24h`, `7d`),
/// at least a second.
fn window(text: &str) -> Result<Duration, String> {
    let window = humantime::parse_duration(text).map_err(|e| format!("{e} (expected e.g. 30s, 24h, 7d)"))?;
    if window < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(window)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every role in one process: API, inventory and notifier.
    Run(ServeArgs),
    /// Run the HTTP API only.
    Api(ServeArgs),
    /// Run the inventory service only.
    Inventory(ServeArgs),
    /// Run the notifier only.
    Notifier(ServeArgs),
    /// Run the outbox relay only (with a network broker).
    Relay(ServeArgs),
    /// Create or update the database schema, then exit.
    Migrate,
    /// Inspect or set stock levels.
    #[command(subcommand)]
    Stock(StockCommand),
    /// Inspect or replay dead-lettered messages.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Inspect or replay webhooks that were given up on.
    #[command(subcommand)]
    Webhooks(WebhookCommand),
}

impl Command {
    /// The subcommand's name: what a process's spans are exported as
    /// (`orderflow-<role>`) unless `OTEL_SERVICE_NAME` says otherwise.
    pub fn role(&self) -> &'static str {
        match self {
            Command::Run(_) => "run",
            Command::Api(_) => "api",
            Command::Inventory(_) => "inventory",
            Command::Notifier(_) => "notifier",
            Command::Relay(_) => "relay",
            Command::Migrate => "migrate",
            Command::Stock(_) => "stock",
            Command::Dlq(_) => "dlq",
            Command::Webhooks(_) => "webhooks",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address the HTTP API listens on, `127.0.0.1:8080` unless given (port 0
    /// picks a free port). A worker (`relay`, `inventory`, `notifier`) serves
    /// its `/metrics` and `/health` there, on a free port unless given, so
    /// several workers on one host need no flags; each prints `listening on ADDR`.
    #[arg(long, env = "ORDERFLOW_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Most events a worker takes at once and applies in one transaction (with SQLite, one per 32).
    #[arg(long, env = "ORDERFLOW_BATCH_SIZE", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// First retry delay of a failing message, in milliseconds; it doubles each time.
    #[arg(long, env = "ORDERFLOW_RETRY_BASE_MS", default_value_t = 200)]
    pub retry_base_ms: u64,
    /// Requests the API handles at once (every route but `/health`); more are
    /// answered 503 with Retry-After.
    #[arg(long, env = "ORDERFLOW_MAX_IN_FLIGHT", default_value_t = 2048)]
    pub max_in_flight: usize,
    /// Live streams (`GET /orders/{id}/events`) the API serves at once; more
    /// are answered 503 with Retry-After.
    #[arg(long, env = "ORDERFLOW_MAX_STREAMS", default_value_t = 2048)]
    pub max_streams: usize,
    /// Dead letters `POST /admin/dead-letters/replay` sends back per second,
    /// so a bulk replay does not flood the pipeline.
    #[arg(long, env = "ORDERFLOW_REPLAY_RATE", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub replay_rate: u32,
    /// Leave the outbox to a separate `orderflow relay` (for `api` and `run`).
    #[arg(long, env = "ORDERFLOW_WITHOUT_RELAY")]
    pub without_relay: bool,
    /// Seconds the API keeps serving after SIGTERM or SIGINT, with `/ready`
    /// answering 503, before it stops accepting (`api` and `run`; 0: at once;
    /// a second signal skips the rest). nginx notices a replica only when it
    /// fails and then skips it for fail_timeout (2 s in deploy/nginx.conf), so
    /// the default outlasts that, with room for a replica's restart: in a
    /// rolling restart, the replica restarted before this one is back in
    /// rotation by the time this one closes.
    #[arg(long, env = "ORDERFLOW_DRAIN_SECS", default_value_t = 5)]
    pub drain_secs: u64,
    /// Seconds a clean shutdown waits for in-flight work before giving up
    /// (after the drain).
    #[arg(long, env = "ORDERFLOW_SHUTDOWN_TIMEOUT", default_value_t = 30)]
    pub shutdown_timeout: u64,
    /// Seconds a client has to send a whole request header, counted from
    /// when the server starts waiting for it: on a new connection, and on a
    /// kept-alive one once the previous answer is sent.
    #[arg(long, env = "ORDERFLOW_HEADER_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout_secs: u64,
    /// Seconds a request body may stall (no bytes arriving) before the
    /// request is answered 408.
    #[arg(long, env = "ORDERFLOW_BODY_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_timeout_secs: u64,
    /// Seconds a kept-alive connection may wait for its next request before
    /// it is closed (the header timeout bounds it too).
    #[arg(long, env = "ORDERFLOW_IDLE_TIMEOUT_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub idle_timeout_secs: u64,
    /// Connections the API keeps open at once. A client arriving at the cap
    /// takes the place of the oldest connection that has no request being
    /// handled. Lowered at start if the descriptor limit is too low for it.
    #[arg(long, env = "ORDERFLOW_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// How often the roles prune what has outlived its window (`30s`, `1m`):
    /// the API the idempotency keys, each consumer its inbox.
    #[arg(long, env = "ORDERFLOW_PRUNE_INTERVAL", default_value = "1m", value_parser = window)]
    pub prune_interval: Duration,
    /// Who may use the customer routes: `none` (anyone who reaches the API;
    /// put it behind something that authenticates) or `jwt` (a bearer token
    /// signed with `ORDERFLOW_JWT_KEY`, whose `sub` is the customer, who then
    /// sees only their own orders). For `api` and `run`.
    #[arg(long, env = "ORDERFLOW_AUTH", value_enum, default_value_t = AuthMode::None)]
    pub auth: AuthMode,
    /// Where the notifier POSTs every notification as a Standard Webhook
    /// (`http://…` or `https://…`; `notifier` and `run`). Needs
    /// `ORDERFLOW_WEBHOOK_SECRET` (`whsec_<base64>`), which is read from the
    /// environment only (docs/operations.md#webhooks). Unset: no webhooks.
    #[arg(long, env = "ORDERFLOW_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// Milliseconds one webhook request may take, answer included; slower
    /// counts as a failed attempt, retried.
    #[arg(long, env = "ORDERFLOW_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub webhook_timeout_ms: u64,
    /// Webhook requests in flight at once, per notifier process.
    #[arg(long, env = "ORDERFLOW_WEBHOOK_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub webhook_concurrency: u32,
    /// First delay before a failed webhook is tried again, in milliseconds;
    /// it doubles with each failure (with jitter), up to ten minutes.
    #[arg(long, env = "ORDERFLOW_WEBHOOK_RETRY_BASE_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub webhook_retry_base_ms: u64,
    /// How long a webhook is retried (from its notification) before it is
    /// dead-lettered (`24h`, `90m`, `30s`).
    #[arg(long, env = "ORDERFLOW_WEBHOOK_MAX_AGE", default_value = "24h", value_parser = humantime::parse_duration)]
    pub webhook_max_age: Duration,
}

/// How the customer routes authenticate (docs/operations.md#authentication).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// No authentication: every client sees every order.
    None,
    /// A JSON Web Token per request, verified with `ORDERFLOW_JWT_KEY`.
    Jwt,
}

impl ServeArgs {
    /// Where the process listens: the API on 8080 by default, a worker on any free port.
    pub fn listen(&self, api: bool) -> SocketAddr {
        let port = if api { 8080 } else { 0 };
        self.listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    pub fn retry_base(&self) -> Duration {
        Duration::from_millis(self.retry_base_ms)
    }

    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_secs)
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum StockCommand {
    /// Set the available quantity of a SKU (creating it if new).
    Set {
        sku: String,
        #[arg(value_parser = clap::value_parser!(i64).range(0..=1_000_000_000))]
        available: i64,
    },
    /// List every SKU with its available, reserved and shipped quantities.
    List,
}

#[derive(Debug, Clone, Subcommand)]
pub enum DlqCommand {
    /// List dead-lettered messages.
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Send dead letters back to their queue.
    Replay {
        /// The dead letter's id, as `dlq list` shows it.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Replay every dead letter.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum WebhookCommand {
    /// List dead-lettered webhooks, oldest first, one JSON object a line.
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Queue dead-lettered webhooks again (same webhook-id, retried afresh).
    Replay {
        /// The webhook's id, as `webhooks list` shows it.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Replay every dead-lettered webhook.
        #[arg(long)]
        all: bool,
    },
}
