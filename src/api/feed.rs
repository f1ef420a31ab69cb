//! `GET /events`: every order's status changes as Server-Sent Events, live,
//! optionally only some statuses.
//!
//! Changes come from the process's `changes::Changes` (how it learns of
//! other processes' commits, and what it keeps for resuming, is told there
//! and in docs/architecture.md#live-streams). Each event is `event: status`
//! with the change's id (`AT-STATUS-ORDER`, the same on every replica);
//! `Last-Event-ID` resumes after it while the change is still kept, and
//! otherwise the stream starts with `event: reset`: reload (`GET /orders`),
//! then follow. A stream that falls behind gets a `reset` too, never a
//! blocked pipeline. Streams count against `--max-streams`, send a comment
//! every 15 s, and end when the replica drains. A customer's stream (`--auth
//! jwt`) carries only that customer's orders; a `reset` goes to every stream.

use super::events::HEARTBEAT;
use super::responses::ListErrors;
use super::{ApiError, AppState};
use crate::changes::{Change, Item};
use crate::domain::{Caller, Status, ValidationError};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use utoipa::IntoParams;

/// What a `reset` event says.
const RESET: &str = r#"{"reason":"changes were missed: reload the orders (GET /orders), then keep following"}"#;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct FeedParams {
    /// Only these statuses, comma-separated (`placed`, `reserved`, `completed`, `rejected`, `cancelled`, `shipped`); all when absent.
    status: Option<String>,
}

/// Follow every order's status changes live, as Server-Sent Events.
///
/// Each event is `event: status`, `id: AT-STATUS-ORDER` and `data:
/// {"order_id","status","at","reason"}`; `event: reset` means changes were
/// missed (reload, then keep following).
#[utoipa::path(
    get,
    path = "/events",
    tag = "orders",
    operation_id = "events",
    security((), ("customer" = []), ("operator" = [])),
    params(
        FeedParams,
        ("Last-Event-ID" = Option<String>, Header, description = "The `id` of the last event received: only later changes are sent, or `reset` when they are no longer kept."),
    ),
    responses(
        (status = 200, description = "Status changes as they commit; the stream does not end unless the server drains.",
         content_type = "text/event-stream", body = String),
        ListErrors
    )
)]
pub(super) async fn events(
    caller: Caller,
    State(state): State<AppState>,
    params: Result<Query<FeedParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::BadRequest("invalid_query", e.body_text()))?;
    let only = match p.status.as_deref() {
        None | Some("") => None,
        Some(list) => Some(
            list.split(',')
                .map(|s| s.trim().parse::<Status>())
                .collect::<Result<Vec<_>, ValidationError>>()
                .map_err(|e| ApiError::BadRequest(e.code, e.message))?,
        ),
    };
    let last = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(v.to_str().ok().filter(|v| v.len() <= 128).map(str::to_owned).ok_or_else(|| {
            ApiError::BadRequest(
                "invalid_last_event_id",
                "Last-Event-ID must be the id of an event of this stream".into(),
            )
        })?),
    };
    let permit = super::events::admit(&state)?;
    let start = state.live.changes.start(last.as_deref());
    let mut pending: VecDeque<Item> = start.backlog.into_iter().map(Item::Change).collect();
    if start.reset {
        pending.push_front(Item::Reset);
    }
    let customer = caller.customer().map(|c| c.as_str().to_owned());
    let feed = Feed { only, customer, pending, live: start.live, draining: state.draining.clone(), _permit: permit };
    let stream = futures::stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        Some((Ok::<_, std::convert::Infallible>(event), feed))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(HEARTBEAT)).into_response())
}

struct Feed {
    only: Option<Vec<Status>>,
    /// Only this customer's orders (a customer's token opened the stream).
    customer: Option<String>,
    pending: VecDeque<Item>,
    live: broadcast::Receiver<Item>,
    draining: CancellationToken,
    _permit: OwnedSemaphorePermit,
}

impl Feed {
    async fn next(&mut self) -> Option<Event> {
        loop {
            let item = match self.pending.pop_front() {
                Some(item) => item,
                None => tokio::select! {
                    _ = self.draining.cancelled() => return None,
                    item = self.live.recv() => match item {
                        Ok(item) => item,
                        Err(RecvError::Lagged(_)) => Item::Reset,
                        Err(RecvError::Closed) => return None,
                    },
                },
            };
            match item {
                Item::Reset => return Some(Event::default().event("reset").data(RESET)),
                Item::Change(change) if self.wants(&change) => return Some(event(&change)),
                Item::Change(_) => {}
            }
        }
    }

    fn wants(&self, change: &Arc<Change>) -> bool {
        self.only.as_ref().is_none_or(|only| only.contains(&change.status))
            && self.customer.as_ref().is_none_or(|me| *me == change.customer_id)
    }
}

fn event(change: &Change) -> Event {
    let data = serde_json::to_string(change).expect("a change serializes");
    Event::default().event("status").id(change.id.clone()).data(data)
}
