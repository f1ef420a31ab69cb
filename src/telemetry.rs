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
use std::time::{SystemTime, UNIX_EPOCH};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
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
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(writer).with_timer(LineTime);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    guard
}

/// The time of a log line as tracing-subscriber's default timer writes it
/// (RFC 3339 in UTC, to the microsecond), with the date and the time to the
/// second formatted once a second on each thread instead of for every line:
/// that took a quarter of the notifier's work per line.
struct LineTime;

impl FormatTime for LineTime {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let (seconds, micros) = (now.as_secs() as i64, now.subsec_micros());
        crate::domain::with_second_text(seconds, |second| w.write_str(second.unwrap_or("")))?;
        crate::domain::write_fraction(w, micros, 6)
    }
}

/// The process's Prometheus recorder, installed on first use.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    METRICS.get_or_init(|| PrometheusBuilder::new().install_recorder().ok()).clone()
}

#[cfg(test)]
mod tests {
    use super::LineTime;
    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::time::{FormatTime, SystemTime};

    fn format(timer: &impl FormatTime) -> String {
        let mut text = String::new();
        timer.format_time(&mut Writer::new(&mut text)).unwrap();
        text
    }

    /// The same text as the default timer's, from the same second, first
    /// formatted and then taken from the thread's cache.
    #[test]
    fn a_line_time_reads_as_the_default_timers() {
        for _ in 0..3 {
            let (before, ours, after) = (format(&SystemTime), format(&LineTime), format(&SystemTime));
            assert_eq!(ours.len(), before.len(), "{ours} against {before}");
            assert!(before[..19] == ours[..19] || ours[..19] == after[..19], "{before} {ours} {after}");
            assert!(before <= ours && ours <= after, "{before} <= {ours} <= {after}");
            assert!(ours.ends_with('Z') && ours.as_bytes()[19] == b'.', "{ours}");
            chrono::DateTime::parse_from_rfc3339(&ours).unwrap();
        }
    }
}
