-- orderflow schema, version 2 (SQLite): orders are found by state through
-- partial indexes on the state times instead of an index on `status`.
--
-- An index on (status, id) is rewritten at every transition: an insert when
-- the order is placed and a delete and an insert when it is reserved and again
-- when it completes. SQLite leaves an index alone when an UPDATE changes none
-- of its columns and none of the columns its WHERE clause names, so these cost
-- one insert when the order is placed, one delete and one insert when it
-- completes (or is rejected), and nothing when it is reserved.

DROP INDEX IF EXISTS orders_by_status;
-- Placed and reserved orders.
CREATE INDEX IF NOT EXISTS orders_open ON orders (id)
    WHERE completed_at IS NULL AND rejected_at IS NULL;
CREATE INDEX IF NOT EXISTS orders_completed ON orders (id) WHERE completed_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS orders_rejected ON orders (id) WHERE rejected_at IS NOT NULL;
