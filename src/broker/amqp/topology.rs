//! Exchanges, queues and bindings, declared idempotently on every connect.
//!
//! Topic exchanges `orders`, `inventory` and `dlx`. Durable quorum queues
//! `order-events` (`order.placed`, `order.cancelled`, `order.shipped`) and
//! `inventory-events` (`inventory.reserved`, `inventory.failed`,
//! `inventory.released`, `inventory.shipped`), each with a delivery limit and
//! dead-lettering through `dlx` to `<queue>-dlq`. Quorum queues dead-letter
//! safely only with `dead-letter-strategy=at-least-once`, which requires
//! `overflow=reject-publish` (RabbitMQ 3.10 and later).
//!
//! A queue's arguments are fixed when it is first declared. A process whose
//! `--max-attempts` differs from the limit a queue was made with (an operator
//! command without the services' flags, or a changed setting) uses the
//! queue as it is and says so, rather than failing to start; the limit of an
//! existing queue is changed with a RabbitMQ policy.

use super::amqp_err;
use crate::domain::{
    ROUTE_INVENTORY_FAILED, ROUTE_INVENTORY_RELEASED, ROUTE_INVENTORY_RESERVED, ROUTE_INVENTORY_SHIPPED,
    ROUTE_ORDER_CANCELLED, ROUTE_ORDER_PLACED, ROUTE_ORDER_SHIPPED,
};
use crate::messaging::{BrokerError, QUEUE_INVENTORY_EVENTS, QUEUE_ORDER_EVENTS};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ExchangeKind};

const EXCHANGE_ORDERS: &str = "orders";
const EXCHANGE_INVENTORY: &str = "inventory";
const EXCHANGE_DLX: &str = "dlx";

/// The exchange an event with this routing key is published to.
pub fn exchange_for(routing_key: &str) -> &'static str {
    if routing_key.starts_with("order.") {
        EXCHANGE_ORDERS
    } else {
        EXCHANGE_INVENTORY
    }
}

/// Where messages of `queue` go when they are dead-lettered.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}-dlq")
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

pub(super) async fn declare(conn: &Connection, delivery_limit: u32) -> Result<(), BrokerError> {
    let mut channel = conn.create_channel().await.map_err(amqp_err)?;
    let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    for exchange in [EXCHANGE_ORDERS, EXCHANGE_INVENTORY, EXCHANGE_DLX] {
        channel
            .exchange_declare(exchange.into(), ExchangeKind::Topic, durable, FieldTable::default())
            .await
            .map_err(amqp_err)?;
    }
    let bindings: [(&str, &str, &[&str]); 2] = [
        (QUEUE_ORDER_EVENTS, EXCHANGE_ORDERS, &[ROUTE_ORDER_PLACED, ROUTE_ORDER_CANCELLED, ROUTE_ORDER_SHIPPED]),
        (
            QUEUE_INVENTORY_EVENTS,
            EXCHANGE_INVENTORY,
            &[ROUTE_INVENTORY_RESERVED, ROUTE_INVENTORY_FAILED, ROUTE_INVENTORY_RELEASED, ROUTE_INVENTORY_SHIPPED],
        ),
    ];
    let queue_opts = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    for (queue, exchange, keys) in bindings {
        let dlq = dead_letter_queue(queue);
        let mut dlq_args = FieldTable::default();
        dlq_args.insert("x-queue-type".into(), text("quorum"));
        channel.queue_declare(dlq.as_str().into(), queue_opts, dlq_args).await.map_err(amqp_err)?;
        channel
            .queue_bind(
                dlq.as_str().into(),
                EXCHANGE_DLX.into(),
                queue.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp_err)?;

        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), text("quorum"));
        args.insert("x-delivery-limit".into(), AMQPValue::LongInt(delivery_limit as i32));
        args.insert("x-dead-letter-exchange".into(), text(EXCHANGE_DLX));
        args.insert("x-dead-letter-routing-key".into(), text(queue));
        args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
        args.insert("x-overflow".into(), text("reject-publish"));
        if let Err(e) = channel.queue_declare(queue.into(), queue_opts, args).await {
            if !is_precondition_failed(&e) {
                return Err(amqp_err(e));
            }
            // The error closed the channel; the queue exists, with its own arguments.
            channel = conn.create_channel().await.map_err(amqp_err)?;
            let passive = QueueDeclareOptions { passive: true, ..queue_opts };
            channel.queue_declare(queue.into(), passive, FieldTable::default()).await.map_err(amqp_err)?;
            tracing::warn!(
                queue,
                max_attempts = delivery_limit,
                "the queue exists with other arguments than this process declares (another --max-attempts?); \
                 using it as it is"
            );
        }
        for key in keys {
            channel
                .queue_bind(
                    queue.into(),
                    exchange.into(),
                    (*key).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(amqp_err)?;
        }
    }
    let _ = channel.close(200, "topology declared".into()).await;
    Ok(())
}

fn is_precondition_failed(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp) if matches!(amqp.kind(), lapin::protocol::AMQPErrorKind::Soft(lapin::protocol::AMQPSoftError::PRECONDITIONFAILED)))
}
