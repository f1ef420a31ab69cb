-- orderflow schema (PostgreSQL): each queued message names its order, and an
-- order's waiting messages are found through an index.
--
-- An order's trail (`GET /orders/{id}/trail`) found its waiting messages by
-- the order id in their bodies, a scan of every queued message (its cost:
-- docs/performance.md). `order_id` is the order that every
-- event in the body is about, written by the store with the message; a
-- message about no one order, or whose order the store did not name (several
-- orders' events in one body, a body that is not events, a message written
-- by hand or rewritten since), has none, and the trail looks for those among
-- the index's entries without an order, by their bodies, as before. The
-- column is never updated, so updates of a message's delivery state stay
-- heap-only, and a consumer's delete touches no index here. (SQLite lists
-- its messages in the order's row instead, sqlite-9.sql: there an index
-- entry costs the one writer more.)

ALTER TABLE messages ADD COLUMN IF NOT EXISTS order_id UUID;

-- Messages queued before: a body that is one event names its order. A body
-- that is not JSON, or whose order_id is not a UUID, names none. This reads
-- every queued message with the table locked: an upgrade behind a long queue
-- holds new orders back meanwhile (docs/operations.md#upgrades).
CREATE OR REPLACE FUNCTION pg_temp.order_of(body TEXT) RETURNS UUID LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN CASE WHEN jsonb_typeof(body::jsonb -> 'order_id') = 'string' THEN (body::jsonb ->> 'order_id')::uuid END;
EXCEPTION WHEN data_exception THEN   -- not JSON, or not a UUID
    RETURN NULL;
END $$;
UPDATE messages SET order_id = pg_temp.order_of(body) WHERE order_id IS NULL;
DROP FUNCTION pg_temp.order_of(TEXT);

CREATE INDEX IF NOT EXISTS messages_by_order ON messages (order_id);

-- A body rewritten by hand may be about another order: unless the same
-- statement names its order, the message no longer names one. Updates that do
-- not set `body` (every update the store makes) do not fire this.
CREATE OR REPLACE FUNCTION messages_rewritten() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.order_id := NULL;
    RETURN NEW;
END $$;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'messages_rewritten' AND tgrelid = 'messages'::regclass) THEN
        CREATE TRIGGER messages_rewritten BEFORE UPDATE OF body ON messages FOR EACH ROW
            WHEN (NEW.body IS DISTINCT FROM OLD.body AND NEW.order_id IS NOT DISTINCT FROM OLD.order_id)
            EXECUTE FUNCTION messages_rewritten();
    END IF;
END $$;
