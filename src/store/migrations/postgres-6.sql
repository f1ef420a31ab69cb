-- orderflow schema (PostgreSQL): the webhook delivery queue.
--
-- The notifier writes a delivery with each notification, in the same
-- transaction, when it has a webhook URL; its delivery task claims due rows
-- (FOR UPDATE SKIP LOCKED), leases them by moving `available_at` past the
-- request, and deletes each once the receiver took it. One it gives up on
-- moves to `webhook_dead_letters`, where `orderflow webhooks list` shows it.

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id           TEXT PRIMARY KEY,          -- the webhook-id: the notification's event id
    body         TEXT NOT NULL,             -- the JSON sent on every attempt
    attempts     INTEGER NOT NULL DEFAULT 0,-- failed attempts so far
    created_at   BIGINT NOT NULL,           -- when the notification was recorded (ms)
    available_at BIGINT NOT NULL,           -- due then: retry backoff, or a claim's lease
    last_error   TEXT
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (available_at);

CREATE TABLE IF NOT EXISTS webhook_dead_letters (
    id         TEXT PRIMARY KEY,
    body       TEXT NOT NULL,
    attempts   INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    failed_at  BIGINT NOT NULL,
    error      TEXT NOT NULL
);
