//! A consuming service's metrics, resolved once when it starts, so that a
//! batch records without looking a name up.
//!
//! An order's time to a status is recorded here, after the commit that moved
//! it, by the service that made that commit: the inventory service for
//! `reserved` and `rejected`, the notifier for `completed`. It is counted
//! from the order's placement, read from its id (a UUIDv7), so no service
//! has to read the order back. A message's age on delivery is counted from
//! the time its event was written, which its JSON carries.

use super::Service;
use crate::domain::{parse_millis, Event, OrderId, Status};
use crate::telemetry::catalog::{BATCH_SIZE, DELIVERY_AGE, EVENTS_APPLIED, ORDER_DURATION};
use crate::telemetry::seconds_since;
use metrics::{Counter, Histogram};

pub(super) struct Meters {
    applied: Counter,
    batch: Histogram,
    age: Histogram,
    /// Only the statuses this service's commits reach, so no process
    /// exports a series it can never fill.
    reserved: Option<Histogram>,
    rejected: Option<Histogram>,
    completed: Option<Histogram>,
}

impl Meters {
    pub(super) fn new(service: Service) -> Self {
        let to = |status: Status, by: Service| {
            (service == by).then(|| metrics::histogram!(ORDER_DURATION, "status" => status.as_str()))
        };
        Self {
            applied: metrics::counter!(EVENTS_APPLIED, "service" => service.name()),
            batch: metrics::histogram!(BATCH_SIZE, "stage" => service.name()),
            age: metrics::histogram!(DELIVERY_AGE, "queue" => service.queue()),
            reserved: to(Status::Reserved, Service::Inventory),
            rejected: to(Status::Rejected, Service::Inventory),
            completed: to(Status::Completed, Service::Notifier),
        }
    }

    /// A batch of `messages` taken from the queue.
    pub(super) fn took(&self, messages: usize) {
        self.batch.record(messages as f64);
    }

    /// Events handed to the service, each as old as its timestamp says.
    pub(super) fn delivered<'a>(&self, events: impl IntoIterator<Item = &'a Event>) {
        for event in events {
            if let Some(written) = parse_millis(&event.timestamp) {
                self.age.record(seconds_since(written));
            }
        }
    }

    pub(super) fn applied(&self, events: usize) {
        self.applied.increment(events as u64);
    }

    /// An order this service's commit moved to `status`.
    pub(super) fn reached(&self, order: OrderId, status: Status) {
        let histogram = match status {
            Status::Reserved => &self.reserved,
            Status::Rejected => &self.rejected,
            Status::Completed => &self.completed,
            // Reached through the API (`api::lifecycle` records the last two).
            Status::Placed | Status::Cancelled | Status::Shipped => &None,
        };
        if let (Some(histogram), Some(placed)) = (histogram, order.placed_millis()) {
            histogram.record(seconds_since(placed));
        }
    }
}
