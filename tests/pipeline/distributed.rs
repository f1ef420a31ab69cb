//! The distributed mode: PostgreSQL, with the database as the queue or with
//! RabbitMQ, every role its own process. Skipped when the servers are absent
//! (a failure under ORDERFLOW_REQUIRE_SERVICES=1).

use crate::helpers::{Env, Server};

/// API, inventory and notifier as separate processes.
async fn cluster(env: &Env) -> (Server, Vec<Server>) {
    let api = Server::start(env, "api", &[]).await;
    let workers = vec![Server::start(env, "inventory", &[]).await, Server::start(env, "notifier", &[]).await];
    (api, workers)
}

macro_rules! in_every_distributed_mode {
    ($($name:ident),*) => {
        mod postgres_db { $(
            #[tokio::test]
            async fn $name() {
                let Some(env) = crate::helpers::Env::postgres(false) else { return };
                let (api, _workers) = super::cluster(&env).await;
                crate::scenarios::$name(&env, &api.client).await;
            }
        )* }
        mod postgres_rabbitmq { $(
            #[tokio::test]
            async fn $name() {
                let Some(env) = crate::helpers::Env::postgres(true) else { return };
                let (api, _workers) = super::cluster(&env).await;
                crate::scenarios::$name(&env, &api.client).await;
            }
        )* }
    };
}

in_every_distributed_mode!(lifecycle, no_oversell, idempotency, paging);
