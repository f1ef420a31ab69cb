//! The printed result: one table of figures over all runs, one of each run.

use crate::group_commit::WriteOutcome;
use crate::stats::Sample;

/// Each driver's runs of one workload, in the order they ran.
pub struct Runs<T> {
    pub tokio_postgres: Vec<T>,
    pub sqlx: Vec<T>,
}

impl<T> Default for Runs<T> {
    fn default() -> Self {
        Self { tokio_postgres: Vec::new(), sqlx: Vec::new() }
    }
}

pub struct Report {
    pub heading: String,
    pub writes: Runs<WriteOutcome>,
    pub reads: Runs<Sample>,
}

pub fn print(report: &Report) {
    println!("{}\n", report.heading);
    print_summary(report);
    println!();
    print_runs(report);
}

fn print_summary(report: &Report) {
    let writes = |runs: &[WriteOutcome]| Sample::merge(runs.iter().map(|r| &r.sample));
    let (tp_writes, sx_writes) = (writes(&report.writes.tokio_postgres), writes(&report.writes.sqlx));
    let (tp_reads, sx_reads) = (Sample::merge(&report.reads.tokio_postgres), Sample::merge(&report.reads.sqlx));
    println!("| measure | tokio-postgres | sqlx | tokio-postgres / sqlx |");
    println!("|---|---:|---:|---:|");
    row("group commit: orders/s", tp_writes.per_second(), sx_writes.per_second(), 0);
    row("group commit: p50 latency (ms)", tp_writes.percentile_ms(50.0), sx_writes.percentile_ms(50.0), 2);
    row("group commit: p99 latency (ms)", tp_writes.percentile_ms(99.0), sx_writes.percentile_ms(99.0), 2);
    let per_commit = |runs: &[WriteOutcome]| {
        runs.iter().map(|r| r.orders).sum::<u64>() as f64 / runs.iter().map(|r| r.commits).sum::<u64>() as f64
    };
    row(
        "group commit: orders per commit",
        per_commit(&report.writes.tokio_postgres),
        per_commit(&report.writes.sqlx),
        1,
    );
    row("point reads: reads/s", tp_reads.per_second(), sx_reads.per_second(), 0);
    row("point reads: p50 latency (ms)", tp_reads.percentile_ms(50.0), sx_reads.percentile_ms(50.0), 3);
    row("point reads: p99 latency (ms)", tp_reads.percentile_ms(99.0), sx_reads.percentile_ms(99.0), 3);
}

fn row(measure: &str, tokio_postgres: f64, sqlx: f64, decimals: usize) {
    println!("| {measure} | {tokio_postgres:.decimals$} | {sqlx:.decimals$} | {:.2} |", tokio_postgres / sqlx);
}

fn print_runs(report: &Report) {
    println!("| run | tokio-postgres orders/s | sqlx orders/s | tokio-postgres reads/s | sqlx reads/s |");
    println!("|---|---:|---:|---:|---:|");
    let (writes, reads) = (&report.writes, &report.reads);
    for (i, ((tp_w, sx_w), (tp_r, sx_r))) in
        writes.tokio_postgres.iter().zip(&writes.sqlx).zip(reads.tokio_postgres.iter().zip(&reads.sqlx)).enumerate()
    {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            i + 1,
            tp_w.sample.per_second(),
            sx_w.sample.per_second(),
            tp_r.per_second(),
            sx_r.per_second()
        );
    }
}
