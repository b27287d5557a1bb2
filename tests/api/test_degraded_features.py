"""While the online features cannot be trusted, the configured policy applies:
classes that fail closed get a 503 with Retry-After and nothing stored; the others
are scored at once on degraded features, flagged first in the reasons; replays are
still recognised (from the database); once Redis answers, what it missed is
rebuilt and decisions are no longer flagged."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx

from sankofa.engine import constants as C
from tests_support import tx

PROBLEM = "application/problem+json"


async def histories_hold(services: Any, transaction_id: str) -> bool:
    from sankofa.engine.features_online import id_hash

    store = services.features
    h = id_hash(transaction_id)
    blob = await services.redis.get(
        store.customer_key(await customer_ref(services, transaction_id))
    )
    return blob is not None and h in blob


async def customer_ref(services: Any, transaction_id: str) -> str:
    async with services.pool.acquire() as conn:
        ref: str = await conn.fetchval(
            "SELECT customer_ref FROM transactions WHERE transaction_id = $1", transaction_id
        )
    return ref


async def test_redis_unavailable_scores_degraded_and_fails_low_closed(
    client: httpx.AsyncClient, services: Any, db: asyncpg.Connection
) -> None:
    guard = services.guard
    await guard.stop()  # drive the checks by hand
    assert not guard.degraded
    guard.redis_failed()  # as after a failed call: the breaker is open
    assert guard.degraded

    r = await client.post("/v1/transactions", json=tx(1), headers={"x-priority": "normal"})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["reasons"][0] == C.REASON_FEATURES_DEGRADED
    stored = await db.fetchrow("SELECT reasons FROM transactions WHERE transaction_id = 'tx-1'")
    assert stored is not None and stored["reasons"][0] == C.REASON_FEATURES_DEGRADED

    low = await client.post("/v1/transactions", json=tx(2), headers={"x-priority": "low"})
    assert low.status_code == 503 and low.headers["content-type"] == PROBLEM
    assert "retry-after" in low.headers
    assert low.json()["type"].endswith("feature-store-unavailable")
    assert await db.fetchval("SELECT count(*) FROM transactions WHERE transaction_id = 'tx-2'") == 0

    # A batch mixing classes: the critical one is scored, the low one refused alone.
    again = await client.post("/v1/transactions", json=tx(1), headers={"x-priority": "critical"})
    assert again.status_code == 200 and again.json()["replayed"] is True  # found in the database
    assert again.json()["risk_score"] == d["risk_score"]

    ready = (await client.get("/health/ready")).json()
    assert ready["status"] == "ready-degraded"  # still ready: it scores
    assert ready["checks"]["features_complete"] is False

    # Redis answers again: the guard rebuilds what it missed, then all is complete.
    await guard.check()
    assert guard.available and not guard.complete
    assert guard._rebuild_task is not None
    await guard._rebuild_task
    await guard.check()
    assert guard.complete and not guard.degraded
    assert await histories_hold(services, "tx-1")  # scored without Redis, now counted

    fresh = await client.post("/v1/transactions", json=tx(3, timestamp="2018-04-01T10:05:00-03:00"))
    assert fresh.status_code == 200
    assert C.REASON_FEATURES_DEGRADED not in fresh.json()["reasons"]
    # tx-1 counts in the same customer's 1-day window of tx-3: the history is whole.
    row = await db.fetchrow("SELECT features FROM transactions WHERE transaction_id = 'tx-3'")
    from sankofa.store.repository import decode_features

    assert decode_features(row["features"])[3] == 2.0  # CUSTOMER_ID_NB_TX_1DAY_WINDOW


async def test_a_lost_history_flags_decisions_until_rebuilt(
    client: httpx.AsyncClient, services: Any
) -> None:
    """Redis answers but the marker is gone (restarted empty): decisions are flagged,
    low fails closed, until the rebuild the guard starts has finished."""
    from sankofa.engine.rebuild import marker_key

    guard = services.guard
    await guard.stop()
    ok = await client.post("/v1/transactions", json=tx(1))
    assert ok.status_code == 200 and C.REASON_FEATURES_DEGRADED not in ok.json()["reasons"]
    await services.redis.delete(marker_key(services.settings.redis_prefix))
    guard.complete = False  # what a check sees first; the rebuild is not started yet
    flagged = await client.post(
        "/v1/transactions", json=tx(2, timestamp="2018-04-01T10:01:00-03:00")
    )
    assert flagged.status_code == 200
    assert flagged.json()["reasons"][0] == C.REASON_FEATURES_DEGRADED
    low = await client.post(
        "/v1/transactions",
        json=tx(3, timestamp="2018-04-01T10:02:00-03:00"),
        headers={"x-priority": "low"},
    )
    assert low.status_code == 503
    await guard.check()  # sees no marker: starts the rebuild
    assert guard._rebuild_task is not None
    await guard._rebuild_task
    await guard.check()
    assert guard.complete
    after = await client.post(
        "/v1/transactions",
        json=tx(3, timestamp="2018-04-01T10:02:00-03:00"),
        headers={"x-priority": "low"},
    )
    assert after.status_code == 200 and C.REASON_FEATURES_DEGRADED not in after.json()["reasons"]


async def test_labels_while_redis_is_away_are_kept_and_applied_by_the_rebuild(
    client: httpx.AsyncClient, services: Any, db: asyncpg.Connection
) -> None:
    guard = services.guard
    await guard.stop()
    assert (await client.post("/v1/transactions", json=tx(1))).status_code == 200
    guard.redis_failed()
    r = await client.post(
        "/v1/labels", json={"labels": [{"transaction_id": "tx-1", "fraud": True}]}
    )
    assert r.status_code == 200, r.text  # stored in PostgreSQL: not lost, not refused
    assert await db.fetchval("SELECT fraud FROM labels WHERE transaction_id = 'tx-1'") is True
    # A degraded decision reads back with its unknown history as null, never NaN.
    d = await client.post("/v1/transactions", json=tx(2, timestamp="2018-04-01T10:01:00-03:00"))
    view = (await client.get("/v1/transactions/tx-2")).json()
    assert d.json()["reasons"][0] == C.REASON_FEATURES_DEGRADED
    features = view["decision"]["features"]
    assert features[0] == 48.7 and None in features
    await guard.check()
    assert guard._rebuild_task is not None
    await guard._rebuild_task
    await guard.check()
    assert guard.complete
    # The rebuild put the label in the terminal's history.
    from sankofa.engine.features_online import id_hash

    blob = await services.redis.get(services.features.terminal_key("term-1"))
    at = blob.find(id_hash("tx-1"))
    assert at % 24 == 8 and blob[at + 8 : at + 16] == b"\x00\x00\x00\x00\x00\x00\xf0\x3f"  # 1.0
