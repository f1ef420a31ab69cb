//! Black-box tests: each starts the real `orderflow` binary on port 0 against
//! its own database and talks to it over HTTP and the operator commands.
//!
//! `contract` holds what every mode promises and runs it on every store and
//! broker (`helpers::Mode`); `embedded` holds what the one-process SQLite
//! mode does on its own (kill -9 and SIGTERM under load, overload, health);
//! `redis` what is particular to Redis Streams as the broker, and
//! `redis_upkeep` how it copes over a long life (retries, a Redis restarted
//! with other settings, workers that come and go).
//! `cache` the Redis cache of orders. `events` follows orders live over
//! Server-Sent Events, `feed` every order (`GET /events`); `admin` holds the
//! operator routes.
//! `retention` what is pruned and what an old dead letter may do.
//! `drain` checks what SIGTERM does to a process with the API.
//! `slow_clients` holds what clients that are slow, idle or too many may
//! not do to the server. `tracing` follows an order's W3C trace through
//! headers, logs and exported spans.

mod admin;
mod cache;
mod contract;
mod drain;
mod embedded;
mod events;
mod feed;
mod helpers;
mod openapi;
mod redis;
mod redis_upkeep;
mod retention;
mod slow_clients;
mod tracing;
mod validation;
