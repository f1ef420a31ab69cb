-- orderflow schema, version 3 (SQLite): message ids without AUTOINCREMENT.
--
-- A consumer deletes the messages it settled by their ids, so an id must
-- never be given out twice: a consumer holding a batch another one settled
-- meanwhile would delete a newer message that took an old id. AUTOINCREMENT
-- guarantees that, but reads and rewrites `sqlite_sequence` on every insert,
-- about 4 % of the writer's instructions per order. The writer now numbers
-- messages itself, from the highest id ever given out (`message_ids`), which
-- it reads once when a transaction begins and writes once before it commits.

-- Taken before the table is dropped, which drops its `sqlite_sequence` row.
CREATE TABLE IF NOT EXISTS message_ids (last INTEGER NOT NULL);
INSERT INTO message_ids (last) SELECT max(
    coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0),
    coalesce((SELECT max(id) FROM messages), 0));

CREATE TABLE messages_v3 (
    id           INTEGER PRIMARY KEY,      -- given out by the writer, never twice
    queue        TEXT NOT NULL,
    routing_key  TEXT NOT NULL,
    body         TEXT NOT NULL,            -- the event, JSON
    attempts     INTEGER NOT NULL DEFAULT 0,   -- failed deliveries so far
    available_at INTEGER NOT NULL DEFAULT 0,   -- not before this time (retry backoff)
    last_error   TEXT
);
INSERT INTO messages_v3 (id, queue, routing_key, body, attempts, available_at, last_error)
    SELECT id, queue, routing_key, body, attempts, available_at, last_error FROM messages;
DROP TABLE messages;
ALTER TABLE messages_v3 RENAME TO messages;
CREATE INDEX messages_by_queue ON messages (queue, id);
