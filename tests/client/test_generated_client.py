"""A client generated from the served description places an order and reads it back.

scripts/api-check generates the client (openapi-python-client) from
GET /openapi.json into a temporary directory, starts a server with stock for
`burger`, and runs this file with ORDERFLOW_URL and ORDERFLOW_CLIENT_DIR set.
"""

import os
import sys
import time
import uuid

sys.path.insert(0, os.environ["ORDERFLOW_CLIENT_DIR"])

from orderflow_client import Client  # noqa: E402
from orderflow_client.api.compatible import get_order_status  # noqa: E402
from orderflow_client.api.orders import get_order, list_orders, place_order  # noqa: E402
from orderflow_client.models import (  # noqa: E402
    Accepted,
    ErrorBody,
    ErrorCode,
    LineItem,
    Order,
    OrderList,
    OrderRequest,
    OrderStatus,
    Status,
)

TERMINAL = (Status.COMPLETED, Status.REJECTED)


def client() -> Client:
    return Client(base_url=os.environ["ORDERFLOW_URL"], raise_on_unexpected_status=True)


def wait_terminal(c: Client, order_id) -> Order:
    deadline = time.monotonic() + 30
    while True:
        order = get_order.sync(client=c, id=order_id)
        assert isinstance(order, Order), order
        if order.status in TERMINAL:
            return order
        assert time.monotonic() < deadline, f"order {order_id} is still {order.status}"
        time.sleep(0.05)


def test_an_order_placed_through_the_client_is_read_back_completed():
    c = client()
    customer = f"py-{uuid.uuid4()}"
    body = OrderRequest(customer_id=customer, items=[LineItem(sku="burger", quantity=2)])
    key = f"client-{uuid.uuid4()}"
    placed = place_order.sync_detailed(client=c, body=body, idempotency_key=key)
    assert placed.status_code == 202, placed.content
    accepted = placed.parsed
    assert isinstance(accepted, Accepted)
    assert placed.headers["location"] == f"/orders/{accepted.order_id}"

    # The same request with the same key answers the first order again.
    again = place_order.sync_detailed(client=c, body=body, idempotency_key=key)
    assert again.status_code == 202
    assert again.parsed.order_id == accepted.order_id
    assert again.headers["idempotent-replayed"] == "true"

    order = wait_terminal(c, accepted.order_id)
    assert order.status == Status.COMPLETED, order.reason
    assert order.customer_id == customer
    assert [(i.sku, i.quantity) for i in order.items] == [("burger", 2)]
    assert [t.status for t in order.history] == [Status.PLACED, Status.RESERVED, Status.COMPLETED]

    page = list_orders.sync(client=c, customer_id=customer, limit=10)
    assert isinstance(page, OrderList)
    assert [o.order_id for o in page.orders] == [accepted.order_id]
    assert page.next_cursor is None

    short = get_order_status.sync(client=c, id=accepted.order_id)
    assert isinstance(short, OrderStatus) and short.status == Status.COMPLETED


def test_a_refused_order_parses_as_the_error_body():
    c = client()
    body = OrderRequest(customer_id="py-refused", items=[LineItem(sku="burger", quantity=10_001)])
    refused = place_order.sync_detailed(client=c, body=body)
    assert refused.status_code == 422
    assert isinstance(refused.parsed, ErrorBody)
    assert refused.parsed.error.code == ErrorCode.INVALID_QUANTITY
    page = list_orders.sync(client=c, customer_id="py-refused")
    assert page.orders == [], "a refused order stores nothing"
