//! Logs and metrics.
//!
//! Logs go to stderr, as text or JSON lines (`--log-format json`), filtered by
//! `RUST_LOG` (default `info`). A thread of their own writes them, as many
//! lines per system call as have gathered: the notifier logs a line per
//! order, and a write per line would cost more than the order's commit.
//! Metrics are recorded with the `metrics` crate and rendered in the
//! Prometheus format at `/metrics`.

use crate::config::LogFormat;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::io::{BufWriter, IsTerminal};
use std::sync::OnceLock;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

static METRICS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the logger. Lines still waiting are written when the returned
/// guard is dropped, so `main` holds it until the process ends.
pub fn init_logs(format: LogFormat) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal, not in files or collectors.
    let ansi = std::io::stderr().is_terminal();
    // The writer thread flushes the buffer each time it has written every
    // line waiting. A full queue makes loggers wait: no line is dropped.
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("orderflow-log")
        .finish(BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    guard
}

/// The process's Prometheus recorder, installed on first use.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    METRICS.get_or_init(|| PrometheusBuilder::new().install_recorder().ok()).clone()
}
