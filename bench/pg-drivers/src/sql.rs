//! The statements both drivers run, verbatim from orderflow's PostgreSQL store.

pub const INSERT_ORDERS: &str = "INSERT INTO orders (id, customer_id, status, items, created_at, updated_at)
                 SELECT id, c, 'placed', i::jsonb, $4, $4 FROM unnest($1::uuid[], $2::text[], $3::text[]) AS t(id, c, i)";

pub const INSERT_MESSAGES: &str =
    "INSERT INTO messages (queue, routing_key, body) SELECT $1, $2, b FROM unnest($3::text[]) AS t(b)";

pub const NOTIFY_MESSAGES: &str = "SELECT pg_notify('orderflow_messages', current_schema())";

pub const SELECT_ORDER: &str = "SELECT id, customer_id, status, reason, items::text, created_at, updated_at, \
     reserved_at, completed_at, rejected_at FROM orders WHERE id = $1";

pub const QUEUE_ORDER_EVENTS: &str = "order-events";

pub const ROUTE_ORDER_PLACED: &str = "order.placed";
