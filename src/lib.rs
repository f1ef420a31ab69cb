//! orderflow: asynchronous, fault-tolerant order processing.
//!
//! A client places an order over HTTP and gets `202 Accepted` once the order
//! and its `OrderPlaced` event are durably stored together. The inventory
//! service reserves stock (all-or-nothing, never below zero) and the notifier
//! tells the customer and completes the order. Delivery is at-least-once and
//! every effect is recorded with the event id that caused it, so nothing is
//! lost and nothing happens twice.
//!
//! - [`domain`]: validated values, statuses and events; no I/O.
//! - [`messaging`]: what stores and brokers share: queues, outbox messages,
//!   dead letters, the retry policy.
//! - [`store`]: the `Store` and `QueueStore` traits; SQLite and PostgreSQL.
//! - [`broker`]: the `Broker` trait; the `db` broker and RabbitMQ.
//! - [`services`]: the inventory service, the notifier and the outbox relay.
//! - [`api`]: the HTTP API; [`live`]: what its live streams watch;
//!   [`changes`]: every order's changes, for `GET /events`.
//! - [`cache`]: the optional Redis cache of single orders.
//! - [`app`]: starting and stopping the roles; [`ops`]: operator tools.
//! - [`telemetry`]: logs and metrics; [`traces`]: spans in an order's trace.

pub mod api;
pub mod app;
pub mod broker;
pub mod cache;
pub mod changes;
pub mod config;
pub mod domain;
pub mod live;
pub mod messaging;
pub mod ops;
pub mod services;
pub mod store;
pub mod telemetry;
pub mod traces;
