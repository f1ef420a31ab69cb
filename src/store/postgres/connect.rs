//! Reaching the database: the URL, the pool, and the schema migration.
//!
//! Several processes (API replicas, workers) open the same database at once,
//! often while it is still starting, so connecting is bounded (2 s) and
//! migrating is serialized: every process takes the same transaction-scoped
//! advisory lock, checks the recorded schema version and applies only what is
//! missing. The pool checks a connection cheaply on reuse (`Fast`: is it
//! closed?); one that died with the server is replaced on the next checkout,
//! so the store recovers by itself when PostgreSQL returns.

use super::CONNECT_TIMEOUT;
use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::NoTls;

/// Connections per process: enough for the order writer's batches in flight,
/// the consumers and the API's reads.
const POOL_SIZE: usize = 16;
/// Serializes schema migrations of processes that start at the same time.
const MIGRATION_LOCK: i64 = 0x6f72_6465_7266_6c6f; // "orderflo"
/// Migrations in order; version N is the N-th script. Each is idempotent.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/postgres.sql"),
    include_str!("../migrations/postgres-2.sql"),
    include_str!("../migrations/postgres-3.sql"),
    include_str!("../migrations/postgres-4.sql"),
    include_str!("../migrations/postgres-5.sql"),
    include_str!("../migrations/postgres-6.sql"),
    include_str!("../migrations/postgres-7.sql"),
];

pub(super) fn pool(config: &tokio_postgres::Config) -> anyhow::Result<Pool> {
    let manager =
        Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .context("building the PostgreSQL pool")
}

/// Parses a `postgres://` URL, taking out the `schema` parameter that
/// tokio-postgres does not know and turning it into a `search_path`.
pub(super) fn parse_url(url: &str) -> anyhow::Result<(tokio_postgres::Config, Option<String>)> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut schema = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.strip_prefix("schema=") {
            Some(name) => schema = Some(name.to_owned()),
            None => rest.push(pair),
        }
    }
    let url = if rest.is_empty() { base.to_owned() } else { format!("{base}?{}", rest.join("&")) };
    let mut config = tokio_postgres::Config::from_str(&url).context("parsing the PostgreSQL URL")?;
    if let Some(name) = &schema {
        anyhow::ensure!(
            !name.is_empty()
                && name.len() <= 63
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "schema '{name}' must be 1-63 lowercase letters, digits or underscores"
        );
        let options = config.get_options().map(|o| format!("{o} ")).unwrap_or_default();
        config.options(format!("{options}-c search_path={name}"));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("orderflow");
    }
    // Notice a vanished server within a minute, not the kernel's hours: an
    // idle connection is probed, and one whose writes go unacknowledged for
    // 30 s is dropped, so its callers get `Unavailable` instead of waiting.
    config.keepalives_idle(Duration::from_secs(30)).keepalives_interval(Duration::from_secs(10)).keepalives_retries(3);
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(Duration::from_secs(30));
    }
    Ok((config, schema))
}

/// Brings the schema up to date. The advisory lock makes processes that start
/// together take turns, so `CREATE … IF NOT EXISTS` never races itself.
pub(super) async fn migrate(client: &mut Object, schema: Option<&str>) -> anyhow::Result<()> {
    let tx = client.transaction().await.context("starting the migration")?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.context("locking the schema")?;
    if let Some(name) = schema {
        let exists = tx.query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&name]).await?.is_some();
        if !exists {
            tx.batch_execute(&format!("CREATE SCHEMA \"{name}\"")).await.context("creating the schema")?;
        }
    }
    let current: Option<String> = tx.query_one("SELECT current_schema()", &[]).await?.get(0);
    anyhow::ensure!(current.is_some(), "the search_path names no existing schema; create it first");
    // Checked first, so a role without CREATE can start on a migrated schema.
    let tracked: bool = tx.query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[]).await?.get(0);
    if !tracked {
        tx.batch_execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)")
            .await
            .context("creating schema_version")?;
    }
    let version: i32 = tx.query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[]).await?.get(0);
    for (n, script) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let n = n as i32 + 1;
        tx.batch_execute(script).await.with_context(|| format!("migrating the PostgreSQL schema to version {n}"))?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
            &[&n, &crate::domain::now_millis()],
        )
        .await?;
    }
    tx.commit().await.context("committing the migration")?;
    Ok(())
}
