-- orderflow schema (PostgreSQL): cancelled and shipped orders, and stock
-- that follows them. Mirrors sqlite-7.sql.
--
-- The status CHECK constraint is replaced by one that allows the new
-- statuses. `holds_stock` says whether the order's reservation is still
-- held: set with the reservation, cleared when the stock is given back
-- (cancelled) or sent out (shipped); orders reserved or completed before
-- this version hold theirs. None of the new columns is indexed, so the
-- status updates stay heap-only (version 2).

ALTER TABLE orders DROP CONSTRAINT IF EXISTS orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('placed', 'reserved', 'completed', 'rejected', 'cancelled', 'shipped'));
ALTER TABLE orders ADD COLUMN IF NOT EXISTS cancelled_at BIGINT;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS shipped_at BIGINT;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS holds_stock BOOLEAN NOT NULL DEFAULT false;
UPDATE orders SET holds_stock = true WHERE status IN ('reserved', 'completed') AND NOT holds_stock;

ALTER TABLE inventory ADD COLUMN IF NOT EXISTS shipped BIGINT NOT NULL DEFAULT 0 CHECK (shipped >= 0);
