//! Black-box tests: each starts the real `orderflow` binary on port 0 against
//! its own database and talks to it over HTTP and the operator commands.
//!
//! `scenarios` holds what every mode must do; `embedded` runs it on SQLite
//! with the `db` broker, `distributed` on PostgreSQL (with the `db` broker and
//! with RabbitMQ) with every role its own process, plus the fault tests;
//! `redis` runs it with Redis Streams as the broker, plus what is particular
//! to streams.
//! `drain` checks what SIGTERM does to a process with the API.
//! `slow_clients` holds what clients that are slow, idle or too many may
//! not do to the server.

mod distributed;
mod drain;
mod embedded;
mod helpers;
mod redis;
mod scenarios;
mod slow_clients;
mod validation;
