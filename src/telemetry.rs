//! Logs and metrics.
//!
//! Logs go to stderr, as text or JSON lines (`--log-format json`), filtered by
//! `RUST_LOG` (default `info`). A thread of their own writes them, as many
//! lines per system call as have gathered: the notifier logs a line per
//! order, and a write per line would cost more than the order's commit.
//! Metrics are recorded with the `metrics` crate and rendered in the
//! Prometheus format at `/metrics`. When an OTLP endpoint is set, spans are
//! also exported (`crate::traces`); without one no layer is added for it.

use crate::config::LogFormat;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::io::{BufWriter, IsTerminal};
use std::sync::OnceLock;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

static METRICS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// What `main` holds until the process ends: lines still waiting are
/// written when it is dropped; spans still waiting, at `flush`.
pub struct Logs {
    _lines: WorkerGuard,
    spans: Option<crate::traces::ExportGuard>,
}

impl Logs {
    /// Sends the spans the exporter still holds.
    pub fn flush(mut self) {
        if let Some(spans) = self.spans.take() {
            spans.shutdown();
        }
    }
}

/// Installs the logger, and the span exporter when an OTLP endpoint is set
/// (`role` names the service by default).
pub fn init_logs(format: LogFormat, role: &str) -> Logs {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal, not in files or collectors.
    let ansi = std::io::stderr().is_terminal();
    // The writer thread flushes the buffer each time it has written every
    // line waiting. A full queue makes loggers wait: no line is dropped.
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("orderflow-log")
        .finish(BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    let lines = tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(writer);
    let lines = match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines.json().boxed(),
    };
    let (spans, export) = match crate::traces::otlp(role) {
        Ok(Some((tracer, guard))) => (Some(tracing_opentelemetry::layer().with_tracer(tracer)), Some(guard)),
        Ok(None) => (None, None),
        Err(e) => {
            eprintln!("spans are not exported: {e:#}");
            (None, None)
        }
    };
    let _ = tracing_subscriber::registry().with(filter).with(lines).with(spans).try_init();
    Logs { _lines: guard, spans: export }
}

/// The process's Prometheus recorder, installed on first use.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    METRICS.get_or_init(|| PrometheusBuilder::new().install_recorder().ok()).clone()
}
