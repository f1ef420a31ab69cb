-- orderflow schema, version 4 (SQLite): a table per queue.
--
-- One `messages` table for both queues needed an index on (queue, id) for a
-- consumer to find its own messages in order, and every message inserted one
-- entry into it and deleted one: 10 % of the writer's instructions per order.
-- A table per queue keeps each queue's messages in id order in its own
-- B-tree, so a consumer reads its queue from the front with no index at all.
--
-- `messages` stays, as a view of both queues with their names, and takes
-- inserts, updates and deletes as before: the operations that are rare (dead
-- letters, replays, retries, the relay) and programs that write messages by
-- hand use it unchanged. Only the writer's hot path and the consumers' reads
-- name the queue tables.

CREATE TABLE queue_order_events (
    id           INTEGER PRIMARY KEY,      -- given out by the writer, never twice
    routing_key  TEXT NOT NULL,
    body         TEXT NOT NULL,            -- the event, JSON
    attempts     INTEGER NOT NULL DEFAULT 0,   -- failed deliveries so far
    available_at INTEGER NOT NULL DEFAULT 0,   -- not before this time (retry backoff)
    last_error   TEXT
);
CREATE TABLE queue_inventory_events (
    id           INTEGER PRIMARY KEY,
    routing_key  TEXT NOT NULL,
    body         TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    available_at INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT
);
INSERT INTO queue_order_events (id, routing_key, body, attempts, available_at, last_error)
    SELECT id, routing_key, body, attempts, available_at, last_error FROM messages WHERE queue = 'order-events';
INSERT INTO queue_inventory_events (id, routing_key, body, attempts, available_at, last_error)
    SELECT id, routing_key, body, attempts, available_at, last_error FROM messages WHERE queue = 'inventory-events';
-- No consumer ever reads a queue of another name: such messages are kept as
-- dead letters, where `orderflow dlq list` shows them.
INSERT INTO dead_letters (queue, routing_key, body, attempts, error, failed_at)
    SELECT queue, routing_key, body, attempts, 'no such queue', CAST(unixepoch('subsec') * 1000 AS INTEGER)
    FROM messages WHERE queue NOT IN ('order-events', 'inventory-events');
UPDATE message_ids SET last = max(last, coalesce((SELECT max(id) FROM messages), 0));
DROP TABLE messages;

CREATE VIEW messages (id, queue, routing_key, body, attempts, available_at, last_error) AS
    SELECT id, 'order-events', routing_key, body, attempts, available_at, last_error FROM queue_order_events
    UNION ALL
    SELECT id, 'inventory-events', routing_key, body, attempts, available_at, last_error FROM queue_inventory_events;

-- An insert without an id gets the next one, and is counted in `message_ids`
-- like the writer's own, so that no id is given out twice.
CREATE TRIGGER messages_insert INSTEAD OF INSERT ON messages
BEGIN
    SELECT RAISE(ABORT, 'no such queue') WHERE NEW.queue NOT IN ('order-events', 'inventory-events');
    UPDATE message_ids SET last = max(last, coalesce(NEW.id, 1 + max(last,
        coalesce((SELECT max(id) FROM queue_order_events), 0),
        coalesce((SELECT max(id) FROM queue_inventory_events), 0))));
    INSERT INTO queue_order_events (id, routing_key, body, attempts, available_at, last_error)
        SELECT coalesce(NEW.id, (SELECT last FROM message_ids)), NEW.routing_key, NEW.body,
               coalesce(NEW.attempts, 0), coalesce(NEW.available_at, 0), NEW.last_error
        WHERE NEW.queue = 'order-events';
    INSERT INTO queue_inventory_events (id, routing_key, body, attempts, available_at, last_error)
        SELECT coalesce(NEW.id, (SELECT last FROM message_ids)), NEW.routing_key, NEW.body,
               coalesce(NEW.attempts, 0), coalesce(NEW.available_at, 0), NEW.last_error
        WHERE NEW.queue = 'inventory-events';
END;

-- A message keeps its queue: an update changes its delivery state and content.
CREATE TRIGGER messages_update INSTEAD OF UPDATE ON messages
BEGIN
    UPDATE queue_order_events SET routing_key = NEW.routing_key, body = NEW.body, attempts = NEW.attempts,
        available_at = NEW.available_at, last_error = NEW.last_error
        WHERE id = OLD.id AND OLD.queue = 'order-events';
    UPDATE queue_inventory_events SET routing_key = NEW.routing_key, body = NEW.body, attempts = NEW.attempts,
        available_at = NEW.available_at, last_error = NEW.last_error
        WHERE id = OLD.id AND OLD.queue = 'inventory-events';
END;

CREATE TRIGGER messages_delete INSTEAD OF DELETE ON messages
BEGIN
    DELETE FROM queue_order_events WHERE id = OLD.id AND OLD.queue = 'order-events';
    DELETE FROM queue_inventory_events WHERE id = OLD.id AND OLD.queue = 'inventory-events';
END;
