-- orderflow schema (SQLite): cancelled and shipped orders, and stock that
-- follows them.
--
-- `orders.status` has no CHECK constraint here, so the new statuses need no
-- rebuild of the table. Each new status gets its time, as the others have.
-- `holds_stock` says whether the order's reservation is still held: set with
-- the reservation, cleared when the stock is given back (cancelled) or sent
-- out (shipped). Orders reserved or completed before this version hold
-- theirs. Shipped stock leaves `reserved` for `inventory.shipped`, so for
-- every SKU what was stocked is available + reserved + shipped.

ALTER TABLE orders ADD COLUMN cancelled_at INTEGER;
ALTER TABLE orders ADD COLUMN shipped_at INTEGER;
ALTER TABLE orders ADD COLUMN holds_stock INTEGER NOT NULL DEFAULT 0;
UPDATE orders SET holds_stock = 1 WHERE status IN ('reserved', 'completed');

ALTER TABLE inventory ADD COLUMN shipped INTEGER NOT NULL DEFAULT 0 CHECK (shipped >= 0);

-- The partial indexes of version 2, each again holding one status: a
-- cancelled or shipped order keeps the times of the statuses it passed.
-- None names `holds_stock`, so the inventory's flag leaves them alone.
DROP INDEX IF EXISTS orders_open;
DROP INDEX IF EXISTS orders_completed;
CREATE INDEX orders_open ON orders (id)
    WHERE completed_at IS NULL AND rejected_at IS NULL AND cancelled_at IS NULL;
CREATE INDEX orders_completed ON orders (id)
    WHERE completed_at IS NOT NULL AND cancelled_at IS NULL AND shipped_at IS NULL;
CREATE INDEX orders_cancelled ON orders (id) WHERE cancelled_at IS NOT NULL;
CREATE INDEX orders_shipped ON orders (id) WHERE shipped_at IS NOT NULL;
