-- orderflow schema, version 3 (PostgreSQL): each order keeps its trace.
--
-- The W3C `traceparent` of the request that placed the order (its trace id
-- and the API's span), so the order's trace can be found from the order and
-- its events carry it on. Orders placed before have none. A nullable column
-- without a default is added without rewriting the table.

ALTER TABLE orders ADD COLUMN IF NOT EXISTS traceparent text;
