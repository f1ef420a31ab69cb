//! Every request's latency, by method, route and status class
//! (`orderflow_http_request_duration_seconds`).
//!
//! The route is the template the router matched (`/orders/{id}`, never the
//! id itself), so the series stay few; a request no route matched is
//! labelled `unmatched`. The status is its class (`2xx`, `4xx`, `5xx`). The
//! time runs until the handler's response, headers only, is ready: a live
//! stream (`/orders/{id}/events`, `/events`) counts the time to open it, not
//! the minutes it stays open, so it sits beside the other routes without
//! distorting their percentiles. Requests shed at the in-flight limit never
//! reach a route; `orderflow_requests_shed_total` counts them.
//!
//! The layer is added with `Router::layer`, inside the router, because only
//! there is the matched route known. A request resolves its histogram with
//! one read of a small map; the map and each histogram are made once, the
//! first time a route, method and class meet.

use crate::telemetry::catalog::HTTP_REQUEST_DURATION;
use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use metrics::Histogram;
use pin_project_lite::pin_project;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{LazyLock, OnceLock, RwLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tower::{Layer, Service};

/// The route label of a request that matched no route.
pub const UNMATCHED: &str = "unmatched";

const METHODS: [&str; 8] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "other"];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One route's histograms, one slot per method and status class, each
/// registered only once a request fills it (an empty series would clutter
/// `/metrics`).
type Slots = [OnceLock<Histogram>; METHODS.len() * CLASSES.len()];

static ROUTES: LazyLock<RwLock<HashMap<Box<str>, Box<Slots>>>> = LazyLock::new(Default::default);

fn method_index(method: &Method) -> usize {
    METHODS[..METHODS.len() - 1].iter().position(|m| *m == method.as_str()).unwrap_or(METHODS.len() - 1)
}

fn class_index(status: u16) -> usize {
    usize::from(status / 100).clamp(1, CLASSES.len()) - 1
}

fn record(route: &str, method: usize, class: usize, took: Duration) {
    let fill = |slots: &Slots| {
        let slot = &slots[method * CLASSES.len() + class];
        slot.get_or_init(|| {
            metrics::histogram!(
                HTTP_REQUEST_DURATION,
                "method" => METHODS[method],
                "route" => route.to_owned(),
                "status" => CLASSES[class]
            )
        })
        .record(took);
    };
    if let Some(slots) = ROUTES.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(route) {
        return fill(slots);
    }
    let mut routes = ROUTES.write().unwrap_or_else(|poisoned| poisoned.into_inner());
    fill(routes.entry(route.into()).or_insert_with(|| Box::new(std::array::from_fn(|_| OnceLock::new()))));
}

#[derive(Debug, Clone, Copy, Default)]
pub struct MeteredLayer;

impl<S> Layer<S> for MeteredLayer {
    type Service = Metered<S>;
    fn layer(&self, inner: S) -> Metered<S> {
        Metered { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Metered<S> {
    inner: S,
}

impl<S> Service<Request> for Metered<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = request.extensions().get::<MatchedPath>().cloned();
        let method = method_index(request.method());
        MeteredFuture { inner: self.inner.call(request), start: Instant::now(), route, method }
    }
}

pin_project! {
    pub struct MeteredFuture<F> {
        #[pin]
        inner: F,
        start: Instant,
        route: Option<MatchedPath>,
        method: usize,
    }
}

impl<F, E> Future for MeteredFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx));
        if let Ok(response) = &out {
            let route = this.route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
            record(route, *this.method, class_index(response.status().as_u16()), this.start.elapsed());
        }
        Poll::Ready(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_statuses_fall_in_their_slots() {
        assert_eq!(METHODS[method_index(&Method::POST)], "POST");
        assert_eq!(METHODS[method_index(&Method::CONNECT)], "other");
        assert_eq!(CLASSES[class_index(204)], "2xx");
        assert_eq!(CLASSES[class_index(404)], "4xx");
        assert_eq!(CLASSES[class_index(503)], "5xx");
        assert_eq!(CLASSES[class_index(999)], "5xx");
    }
}
