-- orderflow schema (SQLite): idempotency keys found by when they were recorded.
--
-- Keys expire (`--idempotency-key-ttl`) and are pruned in batches, oldest
-- first. Their primary key is the client's key, which says nothing of time,
-- so the pruner needs this index; it costs each keyed order one more entry.
-- The inbox and the notifications need none: their keys are UUIDv7 event
-- ids, which sort by time.

CREATE INDEX IF NOT EXISTS idempotency_keys_by_time ON idempotency_keys (created_at);
