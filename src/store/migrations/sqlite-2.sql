-- orderflow schema, version 2 (SQLite): status changes touch fewer indexes.
--
-- An index on `status` had each transition delete and insert an entry in it.
-- Orders are found by status through the state times instead, which only the
-- rarer transitions change:
--   placed, reserved  orders_open (neither completed nor rejected)
--   rejected          orders_rejected
--   completed         the primary key, newest first (most orders are completed)
DROP INDEX IF EXISTS orders_by_status;
CREATE INDEX IF NOT EXISTS orders_open ON orders (id) WHERE completed_at IS NULL AND rejected_at IS NULL;
CREATE INDEX IF NOT EXISTS orders_rejected ON orders (id) WHERE rejected_at IS NOT NULL;
