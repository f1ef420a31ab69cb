//! `POST /admin/dead-letters/replay`: send dead letters back to their queue,
//! chosen by id or by a filter, at a bounded rate.
//!
//! Every broker lists its dead letters (`Broker::dead_letters`) and replays
//! one by id (`Broker::replay`), so the selection is made here, over the
//! listing, the same way for all of them: ids not in the listing are
//! reported rather than passed on (a `db` broker's ids are numbers, a Redis
//! one's stream ids, RabbitMQ's message ids, and a malformed one must not
//! become a broker error). Letters are then replayed one at a time, at most
//! `--replay-rate` a second, so a bulk replay feeds the pipeline no faster
//! than it was told to; `dry_run` only counts. Each chosen letter is
//! screened first (`services::replay`): one whose effect its order shows
//! applied, or can no longer show, is skipped with the reason and kept.

use super::admin::MAX_LETTERS;
use super::auth::Operator;
use super::orders::read_json;
use super::responses::AdminWriteErrors;
use super::{ApiError, AppState};
use crate::domain::ValidationError;
use crate::messaging::DeadLetter;
use crate::services::replay::screen;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

/// Most letters one request replays; more matching letters are left for the next.
const MAX_REPLAY: usize = 1000;
/// The oldest age a filter may ask for: ten years.
const MAX_AGE_SECS: i64 = 315_360_000;

/// Which dead letters to replay: `ids`, or the letters that match every
/// filter given (none given: all of them).
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplayRequest {
    /// These dead letters, by the `id` the listing shows; with a filter, those of them that match it.
    #[schema(max_items = 1000)]
    ids: Option<Vec<String>>,
    /// Only letters dead-lettered from this queue (`order-events`, `inventory-events`).
    queue: Option<String>,
    /// Only letters whose error contains this text (case-insensitive).
    error_contains: Option<String>,
    /// Only letters dead-lettered at least this many seconds ago (letters
    /// whose time is unknown, as RabbitMQ's, never match).
    #[schema(minimum = 0, maximum = 315_360_000)]
    #[serde(default, deserialize_with = "super::orders::whole_or_null")]
    older_than_secs: Option<i64>,
    /// Most letters to replay (1 to 1000; 100 when absent); the answer says how many more match.
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "super::orders::whole_or_null")]
    limit: Option<i64>,
    /// Count what would be replayed, and replay nothing.
    #[serde(default)]
    dry_run: bool,
}

/// What a replay did (or, with `dry_run`, would do).
#[derive(Serialize, ToSchema)]
pub(super) struct ReplayOutcome {
    /// Dead letters that match.
    matched: usize,
    /// Dead letters sent back to their queue (0 on a dry run).
    replayed: u64,
    /// The ids chosen, in order: those replayed, or on a dry run those that would be.
    ids: Vec<String>,
    /// Chosen letters that were not replayed, because their order shows the
    /// effect applied already or it can no longer be known: they stay dead letters.
    skipped: Vec<Skipped>,
    /// Ids asked for that are not dead letters (any more).
    unknown_ids: Vec<String>,
    dry_run: bool,
}

/// A dead letter a replay left where it is, and why.
#[derive(Serialize, ToSchema)]
pub(super) struct Skipped {
    id: String,
    reason: String,
}

impl ReplayRequest {
    fn check(&self) -> Result<usize, ValidationError> {
        if self.ids.as_ref().is_some_and(|ids| ids.len() > MAX_REPLAY) {
            return Err(ValidationError::new("invalid_field", format!("at most {MAX_REPLAY} ids at once")));
        }
        if self.older_than_secs.is_some_and(|secs| !(0..=MAX_AGE_SECS).contains(&secs)) {
            return Err(ValidationError::new(
                "invalid_field",
                format!("older_than_secs must be from 0 to {MAX_AGE_SECS} (ten years)"),
            ));
        }
        match self.limit.unwrap_or(100) {
            n if (1..=MAX_REPLAY as i64).contains(&n) => Ok(n as usize),
            n => Err(ValidationError::new("invalid_field", format!("limit must be from 1 to {MAX_REPLAY}, got {n}"))),
        }
    }

    fn selects(&self, letter: &DeadLetter, now: chrono::DateTime<chrono::Utc>) -> bool {
        // Ids and a filter together select the listed letters that match it.
        let listed = self.ids.as_ref().is_none_or(|ids| ids.contains(&letter.id));
        let queue = self.queue.as_ref().is_none_or(|q| *q == letter.queue);
        let error =
            self.error_contains.as_ref().is_none_or(|text| letter.error.to_lowercase().contains(&text.to_lowercase()));
        let age = self.older_than_secs.is_none_or(|secs| {
            chrono::DateTime::parse_from_rfc3339(&letter.failed_at)
                .is_ok_and(|at| (now - at.with_timezone(&chrono::Utc)).num_seconds() >= secs)
        });
        listed && queue && error && age
    }
}

/// Replays dead letters by id or by filter, at most `--replay-rate` a second.
#[utoipa::path(
    post,
    path = "/admin/dead-letters/replay",
    tag = "admin",
    operation_id = "admin_replay",
    security(("operator" = [])),
    request_body = ReplayRequest,
    responses((status = 200, description = "What was replayed, or would be on a dry run.", body = ReplayOutcome),
        AdminWriteErrors)
)]
pub(super) async fn replay(
    _: Operator,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ReplayOutcome>, ApiError> {
    let request: ReplayRequest = read_json(&headers, body)?;
    let limit = request.check()?;
    let letters = state.broker.dead_letters(MAX_LETTERS).await?;
    let now = chrono::Utc::now();
    let chosen: Vec<&DeadLetter> = letters.iter().filter(|l| request.selects(l, now)).collect();
    let unknown_ids = match &request.ids {
        Some(ids) => ids.iter().filter(|id| !letters.iter().any(|l| l.id == **id)).cloned().collect(),
        None => Vec::new(),
    };
    let chosen_now: Vec<&DeadLetter> = chosen.iter().take(limit).copied().collect();
    let verdicts = screen(state.store.as_ref(), &chosen_now, state.retention.inbox).await?;
    let (mut ids, mut skipped) = (Vec::new(), Vec::new());
    for (letter, verdict) in chosen_now.iter().zip(verdicts) {
        match verdict {
            None => ids.push(letter.id.clone()),
            Some(reason) => skipped.push(Skipped { id: letter.id.clone(), reason }),
        }
    }
    let mut replayed = 0;
    if !request.dry_run {
        let mut pace = tokio::time::interval(Duration::from_secs(1) / state.replay_rate.max(1));
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for id in &ids {
            pace.tick().await;
            replayed += state.broker.replay(Some(id.clone())).await?;
        }
    }
    Ok(Json(ReplayOutcome { matched: chosen.len(), replayed, ids, skipped, unknown_ids, dry_run: request.dry_run }))
}
