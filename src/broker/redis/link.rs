//! One connection to Redis, and the persistence check that guards it.
//!
//! A connection is opened on first use; the `redis` crate's connection
//! manager then reconnects it by itself, without telling anyone. The Redis it
//! reconnects to may not be the one that was checked: restarted with other
//! settings, or changed with `CONFIG SET` since. So the check (`durability`)
//! runs again before the next use after any command on the connection failed
//! (the manager reconnects after a failure, and the holder reports it with
//! `distrust`), and at least every `RECHECK` otherwise, which also covers a
//! reconnect no caller saw fail (RESP3 disconnection pushes) and a
//! `CONFIG SET`. While Redis could lose what it acknowledges, every use is
//! refused (`BrokerError::Refused`), so the relay leaves the outbox rows in
//! place and consumers take nothing, until Redis is durable again, unless the
//! operator said `--allow-volatile-broker`. Each change is logged once, not
//! at every refused call. The groups are declared after every check, since a
//! Redis that came back without its data has none.

use super::{durability, redis_err, streams, unavailable, RedisSettings};
use crate::messaging::BrokerError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Longest a connection attempt may take before the caller is told to back off.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a command may wait for its answer. A blocking read waits less
/// (the worker asks for a fraction of a second); an fsync per write is fast.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a connection is used without asking again how Redis persists.
const RECHECK: Duration = Duration::from_secs(5);

pub(crate) struct Link {
    client: redis::Client,
    settings: Arc<RedisSettings>,
    state: Mutex<State>,
    /// A command failed since the last check: the manager may have
    /// reconnected, perhaps to another Redis.
    suspect: AtomicBool,
}

#[derive(Default)]
struct State {
    connection: Option<ConnectionManager>,
    /// When Redis was last found fit to use; `None`: check before next use.
    checked: Option<Instant>,
    /// Why Redis is refused, as logged; `None` while it is used.
    refused: Option<String>,
    /// The risk accepted under `--allow-volatile-broker`, as logged.
    accepted: Option<String>,
}

impl Link {
    pub(super) fn new(client: redis::Client, settings: Arc<RedisSettings>) -> Self {
        Self { client, settings, state: Mutex::new(State::default()), suspect: AtomicBool::new(false) }
    }

    /// Reports a failed command: Redis is checked again before the next use.
    pub(super) fn distrust(&self) {
        self.suspect.store(true, Ordering::Relaxed);
    }

    /// `e`, reported: a failed command, as a broker error.
    pub(super) fn failed(&self, e: redis::RedisError) -> BrokerError {
        self.distrust();
        redis_err(e)
    }

    /// The connection, opened on first use, once Redis is known to keep
    /// what it acknowledges (or the operator accepted that it may not).
    pub(super) async fn get(&self) -> Result<ConnectionManager, BrokerError> {
        let mut state = self.state.lock().await;
        let mut conn = match &state.connection {
            Some(conn) => conn.clone(),
            None => {
                let conn = self.open().await?;
                tracing::info!("connected to Redis");
                state.connection = Some(conn.clone());
                conn
            }
        };
        let suspect = self.suspect.swap(false, Ordering::Relaxed);
        if suspect || state.checked.is_none_or(|at| at.elapsed() >= RECHECK) {
            if let Err(e) = self.check(&mut state, &mut conn).await {
                if !matches!(e, BrokerError::Refused(_)) {
                    self.distrust();
                }
                return Err(e);
            }
        }
        Ok(conn)
    }

    async fn open(&self) -> Result<ConnectionManager, BrokerError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        tokio::time::timeout(CONNECT_TIMEOUT, ConnectionManager::new_with_config(self.client.clone(), config))
            .await
            .map_err(|_| unavailable("connecting to Redis timed out"))?
            .map_err(redis_err)
    }

    /// Asks Redis how it persists, refuses it if it could lose events (and
    /// that was not accepted), and declares the groups.
    async fn check(&self, state: &mut State, conn: &mut ConnectionManager) -> Result<(), BrokerError> {
        state.checked = None;
        match durability::assess(conn).await? {
            None => {
                if state.refused.take().is_some() {
                    tracing::info!("Redis persists every write again: publishing and consuming resume");
                }
                state.accepted = None;
            }
            Some(risk) if self.settings.allow_volatile => {
                if state.accepted.as_ref() != Some(&risk) {
                    tracing::warn!(%risk, "using a Redis broker that may lose events it acknowledged (--allow-volatile-broker)");
                }
                state.accepted = Some(risk);
            }
            Some(risk) => {
                let why = durability::refusal(&risk);
                if state.refused.as_ref() != Some(&why) {
                    tracing::error!(
                        reason = %why,
                        "Redis could lose what it acknowledges: publishing and consuming stop until it persists every write"
                    );
                }
                state.refused = Some(why.clone());
                return Err(BrokerError::Refused(why));
            }
        }
        streams::declare(conn).await?;
        state.checked = Some(Instant::now());
        Ok(())
    }
}
