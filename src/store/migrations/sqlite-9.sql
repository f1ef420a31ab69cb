-- orderflow schema (SQLite): an order's waiting messages are found from the
-- order, through primary keys.
--
-- An order's trail (`GET /orders/{id}/trail`) lists its messages still
-- waiting. It found them by the order id in their bodies, a scan of every
-- queued message.
--
-- The writer already writes an order's row in the transaction that queues
-- each message about the order, so it names the message's id there: the
-- `OrderPlaced` message in `placed_message`, the inventory's answer to it in
-- `outcome_message` (both set once: an order is placed once and leaves
-- `placed` once), and the rarer ones (a client's cancel or shipment, and the
-- inventory's answers to those) in the list `messages`. The trail looks each
-- one up by its id: ids are never given out twice, so a listed message that
-- is gone is simply not found. An index on the queues' order ids would cost
-- the writer two entries per message, one written when it is queued and one
-- deleted when it is settled, several times what this costs
-- (docs/performance.md).
--
-- Every other message (written through the `messages` view: by hand, or
-- replayed from the dead letters; or rewritten through it since) is
-- `unnamed`, and its id is kept in `unnamed_messages` by the view's
-- triggers: the trail reads those and keeps the ones whose body is about the
-- order. A consumer deletes the unnamed messages it settles through the
-- view, so their ids go with them.

ALTER TABLE orders ADD COLUMN placed_message INTEGER;
ALTER TABLE orders ADD COLUMN outcome_message INTEGER;
ALTER TABLE orders ADD COLUMN messages TEXT;   -- more message ids, space-separated
ALTER TABLE queue_order_events ADD COLUMN unnamed INTEGER;
ALTER TABLE queue_inventory_events ADD COLUMN unnamed INTEGER;
CREATE TABLE unnamed_messages (id INTEGER PRIMARY KEY);

-- Messages queued before: one whose body is an event of an order that
-- exists is listed with that order; any other is unnamed. This reads every
-- queued message (docs/operations.md#upgrades).
CREATE TEMP TABLE listed_messages AS
    SELECT q.id, o.id AS order_id
    FROM (SELECT id, body FROM queue_order_events UNION ALL SELECT id, body FROM queue_inventory_events) AS q
    JOIN orders AS o ON o.id = CASE WHEN json_valid(q.body) THEN lower(q.body ->> '$.order_id') END;
UPDATE orders SET messages = listed.ids
    FROM (SELECT order_id, group_concat(id, ' ') AS ids FROM (SELECT * FROM temp.listed_messages ORDER BY id)
          GROUP BY order_id) AS listed
    WHERE orders.id = listed.order_id;
UPDATE queue_order_events SET unnamed = 1 WHERE id NOT IN (SELECT id FROM temp.listed_messages);
UPDATE queue_inventory_events SET unnamed = 1 WHERE id NOT IN (SELECT id FROM temp.listed_messages);
INSERT INTO unnamed_messages (id)
    SELECT id FROM queue_order_events WHERE unnamed IS NOT NULL
    UNION ALL SELECT id FROM queue_inventory_events WHERE unnamed IS NOT NULL;
DROP TABLE temp.listed_messages;

-- The view of version 4, with the new column. Its triggers go with it.
DROP VIEW messages;
CREATE VIEW messages (id, queue, routing_key, body, attempts, available_at, last_error, unnamed) AS
    SELECT id, 'order-events', routing_key, body, attempts, available_at, last_error, unnamed
    FROM queue_order_events
    UNION ALL
    SELECT id, 'inventory-events', routing_key, body, attempts, available_at, last_error, unnamed
    FROM queue_inventory_events;

-- As in version 4, and what is written here is unnamed.
CREATE TRIGGER messages_insert INSTEAD OF INSERT ON messages
BEGIN
    SELECT RAISE(ABORT, 'no such queue') WHERE NEW.queue NOT IN ('order-events', 'inventory-events');
    UPDATE message_ids SET last = max(last, coalesce(NEW.id, 1 + max(last,
        coalesce((SELECT max(id) FROM queue_order_events), 0),
        coalesce((SELECT max(id) FROM queue_inventory_events), 0))));
    INSERT INTO queue_order_events (id, routing_key, body, attempts, available_at, last_error, unnamed)
        SELECT coalesce(NEW.id, (SELECT last FROM message_ids)), NEW.routing_key, NEW.body,
               coalesce(NEW.attempts, 0), coalesce(NEW.available_at, 0), NEW.last_error, 1
        WHERE NEW.queue = 'order-events';
    INSERT INTO queue_inventory_events (id, routing_key, body, attempts, available_at, last_error, unnamed)
        SELECT coalesce(NEW.id, (SELECT last FROM message_ids)), NEW.routing_key, NEW.body,
               coalesce(NEW.attempts, 0), coalesce(NEW.available_at, 0), NEW.last_error, 1
        WHERE NEW.queue = 'inventory-events';
    INSERT INTO unnamed_messages (id) VALUES (coalesce(NEW.id, (SELECT last FROM message_ids)));
END;

-- As in version 4: an update changes a message's delivery state and content.
CREATE TRIGGER messages_update INSTEAD OF UPDATE ON messages
BEGIN
    UPDATE queue_order_events SET routing_key = NEW.routing_key, body = NEW.body, attempts = NEW.attempts,
        available_at = NEW.available_at, last_error = NEW.last_error
        WHERE id = OLD.id AND OLD.queue = 'order-events';
    UPDATE queue_inventory_events SET routing_key = NEW.routing_key, body = NEW.body, attempts = NEW.attempts,
        available_at = NEW.available_at, last_error = NEW.last_error
        WHERE id = OLD.id AND OLD.queue = 'inventory-events';
END;

-- A body rewritten by hand may be about another order than the one that
-- lists the message: it becomes unnamed. Updates that do not set `body` do
-- not run this at all.
CREATE TRIGGER messages_rewrite INSTEAD OF UPDATE OF body ON messages WHEN NEW.body IS NOT OLD.body
BEGIN
    UPDATE queue_order_events SET unnamed = 1 WHERE id = OLD.id AND OLD.queue = 'order-events';
    UPDATE queue_inventory_events SET unnamed = 1 WHERE id = OLD.id AND OLD.queue = 'inventory-events';
    INSERT OR IGNORE INTO unnamed_messages (id) VALUES (OLD.id);
END;

CREATE TRIGGER messages_delete INSTEAD OF DELETE ON messages
BEGIN
    DELETE FROM queue_order_events WHERE id = OLD.id AND OLD.queue = 'order-events';
    DELETE FROM queue_inventory_events WHERE id = OLD.id AND OLD.queue = 'inventory-events';
    DELETE FROM unnamed_messages WHERE id = OLD.id AND OLD.unnamed IS NOT NULL;
END;
