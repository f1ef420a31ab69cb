//! The error a broker reports.
//!
//! It lives here rather than in `broker` because `Publisher`, which the
//! store's relay calls, returns it. Like `StoreError` it tells a passing
//! outage (back off and call again; the API answers 503) from anything else.

/// Why a broker call failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker (or, for the `db` broker, the database) cannot be reached
    /// or lost the connection; the caller may retry later.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker answers but is not fit to be used as configured (a Redis
    /// that could lose acknowledged events): at start the process stops;
    /// later, callers back off until someone fixes the broker.
    #[error("broker refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}
