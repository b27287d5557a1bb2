"""Regressions from a new user's attempt to break the service (each a kind of input
that got a 500, was mis-stored, or hurt other clients)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
import orjson
import pytest
from redis.asyncio import Redis

from sankofa.engine.features_online import FeatureStore
from sankofa.engine.transaction import TransactionParser
from sankofa.errors import FeatureStoreUnavailableError
from sankofa.store.repository import decode_features
from servers import private_redis
from tests_support import tx

PROBLEM = "application/problem+json"


async def count(db: asyncpg.Connection) -> int:
    n: int = await db.fetchval("SELECT count(*) FROM transactions")
    return n


@pytest.mark.parametrize(
    "timestamp",
    [
        "0001-01-01T00:00:00+01:00",  # year 0 in UTC
        "0001-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "9999-12-31T23:59:59-01:00",  # year 10000 in UTC
        "2099-01-01T00:00:00Z",  # beyond the allowed clock skew
    ],
)
async def test_out_of_range_instants_are_422(
    client: httpx.AsyncClient, db: asyncpg.Connection, timestamp: str
) -> None:
    r = await client.post("/v1/transactions", json=tx(timestamp=timestamp))
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "timestamp"
    assert await count(db) == 0


async def test_out_of_range_labelled_at_is_422(client: httpx.AsyncClient) -> None:
    await client.post("/v1/transactions", json=tx(1))
    for when in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        r = await client.post(
            "/v1/labels",
            json={"labels": [{"transaction_id": "tx-1", "fraud": True, "labelled_at": when}]},
        )
        assert r.status_code == 422, r.text


@pytest.mark.parametrize("value", ["x\u0000y", "bell\u0007", "esc\u001b"])
async def test_control_characters_in_metadata_are_422(
    client: httpx.AsyncClient, db: asyncpg.Connection, value: str
) -> None:
    r = await client.post("/v1/transactions", json=tx(metadata={"note": value}))
    assert r.status_code == 422, r.text
    assert await count(db) == 0


async def test_one_bad_request_never_fails_the_others_in_its_batch(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """Sixty good requests and one bad one at the same moment: the good ones are stored."""
    # High priority: sixty at once is more than the door admits for normal traffic
    # in one worker (SANKOFA_SHED_IN_PROGRESS_NORMAL), and shedding is not the point here.
    high = {"x-priority": "high"}
    good = [
        client.post("/v1/transactions", json=tx(i, customer_id=f"c{i}"), headers=high)
        for i in range(60)
    ]
    bad = client.post("/v1/transactions", json=tx(999, metadata={"note": "x\u0000y"}), headers=high)
    results = await asyncio.gather(*good, bad)
    assert [r.status_code for r in results[:60]] == [200] * 60
    assert results[60].status_code == 422
    assert await count(db) == 60


async def test_unstorable_value_is_isolated_by_the_engine(
    client: httpx.AsyncClient, services: Any, db: asyncpg.Connection
) -> None:
    """The safety net behind validation: a value the database refuses fails only its
    own request, even inside a batch of others (here injected past the parser)."""
    from sankofa.engine.scorer import ScoreRequest
    from sankofa.queues.priority import Priority

    good = services.parser.parse(tx(1))
    poisoned = services.parser.parse(tx(2, customer_id="other", metadata={"note": "ok"}))
    poisoned.metadata = {"note": "x\u0000y"}  # what validation now refuses
    results = await asyncio.gather(
        services.dispatcher.submit(ScoreRequest([good]), priority=Priority.NORMAL),
        services.dispatcher.submit(ScoreRequest([poisoned]), priority=Priority.NORMAL),
        return_exceptions=True,
    )
    assert isinstance(results[0], list) and results[0][0]["transaction_id"] == "tx-1"
    assert type(results[1]).__name__ == "UnstorableValueError"
    assert await count(db) == 1
    # The poisoned transaction was not left counted in Redis.
    probe = await client.post(
        "/v1/transactions", json=tx(3, customer_id="other", timestamp="2018-04-01T10:00:01-03:00")
    )
    f = decode_features(
        await db.fetchval("SELECT features FROM transactions WHERE transaction_id='tx-3'")
    )
    assert probe.status_code == 200 and f[3] == 1.0


async def test_lone_surrogate_with_an_overflowing_number_is_400(client: httpx.AsyncClient) -> None:
    body = (
        b'{"x":1e999,"transaction_id":"s","timestamp":"2018-04-01T10:00:00Z","amount":"1.00",'
        b'"customer_id":"c","terminal_id":"t","\\ud800":1}'
    )
    for path in ("/v1/transactions", "/v1/labels"):
        r = await client.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, (path, r.text)
        assert r.headers["content-type"] == PROBLEM


@pytest.mark.parametrize(
    "field, value",
    [
        ("transaction_id", "abc\n"),
        ("channel", "app\n"),
        ("timestamp", "2018-04-01T10:00:00Z\n"),
        ("amount", "48.70\n"),
        ("transaction_id", "."),
        ("transaction_id", ".."),
    ],
)
async def test_trailing_newlines_and_dot_ids_are_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, field: str, value: str
) -> None:
    r = await client.post("/v1/transactions", json=tx(**{field: value}))
    assert r.status_code == 422, r.text
    assert await count(db) == 0


@pytest.mark.parametrize(
    "raw",
    [
        b'{"transaction_id":"d1","timestamp":"2018-04-01T10:00:00Z","amount":"1.00","amount":"9999.00","customer_id":"c","terminal_id":"t"}',
        b'{"transaction_id":"d1","timestamp":"2018-04-01T10:00:00Z","amount" : "1.00","amount" : "9.00","customer_id":"c","terminal_id":"t"}',
        b'{"transaction_id":"d1","timestamp":"2018-04-01T10:00:00Z","amount":"1.00","customer_id":"c","terminal_id":"t","metadata":{"a":1,"a":2}}',
    ],
)
async def test_duplicate_keys_are_400(
    client: httpx.AsyncClient, db: asyncpg.Connection, raw: bytes
) -> None:
    r = await client.post(
        "/v1/transactions", content=raw, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400, r.text
    assert "twice" in r.json()["detail"]
    assert await count(db) == 0


async def test_colon_quote_inside_a_value_is_not_a_duplicate(client: httpx.AsyncClient) -> None:
    body = orjson.dumps(tx(metadata={"note": 'he said "x": y'}))
    r = await client.post(
        "/v1/transactions", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 200, r.text


async def test_oversized_headers_are_431(client: httpx.AsyncClient) -> None:
    r = await client.get("/health/live", headers={"x-foo": "a" * 20_000})
    assert r.status_code == 431
    assert r.headers["content-type"] == PROBLEM


async def test_head_on_health_and_no_slash_redirect(client: httpx.AsyncClient) -> None:
    assert (await client.head("/health/live")).status_code == 200
    assert (await client.head("/health/ready")).status_code == 200
    r = await client.get("/v1/transactions/", headers={"host": "evil.example"})
    assert r.status_code == 404
    assert "location" not in r.headers


async def test_identifiers_are_pseudonymised_per_field(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    r = await client.post("/v1/transactions", json=tx(customer_id="same", device_id="same"))
    assert r.status_code == 200
    row = await db.fetchrow("SELECT customer_ref, device_ref FROM transactions")
    assert row["customer_ref"] != row["device_ref"]


async def test_single_conflict_has_no_indexes(client: httpx.AsyncClient) -> None:
    await client.post("/v1/transactions", json=tx(1))
    r = await client.post("/v1/transactions", json=tx(1, amount="2.00"))
    assert r.status_code == 409
    assert "indexes" not in r.json()


async def test_metadata_numbers_beyond_2_53_are_422(client: httpx.AsyncClient) -> None:
    body = b'{"transaction_id":"m1","timestamp":"2018-04-01T10:00:00Z","amount":"1.00","customer_id":"c","terminal_id":"t","metadata":{"n":18446744073709551616}}'
    r = await client.post(
        "/v1/transactions", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422, r.text


def test_trickled_body_is_408(tmp_path: Path, settings_factory: Any) -> None:
    """A client sending part of its body and stalling gets 408, not a held connection."""
    from conftest import LiveServer as Server

    settings = settings_factory(body_timeout_s=0.5)
    env = _server_env(settings)
    env["SANKOFA_BODY_TIMEOUT_S"] = "0.5"
    server = Server(env, tmp_path / "server.log")
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(
                b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 5000\r\n\r\n{"a":'
            )
            reply = s.recv(65536)
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    finally:
        server.stop()


def _server_env(settings: Any) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("SANKOFA_")}
    env.update(
        {
            "SANKOFA_ENVIRONMENT": "test",
            "SANKOFA_DATABASE_URL": settings.database_url,
            "SANKOFA_REDIS_URL": settings.redis_url,
            "SANKOFA_REDIS_PREFIX": settings.redis_prefix,
            "SANKOFA_HMAC_KEY": settings.hmac_key.get_secret_value(),
            "SANKOFA_LOG_LEVEL": "warning",
        }
    )
    return env


async def test_slow_database_gives_a_fast_503_at_the_deadline(
    client: httpx.AsyncClient, db: asyncpg.Connection, database_url: str
) -> None:
    """C16 / deadlines cover processing too: with the table locked, a request whose
    deadline is 200 ms gets 503 (not a late 200); nothing is stored."""
    locker = await asyncpg.connect(database_url)
    try:
        tr = locker.transaction()
        await tr.start()
        await locker.execute("LOCK TABLE transactions IN ACCESS EXCLUSIVE MODE")
        r = await client.post(
            "/v1/transactions", json=tx(1), headers={"x-request-timeout-ms": "200"}
        )
        assert r.status_code == 503, r.text
        assert "retry-after" in r.headers
        await tr.rollback()
    finally:
        await locker.close()
    assert await count(db) == 0
    # The feature store took back what it counted: the same customer's next
    # transaction sees only itself.
    ok = await client.post("/v1/transactions", json=tx(2, timestamp="2018-04-01T10:00:01-03:00"))
    assert ok.status_code == 200
    f = decode_features(
        await db.fetchval("SELECT features FROM transactions WHERE transaction_id='tx-2'")
    )
    assert f[3] == 1.0


@pytest.fixture
async def slow_redis_store(tmp_path: Path) -> AsyncIterator[tuple[FeatureStore, Redis]]:
    with private_redis(tmp_path) as url:
        redis = Redis.from_url(url)
        admin = Redis.from_url(url)
        try:
            yield (
                FeatureStore(redis=redis, prefix="slow", timeout_s=0.3, key_ttl_s=45 * 86_400),
                admin,
            )
        finally:
            await redis.aclose()
            await admin.aclose()


async def test_a_timed_out_script_is_taken_back(
    slow_redis_store: tuple[FeatureStore, Redis],
) -> None:
    """F4: the client gave up (timeout) but the script still ran: forgetting it leaves
    nothing counted, so a refused transaction leaves no trace."""
    store, admin = slow_redis_store
    parser = TransactionParser(hmac_key=b"test-hmac-key-0123456789", max_metadata_bytes=2048)
    first = parser.parse(tx(1, amount="900.00"))
    sleeper = asyncio.create_task(admin.execute_command("DEBUG", "SLEEP", "1"))
    await asyncio.sleep(0.05)
    with pytest.raises(FeatureStoreUnavailableError):
        await store.compute([first])
    await sleeper  # the script runs now, after the client gave up
    await store.forget([first], [3])
    probe = await store.compute(
        [parser.parse(tx(2, amount="10.00", timestamp="2018-04-01T10:00:01-03:00"))]
    )
    assert probe.matrix[0, 3] == 1.0 and probe.matrix[0, 4] == 10.0


async def test_busy_redis_is_unavailable_not_a_500(tmp_path: Path) -> None:
    """A script stuck past lua-time-limit makes Redis answer BUSY: that is a 503."""
    with private_redis(tmp_path, "--lua-time-limit", "50") as url:
        redis = Redis.from_url(url)
        # The spinning script's own reply takes as long as the script: on a busy
        # machine longer than redis-py's default read timeout (5 s since 8.0).
        admin = Redis.from_url(url, socket_timeout=120)
        try:
            store = FeatureStore(redis=redis, prefix="busy", timeout_s=2.0, key_ttl_s=45 * 86_400)
            # About a second of pure Lua: past lua-time-limit, Redis answers BUSY.
            spin = asyncio.create_task(
                admin.eval("local i = 0 while i < 1.2e8 do i = i + 1 end return 1", 0)
            )
            await asyncio.sleep(0.3)
            parser = TransactionParser(
                hmac_key=b"test-hmac-key-0123456789", max_metadata_bytes=2048
            )
            with pytest.raises(FeatureStoreUnavailableError):
                await store.compute([parser.parse(tx(1))])
            assert await store.ping() is False
            await spin
        finally:
            await redis.aclose()
            await admin.aclose()


async def test_hot_customer_batch_is_linear(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """F5: a thousand transactions of one customer in one batch, on top of two
    thousand before: answered (the reply grows with records, not with their product)."""
    for start in (0, 1000, 2000):
        body = {
            "transactions": [
                tx(
                    start + i,
                    customer_id="hot",
                    timestamp=f"2018-04-01T{(start + i) // 3600 % 24:02d}:{(start + i) // 60 % 60:02d}:{(start + i) % 60:02d}-03:00",
                )
                for i in range(1000)
            ]
        }
        r = await client.post("/v1/transactions/batch", json=body)
        assert r.status_code == 200, r.text[:300]
    f = decode_features(
        await db.fetchval("SELECT features FROM transactions WHERE transaction_id='tx-2999'")
    )
    assert f[7] == 3000.0  # 30-day count: every one of them
    assert np.isclose(f[8], 48.70)
