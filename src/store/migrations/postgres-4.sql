-- orderflow schema (PostgreSQL): idempotency keys found by when they were
-- recorded, for the pruner (see sqlite-6.sql). The table only takes inserts
-- (and the rare replacement of an expired key), so the index costs each
-- keyed order one more entry and no HOT update is lost.

CREATE INDEX IF NOT EXISTS idempotency_keys_by_time ON idempotency_keys (created_at);
