//! Spans in an order's trace, and their optional export over OTLP.
//!
//! The API starts or joins a trace per request and the order keeps it
//! (`domain::TraceParent`); the services log every line about an order with
//! its `trace_id`. Without an OTLP endpoint that is all: no exporter, no
//! OpenTelemetry layer, and the workers make no span per event (their log
//! lines carry the field themselves, which costs nothing extra). With one
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`),
//! spans go out in batches over HTTP, and each span's OpenTelemetry parent is
//! the `traceparent` it was given: the client's for a request, the event's
//! for a worker's handling of it. How the trace travels between processes is
//! in docs/architecture.md#one-trace-per-order.

use crate::domain::{Event, TraceParent};
use axum::http::Method;
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceState, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::field::{display, Empty};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Whether spans are exported: set once, before the roles start.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// True when an OTLP exporter is installed.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The environment variables that turn the export on.
const ENDPOINT_VARS: [&str; 2] = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"];

/// Spans still in the exporter's batch go out when this is dropped (or
/// `shutdown` is called), so `main` holds it until the process ends.
pub struct ExportGuard(SdkTracerProvider);

impl ExportGuard {
    /// Sends what is left and stops the exporter. It blocks, so it runs on a
    /// thread of its own, off the runtime's workers.
    pub fn shutdown(self) {
        let provider = self.0;
        let done = std::thread::spawn(move || provider.shutdown());
        if let Ok(Err(e)) = done.join() {
            eprintln!("flushing the span exporter failed: {e}");
        }
    }
}

/// The exporter and its tracer, when an endpoint is configured; the service
/// is named by `OTEL_SERVICE_NAME`, else `orderflow-<role>`. The exporter
/// reads the endpoint, headers and timeout from the standard variables.
pub fn otlp(role: &str) -> anyhow::Result<Option<(opentelemetry_sdk::trace::Tracer, ExportGuard)>> {
    if !ENDPOINT_VARS.iter().any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty())) {
        return Ok(None);
    }
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
        .map_err(|e| anyhow::anyhow!("building the OTLP span exporter: {e}"))?;
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("orderflow-{role}"));
    let resource = Resource::builder().with_service_name(name).build();
    let provider = SdkTracerProvider::builder().with_resource(resource).with_batch_exporter(exporter).build();
    let tracer = provider.tracer("orderflow");
    EXPORTING.store(true, Ordering::Relaxed);
    Ok(Some((tracer, ExportGuard(provider))))
}

/// An OpenTelemetry context whose remote parent is `parent`.
fn remote(parent: TraceParent) -> Context {
    let span = SpanContext::new(
        opentelemetry::trace::TraceId::from_bytes(parent.trace_id().0),
        opentelemetry::trace::SpanId::from_bytes(parent.parent_id()),
        TraceFlags::new(parent.flags()),
        true,
        TraceState::default(),
    );
    Context::new().with_remote_span_context(span)
}

/// The `traceparent` naming `span`, as its exporter knows it.
fn own(span: &Span) -> Option<TraceParent> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    TraceParent::from_parts(sc.trace_id().to_bytes(), sc.span_id().to_bytes(), sc.trace_flags().to_u8())
}

/// A request's span, in the client's trace when it sent a valid
/// `traceparent` (`incoming`), else in a new one; and the `traceparent` of
/// the request's own span, which the response and the order carry.
pub fn request_span(method: &Method, path: &str, incoming: Option<TraceParent>) -> (Span, TraceParent) {
    if !exporting() {
        let server = incoming.map_or_else(TraceParent::start, |t| t.child());
        let span = tracing::info_span!("request", %method, path, trace_id = %server.trace_id());
        return (span, server);
    }
    // The exporter makes the span's id (and, for a new trace, the trace id):
    // the field is filled in once it has.
    let span = tracing::info_span!("request", %method, path, trace_id = Empty);
    if let Some(parent) = incoming {
        let _ = span.set_parent(remote(parent));
    }
    let server = own(&span).unwrap_or_else(|| incoming.map_or_else(TraceParent::start, |t| t.child()));
    span.record("trace_id", display(server.trace_id()));
    (span, server)
}

/// When spans are exported: a span for relaying the event `body` holds,
/// in the event's trace. `None` otherwise, or when the event has no trace.
pub fn relay_span(body: &str) -> Option<Span> {
    if !exporting() {
        return None;
    }
    let parent = Event::traceparent_of(body)?;
    let span = tracing::info_span!("relay", trace_id = %parent.trace_id());
    let _ = span.set_parent(remote(parent));
    Some(span)
}

/// When spans are exported: a span for `service`'s handling of `event`, its
/// parent the event's trace, and the event in the trace of that span (so
/// the events its handling causes are that span's children). `None`, and no
/// span at all, otherwise: per event that would cost more than the log line.
pub fn event_span(service: &'static str, event: &mut Event) -> Option<Span> {
    if !exporting() {
        return None;
    }
    let parent = event.traceparent?;
    let span = tracing::info_span!(
        "event",
        service,
        event_type = ?event.event_type,
        order_id = %event.order_id,
        trace_id = %parent.trace_id()
    );
    let _ = span.set_parent(remote(parent));
    event.traceparent = own(&span).or(event.traceparent);
    Some(span)
}
