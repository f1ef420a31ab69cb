-- orderflow schema, version 1 (PostgreSQL). Times are milliseconds since the epoch.
-- Mirrors sqlite.sql. Every statement is idempotent, and the store runs this
-- under an advisory lock, so processes that start together cannot race it.

CREATE TABLE IF NOT EXISTS orders (
    id          UUID PRIMARY KEY,          -- UUIDv7: sorts by creation time
    customer_id TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('placed', 'reserved', 'completed', 'rejected')),
    reason      TEXT,
    items       JSONB NOT NULL,            -- array of {sku, quantity}
    created_at  BIGINT NOT NULL,           -- also when it was placed
    updated_at  BIGINT NOT NULL,
    -- The lifecycle is a fixed state machine, so its history is one time per
    -- state: cheaper than a row per transition, and just as complete.
    reserved_at  BIGINT,
    completed_at BIGINT,
    rejected_at  BIGINT
);
CREATE INDEX IF NOT EXISTS orders_by_status ON orders (status, id);
CREATE INDEX IF NOT EXISTS orders_by_customer ON orders (customer_id, id);

CREATE TABLE IF NOT EXISTS idempotency_keys (
    key          TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    order_id     UUID NOT NULL,
    created_at   BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS inventory (
    sku        TEXT PRIMARY KEY,
    available  BIGINT NOT NULL CHECK (available >= 0),
    reserved   BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    updated_at BIGINT NOT NULL
);

-- The outbox, and with the `db` broker the queue itself. Rows are short-lived
-- (inserted, then deleted by a consumer), so vacuum it far more eagerly than
-- the default 20% of dead rows.
CREATE TABLE IF NOT EXISTS messages (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue        TEXT NOT NULL,
    routing_key  TEXT NOT NULL,
    body         TEXT NOT NULL,            -- the event, JSON
    attempts     INTEGER NOT NULL DEFAULT 0,   -- failed deliveries so far
    available_at BIGINT NOT NULL DEFAULT 0,    -- not before this time (retry backoff)
    last_error   TEXT
) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_insert_scale_factor = 0.05);
CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (queue, id);

CREATE TABLE IF NOT EXISTS dead_letters (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue       TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    body        TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    error       TEXT NOT NULL,
    failed_at   BIGINT NOT NULL
);

-- Event ids each consumer has applied, written with the effect.
CREATE TABLE IF NOT EXISTS inbox (
    consumer     TEXT NOT NULL,
    event_id     UUID NOT NULL,
    processed_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

-- Notifications sent; keyed by the event that caused them, so it is also the
-- notifier's inbox.
CREATE TABLE IF NOT EXISTS notifications (
    event_id UUID PRIMARY KEY,
    order_id UUID NOT NULL,
    consumer TEXT NOT NULL,
    kind     TEXT NOT NULL,
    message  TEXT NOT NULL,
    sent_at  BIGINT NOT NULL
);
