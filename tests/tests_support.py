"""Small builders shared by the tests."""

from __future__ import annotations

from typing import Any


def tx(i: int = 1, **over: Any) -> dict[str, Any]:
    """A valid transaction body; keyword arguments override fields."""
    body: dict[str, Any] = {
        "transaction_id": f"tx-{i}",
        "timestamp": "2018-04-01T10:00:00-03:00",
        "amount": "48.70",
        "customer_id": "cust-1",
        "terminal_id": "term-1",
    }
    body.update(over)
    return body
