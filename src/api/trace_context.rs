//! W3C Trace Context on every request: the `traceparent` a client sends is
//! joined, and every response names the server's span in the same trace.
//!
//! A request without a valid `traceparent` (the specification says an
//! invalid one is ignored) starts a new trace. Each request runs in a span
//! carrying `trace_id`, so every line the API logs for it has the trace. The
//! request reaches the handlers with its `traceparent` header replaced by
//! the server's, as a proxy would pass it on: placing an order stores that
//! value with the order and its events (`orders::accept`).

use crate::domain::TraceParent;
use crate::traces;
use axum::http::{HeaderName, HeaderValue, Request, Response};
use futures::future::BoxFuture;
use std::task::{Context, Poll};
use tower::{Layer, Service};
use tracing::Instrument;

pub(super) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Wraps a service in [`TraceContext`].
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct TraceContextLayer;

impl<S> Layer<S> for TraceContextLayer {
    type Service = TraceContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceContext { inner }
    }
}

#[derive(Debug, Clone)]
pub(super) struct TraceContext<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for TraceContext<S>
where
    S: Service<Request<B>, Response = Response<R>> + Send,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let incoming = req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(TraceParent::parse);
        let (span, server) = traces::request_span(req.method(), req.uri().path(), incoming);
        let value = HeaderValue::try_from(server.to_string()).expect("a traceparent is a valid header value");
        req.headers_mut().insert(TRACEPARENT, value.clone());
        let answer = self.inner.call(req).instrument(span);
        Box::pin(async move {
            let mut response = answer.await?;
            response.headers_mut().insert(TRACEPARENT, value);
            Ok(response)
        })
    }
}

/// The request's `traceparent`, as this layer left it.
pub(super) fn of(headers: &axum::http::HeaderMap) -> Option<TraceParent> {
    headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(TraceParent::parse)
}
