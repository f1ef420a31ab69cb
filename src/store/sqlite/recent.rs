//! The events the writer queued lately, kept as it wrote them, so that a
//! consumer in the same process takes them without parsing their JSON again
//! (docs/performance.md says what that saves).
//!
//! The queue tables stay the truth. A consumer still reads every message it
//! takes from its table, and uses a kept event only when the message's body
//! is, byte for byte, the JSON the event was written as; any other message
//! (written by another process, by an operator, or under an id that a
//! rolled-back transaction had given out) is parsed as before. A kept event
//! is therefore only ever a copy of what parsing would give. Nothing is kept
//! for a queue until a consumer of it has read from it in this process, and at
//! most `KEPT` events per queue, the oldest dropped first.

use super::queue::Queue;
use crate::domain::Event;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Events kept per queue: many batches of the largest size consumers take.
const KEPT: usize = 16_384;

/// A queued message as the writer wrote it.
pub(super) struct Kept {
    pub id: i64,
    pub body: String,
    pub event: Event,
}

#[derive(Default)]
pub(super) struct Recent {
    queues: [Lane; 2],
}

#[derive(Default)]
struct Lane {
    /// A consumer of this queue runs in the process.
    read: AtomicBool,
    /// Oldest first, ids ascending.
    kept: Mutex<VecDeque<Kept>>,
}

impl Recent {
    fn lane(&self, queue: Queue) -> &Lane {
        &self.queues[match queue {
            Queue::OrderEvents => 0,
            Queue::InventoryEvents => 1,
        }]
    }

    /// Whether `keep` would keep a message of `queue`; the writer builds
    /// nothing for it otherwise.
    pub(super) fn wanted(&self, queue: Queue) -> bool {
        self.lane(queue).read.load(Ordering::Relaxed)
    }

    /// Keeps a message the writer has just queued. Ids only grow, but those a
    /// rolled-back transaction gave out are given out again: the events kept
    /// under them, and under any later id, are dropped.
    pub(super) fn keep(&self, queue: Queue, message: Kept) {
        let mut kept = self.lane(queue).kept.lock().expect("recent events lock");
        while kept.back().is_some_and(|last| last.id >= message.id) {
            kept.pop_back();
        }
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back(message);
    }

    /// Takes the events kept for `queue`, oldest first, and from then on
    /// keeps the messages queued there.
    pub(super) fn take(&self, queue: Queue) -> VecDeque<Kept> {
        let lane = self.lane(queue);
        lane.read.store(true, Ordering::Relaxed);
        std::mem::take(&mut *lane.kept.lock().expect("recent events lock"))
    }

    /// Gives back the events a consumer did not reach, all younger than
    /// those it took, to stand before any kept meanwhile.
    pub(super) fn give_back(&self, queue: Queue, mut rest: VecDeque<Kept>) {
        if rest.is_empty() {
            return;
        }
        let mut kept = self.lane(queue).kept.lock().expect("recent events lock");
        // Kept meanwhile under an id given out again: `keep` would drop these.
        let first_new = kept.front().map_or(i64::MAX, |k| k.id);
        while rest.back().is_some_and(|last| last.id >= first_new) {
            rest.pop_back();
        }
        rest.append(&mut kept);
        while rest.len() > KEPT {
            rest.pop_front();
        }
        *kept = rest;
    }
}

/// Walks a consumer's batch, read in id order, against the events taken with
/// `Recent::take`.
pub(super) struct Matcher {
    kept: VecDeque<Kept>,
    /// Messages whose kept event was used.
    pub reused: usize,
}

impl Matcher {
    pub(super) fn new(kept: VecDeque<Kept>) -> Self {
        Self { kept, reused: 0 }
    }

    /// The event kept for message `id` if its body is exactly `body`.
    /// Events kept for older ids are dropped on the way: they were taken
    /// already, or wait out a backoff and will be parsed when they are ready.
    pub(super) fn event(&mut self, id: i64, body: &[u8]) -> Option<Event> {
        while self.kept.front().is_some_and(|k| k.id < id) {
            self.kept.pop_front();
        }
        let front = self.kept.front().filter(|k| k.id == id)?;
        let same = front.body.as_bytes() == body;
        let kept = self.kept.pop_front().expect("front was there");
        if !same {
            return None;
        }
        self.reused += 1;
        Some(kept.event)
    }

    /// The events for messages younger than every one matched.
    pub(super) fn rest(self) -> VecDeque<Kept> {
        self.kept
    }
}

#[cfg(test)]
mod tests {
    use super::super::queue::Queue;
    use super::{Kept, Matcher, Recent, KEPT};
    use crate::domain::{CustomerId, Event, EventType, OrderId};

    fn kept(id: i64) -> Kept {
        let event = Event::new(EventType::OrderPlaced, OrderId::new(), CustomerId::parse("c1").unwrap(), vec![], None);
        Kept { id, body: event.to_json(), event }
    }

    fn ids(recent: &Recent) -> Vec<i64> {
        let taken = recent.take(Queue::OrderEvents);
        let ids = taken.iter().map(|k| k.id).collect();
        recent.give_back(Queue::OrderEvents, taken);
        ids
    }

    /// An event is used only for the message of its id and its very bytes.
    #[test]
    fn a_kept_event_stands_only_for_the_body_it_was_written_as() {
        let (a, b) = (kept(1), kept(2));
        let (a_event, a_body, b_body) = (a.event.clone(), a.body.clone(), b.body.clone());
        let mut matcher = Matcher::new([a, b, kept(3)].into());
        assert_eq!(matcher.event(1, a_body.as_bytes()), Some(a_event));
        assert_eq!(matcher.event(2, b"{\"event_type\":\"OrderPlaced\"}"), None, "another body");
        assert_eq!(matcher.event(4, b_body.as_bytes()), None, "another id");
        assert_eq!(matcher.reused, 1);
        assert!(matcher.rest().is_empty(), "everything older than the last message read is dropped");
    }

    /// Nothing is kept before a consumer reads; ids given out again replace
    /// what was kept under them; what a consumer did not reach goes back in
    /// front; and no more than `KEPT` are kept.
    #[test]
    fn the_kept_events_stay_in_id_order_and_bounded() {
        let recent = Recent::default();
        assert!(!recent.wanted(Queue::OrderEvents));
        assert!(ids(&recent).is_empty());
        assert!(recent.wanted(Queue::OrderEvents) && !recent.wanted(Queue::InventoryEvents));

        for id in [1, 2, 3, 4] {
            recent.keep(Queue::OrderEvents, kept(id));
        }
        // A transaction that gave out 3 and 4 was rolled back; the next one gives them out again.
        recent.keep(Queue::OrderEvents, kept(3));
        assert_eq!(ids(&recent), [1, 2, 3]);

        let taken = recent.take(Queue::OrderEvents);
        recent.keep(Queue::OrderEvents, kept(4));
        recent.give_back(Queue::OrderEvents, taken);
        assert_eq!(ids(&recent), [1, 2, 3, 4]);

        // Given back after ids were given out again: the newer ones win.
        let taken = recent.take(Queue::OrderEvents);
        recent.keep(Queue::OrderEvents, kept(2));
        recent.give_back(Queue::OrderEvents, taken);
        assert_eq!(ids(&recent), [1, 2]);

        for id in 10..10 + KEPT as i64 + 5 {
            recent.keep(Queue::OrderEvents, kept(id));
        }
        let all = ids(&recent);
        assert_eq!((all.len(), all[0], *all.last().unwrap()), (KEPT, 15, 9 + KEPT as i64 + 5));
    }
}
