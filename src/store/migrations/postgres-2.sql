-- orderflow schema, version 2 (PostgreSQL): status changes become cheap.
--
-- An index on `status` made every transition a non-HOT update, which writes a
-- new entry into every index of the table. Orders are found by status through
-- the state times instead, which only the rarer transitions change:
--   placed, reserved  orders_open (neither completed nor rejected)
--   rejected          orders_rejected
--   completed         the primary key, newest first (most orders are completed)
-- So reserving an order is a HOT update (no index is touched) and completing
-- one adds entries to the primary key and customer indexes only. Free room on
-- each page lets HOT keep the new row version beside the old one.
DROP INDEX IF EXISTS orders_by_status;
CREATE INDEX IF NOT EXISTS orders_open ON orders (id) WHERE completed_at IS NULL AND rejected_at IS NULL;
CREATE INDEX IF NOT EXISTS orders_rejected ON orders (id) WHERE rejected_at IS NOT NULL;
ALTER TABLE orders SET (fillfactor = 70);
