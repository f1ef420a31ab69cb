-- orderflow schema, version 2 (PostgreSQL): a status change updates the order
-- in place.
--
-- PostgreSQL rewrites every index of a row whose indexed columns change, so
-- with an index on (status, id) each of an order's two transitions wrote a
-- new entry into all three of its indexes. Without it, and with room left on
-- each page for the new versions, a transition is a heap-only (HOT) update
-- that touches no index at all. Orders are listed by status by walking the
-- primary key newest first instead (see `orders::list`).

DROP INDEX IF EXISTS orders_by_status;
ALTER TABLE orders SET (fillfactor = 60);
