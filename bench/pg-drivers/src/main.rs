//! Measures sqlx against tokio-postgres + deadpool-postgres on orderflow's
//! PostgreSQL hot path: group-committed order inserts and point reads by id.
//! Both drivers run the same SQL on the same data in one process, taking
//! turns, so drift on the machine affects both alike.
//!
//! Usage: pg-drivers [seconds per run]   (default 10; BENCH_PG_URL names the
//! admin database, default postgres://postgres@127.0.0.1:5432/postgres)

mod driver;
mod group_commit;
mod order;
mod reads;
mod report;
mod schema;
mod sql;
mod sqlx_pg;
mod stats;
mod tokio_pg;

use driver::Driver;
use report::{Report, Runs};
use sqlx_pg::Sqlx;
use std::sync::Arc;
use std::time::Duration;
use tokio_pg::TokioPostgres;
use uuid::Uuid;

/// Runs per driver and workload, alternating between the drivers.
const ROUNDS: usize = 2;
const WARMUP: Duration = Duration::from_secs(1);
/// Connections in each driver's pool, shared by its writer and its readers.
const POOL_SIZE: usize = 8;
/// Orders in the table during the point reads.
const READ_ROWS: usize = 100_000;
const LOCKFILE: &str = include_str!("../Cargo.lock");

struct Config {
    admin_url: String,
    url: String,
    duration: Duration,
}

impl Config {
    fn from_env() -> anyhow::Result<Self> {
        let admin_url =
            std::env::var("BENCH_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let (server, _) = admin_url.rsplit_once('/').ok_or_else(|| anyhow::anyhow!("BENCH_PG_URL needs a database"))?;
        let url = format!("{server}/{}", schema::DATABASE);
        let seconds = match std::env::args().nth(1) {
            Some(arg) => arg.parse().map_err(|_| anyhow::anyhow!("usage: pg-drivers [seconds per run]"))?,
            None => 10,
        };
        Ok(Self { admin_url, url, duration: Duration::from_secs(seconds) })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let server_version = schema::recreate(&config.admin_url, &config.url).await?;
    let tokio_postgres = TokioPostgres::new(&config.url, POOL_SIZE)?;
    let sqlx = Sqlx::new(&config.url, POOL_SIZE as u32)?;

    let mut writes = Runs::default();
    for round in 1..=ROUNDS {
        writes.tokio_postgres.push(write_run(&tokio_postgres, "tokio-postgres", round, &config).await?);
        writes.sqlx.push(write_run(&sqlx, "sqlx", round, &config).await?);
    }
    let ids: Arc<[Uuid]> = schema::seed(&config.url, READ_ROWS).await?.into();
    let mut reads = Runs::default();
    for round in 1..=ROUNDS {
        reads.tokio_postgres.push(read_run(&tokio_postgres, "tokio-postgres", round, &ids, &config).await?);
        reads.sqlx.push(read_run(&sqlx, "sqlx", round, &ids, &config).await?);
    }

    report::print(&Report { heading: heading(&server_version, &config), writes, reads });
    Ok(())
}

async fn write_run<D: Driver>(
    driver: &D,
    name: &str,
    round: usize,
    config: &Config,
) -> anyhow::Result<group_commit::WriteOutcome> {
    schema::reset(&config.url).await?;
    let outcome = group_commit::measure(driver, WARMUP, config.duration).await?;
    eprintln!("round {round}, {name}, group commit: {:.0} orders/s", outcome.sample.per_second());
    Ok(outcome)
}

async fn read_run<D: Driver>(
    driver: &D,
    name: &str,
    round: usize,
    ids: &Arc<[Uuid]>,
    config: &Config,
) -> anyhow::Result<stats::Sample> {
    let sample = reads::measure(driver, ids.clone(), WARMUP, config.duration).await?;
    eprintln!("round {round}, {name}, point reads: {:.0} reads/s", sample.per_second());
    Ok(sample)
}

fn heading(server_version: &str, config: &Config) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "PostgreSQL {server_version} on {cores} cores; tokio-postgres {} + deadpool-postgres {} vs sqlx {}; \
         {ROUNDS} runs of {}s (+{}s warm-up) per driver and workload, alternating; \
         {} clients, pools of {POOL_SIZE}, reads over {READ_ROWS} orders",
        locked_version("tokio-postgres"),
        locked_version("deadpool-postgres"),
        locked_version("sqlx"),
        config.duration.as_secs(),
        WARMUP.as_secs(),
        group_commit::CLIENTS,
    )
}

/// The version of `name` that Cargo.lock pins.
fn locked_version(name: &str) -> &'static str {
    let wanted = format!("name = \"{name}\"");
    LOCKFILE
        .split("[[package]]")
        .filter(|package| package.lines().any(|line| line == wanted))
        .find_map(|package| package.lines().find_map(|line| line.strip_prefix("version = \"")?.strip_suffix('"')))
        .unwrap_or("?")
}
