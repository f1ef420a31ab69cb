//! Screening dead letters before a replay, so that none applies an effect
//! twice.
//!
//! A dead letter can hold an event that was applied after all (a duplicate
//! copy, or a delivery whose acknowledgement was lost), and it can be older
//! than the inbox window, so its consumer may no longer remember it. Before
//! a letter goes back to its queue, the orders its events are about are read
//! and the domain's rule (`replay_verdict`) decides: a letter all of whose
//! events the orders' statuses show applied, or holding one whose fate is no
//! longer known, is skipped with the reason, and kept in the dead-letter
//! queue, where the operator still sees it. Both replays use this: `orderflow
//! dlq replay` and `POST /admin/dead-letters/replay`, for every broker.

use crate::domain::{cutoff, now_millis, replay_verdict, uuid_millis, Event, OrderId, ReplayVerdict};
use crate::messaging::DeadLetter;
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::time::Duration;

/// Why each letter must not be replayed, in the order given: `None` for
/// those that may. A letter that is not a valid event is replayed as before
/// (its consumer dead-letters it again).
pub async fn screen(
    store: &dyn Store,
    letters: &[&DeadLetter],
    inbox: Duration,
) -> Result<Vec<Option<String>>, StoreError> {
    let events: Vec<Vec<Event>> =
        letters.iter().map(|l| Event::many_from_json(l.body.as_bytes()).unwrap_or_default()).collect();
    let ids: Vec<OrderId> = events.iter().flatten().map(|e| e.order_id).collect();
    let statuses: HashMap<OrderId, _> = store.statuses(&ids).await?.into_iter().collect();
    let forgotten_before = cutoff(now_millis(), inbox);
    Ok(events
        .iter()
        .map(|events| {
            let verdicts: Vec<(&Event, ReplayVerdict)> = events
                .iter()
                .map(|e| {
                    let remembered = uuid_millis(e.event_id).is_some_and(|made| made > forgotten_before);
                    (e, replay_verdict(e.event_type, statuses.get(&e.order_id).copied(), remembered))
                })
                .collect();
            skip_reason(&verdicts)
        })
        .collect())
}

/// Why a letter holding these events is skipped: one of them may have been
/// applied without anything left to show it, or every one of them was.
fn skip_reason(verdicts: &[(&Event, ReplayVerdict)]) -> Option<String> {
    if let Some((e, _)) = verdicts.iter().find(|(_, v)| *v == ReplayVerdict::Unknowable) {
        return Some(format!(
            "{:?} {} for order {} is older than the inbox retention: whether it was applied is no longer known",
            e.event_type, e.event_id, e.order_id
        ));
    }
    let applied = |v: &ReplayVerdict| matches!(v, ReplayVerdict::Applied(_));
    if verdicts.is_empty() || !verdicts.iter().all(|(_, v)| applied(v)) {
        return None;
    }
    let (e, verdict) = &verdicts[0];
    let ReplayVerdict::Applied(status) = verdict else { return None };
    let more = if verdicts.len() > 1 {
        format!(" (and its {} other events were too)", verdicts.len() - 1)
    } else {
        String::new()
    };
    Some(format!("order {} is {status}: its {:?} was applied{more}", e.order_id, e.event_type))
}
