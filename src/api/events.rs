//! `GET /orders/{id}/events`: an order's status changes as Server-Sent
//! Events, live.
//!
//! The stream sends the order's history first (each transition one event,
//! numbered by its place in the history: `placed` is 1), then each
//! transition as it commits, and ends after the last status an order can
//! reach. A client that reconnects with `Last-Event-ID: N` gets the
//! transitions after the N-th, so it sees each once, whichever replica it
//! reaches. The stream waits on the process's `live::Hub`, which never waits
//! for it, so a slow client only falls behind; comments every 15 s keep
//! proxies from closing an idle stream; and when the API starts to drain,
//! the stream ends so the client reconnects elsewhere.

use super::orders::parse_id;
use super::responses::StreamErrors;
use super::{ApiError, AppState};
use crate::domain::{Caller, OrderId, Status};
use crate::store::{OrderView, Store};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

/// How often an idle stream sends a comment.
pub(super) const HEARTBEAT: Duration = Duration::from_secs(15);

/// Follow an order's status live, as Server-Sent Events.
///
/// Each event is `event: status`, `id: N` (the transition's place in the
/// order's history) and `data: {"order_id","status","at","reason"}`.
#[utoipa::path(
    get,
    path = "/orders/{id}/events",
    tag = "orders",
    operation_id = "order_events",
    security((), ("customer" = []), ("operator" = [])),
    params(
        ("id" = OrderId, Path, description = "The order's id, as `POST /orders` answered it."),
        ("Last-Event-ID" = Option<u32>, Header, description = "The `id` of the last event received: only later transitions are sent."),
    ),
    responses(
        (status = 200, description = "The order's transitions, then each new one as it commits; the stream ends after a final status: `rejected`, `cancelled` or `shipped`.",
         content_type = "text/event-stream", body = String),
        StreamErrors
    )
)]
pub(super) async fn order_events(
    caller: Caller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(&raw)?;
    let after = last_event_id(&headers)?;
    let permit = admit(&state)?;
    let view = state.store.get_order(id).await?.filter(|view| caller.may_see(&view.customer_id));
    let view = view.ok_or_else(|| super::caller::not_found(id))?;
    let changes = state.live.watch(id, view.status);
    let follow = Follow {
        store: state.store.clone(),
        id,
        view,
        sent: after as usize,
        changes,
        draining: state.draining.clone(),
        _permit: permit,
    };
    let stream = futures::stream::unfold(follow, |mut follow| async move {
        let event = follow.next().await?;
        Some((Ok::<_, std::convert::Infallible>(event), follow))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(HEARTBEAT)).into_response())
}

/// A place for one more live stream, held until it ends. A draining replica
/// takes no new stream, so the client (or the proxy) goes elsewhere; past
/// `--max-streams` the answer is `too_many_streams`.
pub(super) fn admit(state: &AppState) -> Result<OwnedSemaphorePermit, ApiError> {
    if state.draining.is_cancelled() {
        return Err(ApiError::Unavailable("this replica is draining".into()));
    }
    state.live.admit().ok_or(ApiError::TooManyStreams)
}

/// `Last-Event-ID`, or 0 when absent.
fn last_event_id(headers: &HeaderMap) -> Result<u32, ApiError> {
    let Some(value) = headers.get("last-event-id") else { return Ok(0) };
    value.to_str().ok().and_then(|v| v.trim().parse().ok()).ok_or_else(|| {
        ApiError::BadRequest(
            "invalid_last_event_id",
            "Last-Event-ID must be the id of an event of this stream: a whole number".into(),
        )
    })
}

/// One stream's place in its order's history.
struct Follow {
    store: Arc<dyn Store>,
    id: OrderId,
    view: OrderView,
    /// Transitions sent (or, after `Last-Event-ID`, already seen).
    sent: usize,
    changes: watch::Receiver<Status>,
    draining: CancellationToken,
    /// This stream's place under the process's limit.
    _permit: OwnedSemaphorePermit,
}

impl Follow {
    /// The next event, or `None` when the stream ends.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(transition) = self.view.history.get(self.sent) {
                self.sent += 1;
                let data = json!({
                    "order_id": self.id, "status": transition.status, "at": transition.at, "reason": transition.reason,
                });
                return Some(Event::default().event("status").id(self.sent.to_string()).data(data.to_string()));
            }
            if self.view.status.is_terminal() {
                return None;
            }
            tokio::select! {
                _ = self.draining.cancelled() => return None,
                changed = self.changes.changed() => changed.ok()?,
            }
            // The order itself, with every transition's time, is read from
            // the store; a failed read ends the stream, and the client resumes.
            self.view = self.store.get_order(self.id).await.ok()??;
        }
    }
}
