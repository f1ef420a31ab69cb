-- orderflow schema, version 1 (SQLite). Times are milliseconds since the epoch.

CREATE TABLE IF NOT EXISTS orders (
    id          TEXT PRIMARY KEY,          -- UUIDv7: sorts by creation time
    customer_id TEXT NOT NULL,
    status      TEXT NOT NULL,
    reason      TEXT,
    items       TEXT NOT NULL,             -- JSON array of {sku, quantity}
    created_at  INTEGER NOT NULL,          -- also when it was placed
    updated_at  INTEGER NOT NULL,
    -- The lifecycle is a fixed state machine, so its history is one time per
    -- state: cheaper than a row per transition, and just as complete.
    reserved_at  INTEGER,
    completed_at INTEGER,
    rejected_at  INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS orders_by_status ON orders (status, id);
CREATE INDEX IF NOT EXISTS orders_by_customer ON orders (customer_id, id);

CREATE TABLE IF NOT EXISTS idempotency_keys (
    key          TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    order_id     TEXT NOT NULL,
    created_at   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS inventory (
    sku        TEXT PRIMARY KEY,
    available  INTEGER NOT NULL CHECK (available >= 0),
    reserved   INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

-- The outbox, and with the `db` broker the queue itself.
CREATE TABLE IF NOT EXISTS messages (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    queue        TEXT NOT NULL,
    routing_key  TEXT NOT NULL,
    body         TEXT NOT NULL,            -- the event, JSON
    attempts     INTEGER NOT NULL DEFAULT 0,   -- failed deliveries so far
    available_at INTEGER NOT NULL DEFAULT 0,   -- not before this time (retry backoff)
    last_error   TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (queue, id);

CREATE TABLE IF NOT EXISTS dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    queue       TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    body        TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    error       TEXT NOT NULL,
    failed_at   INTEGER NOT NULL
);

-- Event ids each consumer has applied, written with the effect.
CREATE TABLE IF NOT EXISTS inbox (
    consumer     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_at INTEGER NOT NULL,
    PRIMARY KEY (consumer, event_id)
) WITHOUT ROWID;

-- Notifications sent; keyed by the event that caused them, so it is also the
-- notifier's inbox.
CREATE TABLE IF NOT EXISTS notifications (
    event_id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    consumer TEXT NOT NULL,
    kind     TEXT NOT NULL,
    message  TEXT NOT NULL,
    sent_at  INTEGER NOT NULL
) WITHOUT ROWID;
