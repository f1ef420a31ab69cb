-- orderflow schema, version 5 (SQLite): each order keeps its trace.
--
-- The W3C `traceparent` of the request that placed the order (its trace id
-- and the API's span), so the order's trace can be found from the order and
-- its events carry it on. Orders placed before have none.

ALTER TABLE orders ADD COLUMN traceparent TEXT;
