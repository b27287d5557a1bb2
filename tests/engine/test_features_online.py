"""The Redis feature store, against a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from redis.asyncio import BlockingConnectionPool, Redis

from sankofa.engine.feature_names import FEATURE_NAMES
from sankofa.engine.features_online import ADDED_CUSTOMER, ADDED_TERMINAL, FeatureStore
from sankofa.engine.transaction import Transaction, TransactionParser
from sankofa.errors import FeatureStoreUnavailableError

PARSER = TransactionParser(hmac_key=b"feature-test-key-0123", max_metadata_bytes=2048)
F = {name: i for i, name in enumerate(FEATURE_NAMES)}


def t(
    i: int, when: str, amount: str = "10.00", customer: str = "c", terminal: str = "T"
) -> Transaction:
    return PARSER.parse(
        {
            "transaction_id": f"x{i}",
            "timestamp": when,
            "amount": amount,
            "customer_id": customer,
            "terminal_id": terminal,
        }
    )


@pytest.fixture
async def store(redis_url: str, redis_prefix: str) -> AsyncIterator[FeatureStore]:
    redis = Redis.from_url(redis_url)
    try:
        yield FeatureStore(redis=redis, prefix=redis_prefix, timeout_s=2.0, key_ttl_s=45 * 86_400)
    finally:
        await redis.aclose()


async def test_a_batch_sees_its_own_earlier_transactions(store: FeatureStore) -> None:
    batch = [
        t(1, "2018-04-02T10:00:00Z", "10.00"),
        t(2, "2018-04-02T11:00:00Z", "30.00"),
        t(3, "2018-04-05T11:00:00Z", "50.00"),
    ]
    out = await store.compute(batch)
    x = out.matrix
    assert x[:, F["CUSTOMER_ID_NB_TX_1DAY_WINDOW"]].tolist() == [1, 2, 1]
    assert x[:, F["CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"]].tolist() == [10, 20, 50]
    assert x[:, F["CUSTOMER_ID_NB_TX_7DAY_WINDOW"]].tolist() == [1, 2, 3]
    assert x[2, F["CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW"]] == pytest.approx(30.0)
    assert out.flags.tolist() == [ADDED_CUSTOMER | ADDED_TERMINAL] * 3
    assert store.round_trips == 1


async def test_windows_are_open_at_the_start_and_closed_at_the_end(store: FeatureStore) -> None:
    await store.compute([t(1, "2018-04-01T00:00:00Z")])
    exactly_a_day = await store.compute([t(2, "2018-04-02T00:00:00Z")])
    assert exactly_a_day.matrix[0, F["CUSTOMER_ID_NB_TX_1DAY_WINDOW"]] == 1  # (t - 1d, t]: excluded
    assert exactly_a_day.matrix[0, F["CUSTOMER_ID_NB_TX_7DAY_WINDOW"]] == 2


async def test_the_same_id_is_counted_once(store: FeatureStore) -> None:
    a = t(1, "2018-04-02T10:00:00Z")
    first = await store.compute([a])
    again = await store.compute([a, t(2, "2018-04-02T10:00:01Z")])
    assert again.flags.tolist()[0] == 0  # nothing added the second time
    assert again.matrix[0].tolist() == first.matrix[0].tolist()
    assert again.matrix[1, F["CUSTOMER_ID_NB_TX_1DAY_WINDOW"]] == 2


async def test_terminal_windows_are_delayed_and_use_labels(store: FeatureStore) -> None:
    old = [t(i, f"2018-04-0{i}T12:00:00Z", customer=f"c{i}") for i in (1, 2, 3)]
    await store.compute(old)
    await store.apply_labels(
        [("T", "x1", old[0].event_time_s, True), ("T", "x2", old[1].event_time_s, False)]
    )
    now = await store.compute([t(9, "2018-04-10T12:00:00Z", customer="z")])
    x = now.matrix[0]
    # 1-day window (t-8d, t-7d] = (04-02 12:00, 04-03 12:00]: x3 only.
    assert x[F["TERMINAL_ID_NB_TX_1DAY_WINDOW"]] == 1 and x[F["TERMINAL_ID_RISK_1DAY_WINDOW"]] == 0
    # 7-day window (04-2 12:00 - 6d, 04-03 12:00]: x1, x2, x3, one of them fraud.
    assert x[F["TERMINAL_ID_NB_TX_7DAY_WINDOW"]] == 3
    assert x[F["TERMINAL_ID_RISK_7DAY_WINDOW"]] == pytest.approx(1 / 3)


async def test_forget_takes_back_only_what_was_added(store: FeatureStore) -> None:
    a, b = t(1, "2018-04-02T10:00:00Z"), t(2, "2018-04-02T10:00:01Z")
    await store.compute([a])
    out = await store.compute([a, b])
    await store.forget([a, b], out.flags.tolist())
    after = await store.compute([t(3, "2018-04-02T10:00:02Z")])
    assert after.matrix[0, F["CUSTOMER_ID_NB_TX_1DAY_WINDOW"]] == 2  # a (kept) and itself


async def test_unreachable_redis_is_unavailable_not_a_crash() -> None:
    redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        store = FeatureStore(redis=redis, prefix="x", timeout_s=0.5, key_ttl_s=45 * 86_400)
        with pytest.raises(FeatureStoreUnavailableError):
            await store.compute([t(1, "2018-04-02T10:00:00Z")])
        assert await store.ping() is False
    finally:
        await redis.aclose()


async def test_a_command_cancelled_after_sending_never_hands_its_reply_to_the_next(
    redis_url: str, redis_prefix: str
) -> None:
    """C14: one connection in the pool; a command cut by a timeout after it was sent;
    the next command on that pool gets its own reply."""
    pool = BlockingConnectionPool.from_url(redis_url, max_connections=1, timeout=5)
    redis = Redis.from_pool(pool)
    try:
        key = f"{redis_prefix}:c14"
        await redis.set(key, "mine")
        for _ in range(20):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.01):
                    # The server answers this only after 0.1 s: the reply arrives late.
                    await redis.blpop([f"{redis_prefix}:empty"], timeout=0.1)
            assert await redis.get(key) == b"mine"
            assert await redis.ping() is True
    finally:
        await redis.aclose()


def test_parser_is_deterministic_for_content_hash() -> None:
    a = t(1, "2018-04-02T10:00:00Z", "10.0")
    b = t(1, "2018-04-02T10:00:00.000+00:00", "10.00")
    assert (
        a.content_hash == b.content_hash
    )  # the same instant, offset and amount, spelt differently
    c = t(1, "2018-04-02T10:00:00Z", "10.01")
    assert c.content_hash != a.content_hash
    # The same instant in another offset is other content: night and weekend differ.
    d = t(1, "2018-04-02T07:00:00-03:00", "10.00")
    assert d.content_hash != a.content_hash


def test_time_flags_use_local_time() -> None:
    from sankofa.engine.features_online import time_flags

    local = np.array(
        [
            datetime(2018, 4, 7, 6, 59, 59, tzinfo=UTC).timestamp(),
            datetime(2018, 4, 9, 7, 0, tzinfo=UTC).timestamp(),
        ]
    )
    weekend, night = time_flags(local)
    assert weekend.tolist() == [1.0, 0.0] and night.tolist() == [1.0, 0.0]


class Reference:
    """The stream semantics, by brute force: each transaction sees what arrived before
    it, and the labels set before it was processed."""

    def __init__(self) -> None:
        self.cust: dict[str, list[tuple[float, int, str]]] = {}
        self.term: dict[str, list[tuple[float, str]]] = {}
        self.fraud: set[str] = set()

    def see(self, tx: Transaction) -> list[float]:
        day, delay = 86_400, 7 * 86_400
        t = tx.event_time_s
        hist = self.cust.setdefault(tx.customer_ref, [])
        if tx.transaction_id not in {x[2] for x in hist}:
            hist.append((t, tx.amount_cents, tx.transaction_id))
        th = self.term.setdefault(tx.terminal_id, [])
        if tx.transaction_id not in {x[1] for x in th}:
            th.append((t, tx.transaction_id))
        row: list[float] = []
        for w in (1, 7, 30):
            inside = [x for x in hist if 0 <= t - x[0] < w * day]
            row += [len(inside), sum(x[1] for x in inside)]
        for w in (1, 7, 30):
            tin = [x for x in th if delay <= t - x[0] < delay + w * day]
            row += [len(tin), sum(1 for x in tin if x[1] in self.fraud)]
        # Known-label history: the frauds no older than the latest known legitimate record.
        known = [(x[0], x[1] in self.fraud) for x in th if delay <= t - x[0] < delay + 30 * day]
        legit = [time for time, fraud in known if not fraud]
        run = [time for time, fraud in known if fraud and (not legit or time >= max(legit))]
        row += [
            len(run),
            (t - min(run)) / day if run else 0.0,
            (t - max(legit)) / day if legit else 37.0,
        ]
        return row


@pytest.mark.parametrize("seed", range(8))
async def test_windows_equal_the_stream_semantics(store: FeatureStore, seed: int) -> None:
    """Random batches with hot customers, same-second ties, out-of-order times and
    replayed ids, checked window by window against a brute-force model.

    Late arrivals stay within the history kept past the longest window (the
    grace period); a replayed id must add nothing (its features are not
    compared: the scorer answers replays from PostgreSQL, never from here).
    """
    import random

    rng = random.Random(seed)
    clock = datetime(2018, 4, 1, tzinfo=UTC).timestamp()
    ref = Reference()
    sent: list[Transaction] = []
    streaks = legit_known = 0
    for b in range(8):
        batch: list[Transaction] = []
        replayed: list[bool] = []
        for _ in range(rng.randint(1, 60)):
            is_replay = bool(sent) and rng.random() < 0.08
            if is_replay:
                tx = rng.choice(sent[-20:])  # a replayed id
            else:
                clock += rng.choice([0, 0, 1, 600, 3 * 3600, 86_400])
                late = rng.choice([3600, 86_400]) if rng.random() < 0.1 else 0  # out of order
                tx = PARSER.parse(
                    {
                        "transaction_id": f"s{seed}-{len(sent)}",
                        "timestamp": datetime.fromtimestamp(clock - late, UTC).isoformat(),
                        "amount": f"{rng.randint(1, 99999) / 100:.2f}",
                        "customer_id": rng.choice(["hot"] * 5 + [f"c{i}" for i in range(6)]),
                        "terminal_id": rng.choice(["T0", "T1", "T2"]),
                    }
                )
                sent.append(tx)
            batch.append(tx)
            replayed.append(is_replay)
        expected = [ref.see(tx) for tx in batch]
        x = (await store.compute(batch)).matrix
        got = []
        for row in x:  # back from features to raw window counts and sums
            vals: list[float] = []
            for w in range(3):
                vals += [row[3 + 2 * w], round(row[3 + 2 * w] * row[4 + 2 * w] * 100)]
            for w in range(3):
                vals += [row[9 + 2 * w], round(row[9 + 2 * w] * row[10 + 2 * w])]
            vals += row[15:18].tolist()
            got.append(vals)
        keep = [i for i, r in enumerate(replayed) if not r]
        assert [got[i] for i in keep] == [expected[i] for i in keep], f"batch {b}"
        streaks += sum(1 for i in keep if expected[i][12] > 0)
        legit_known += sum(1 for i in keep if expected[i][14] < 37.0)
        if b % 2 == 1:  # label some earlier transactions between batches
            chosen = rng.sample(sent, k=min(5, len(sent)))
            await store.apply_labels(
                [(t.terminal_id, t.transaction_id, t.event_time_s, True) for t in chosen]
            )
            ref.fraud.update(t.transaction_id for t in chosen)
            # ... and take one back (an analyst's correction), so legitimate
            # and fraudulent records interleave in the terminals' histories.
            undone = rng.choice(chosen)
            await store.apply_labels(
                [(undone.terminal_id, undone.transaction_id, undone.event_time_s, False)]
            )
            ref.fraud.discard(undone.transaction_id)
    # The terminal history values were exercised, not only their defaults.
    assert streaks > 0 and legit_known > 0


@pytest.mark.parametrize("seed", range(4))
async def test_loop_and_numpy_windows_agree(store: FeatureStore, seed: int) -> None:
    """Both window implementations, on the same replies: hot keys, late arrivals, labels."""
    import random

    from sankofa.engine.features_online import _windows_loop, _windows_numpy

    rng = random.Random(100 + seed)
    clock = datetime(2018, 4, 1, tzinfo=UTC).timestamp()
    original = store._script
    replies: list[tuple[bytes, np.ndarray]] = []

    async def capture(keys: Any, args: Any) -> Any:
        reply = await original(keys=keys, args=args)
        times = np.frombuffer(args[-1], dtype=store_record_dtype())["t"].copy()
        replies.append((reply, times))
        return reply

    store._script = capture  # type: ignore[assignment]  (only to see the replies)
    sent: list[Transaction] = []
    for _ in range(6):
        batch = []
        for _ in range(rng.randint(20, 200)):
            clock += rng.choice([0, 1, 600, 3600, 6 * 3600])
            late = 86_400 if rng.random() < 0.05 else 0
            tx = PARSER.parse(
                {
                    "transaction_id": f"w{seed}-{len(sent)}",
                    "timestamp": datetime.fromtimestamp(clock - late, UTC).isoformat(),
                    "amount": f"{rng.randint(1, 99999) / 100:.2f}",
                    "customer_id": rng.choice(["hot"] * 4 + [f"c{i}" for i in range(8)]),
                    "terminal_id": rng.choice(["T0", "T1"]),
                }
            )
            sent.append(tx)
            batch.append(tx)
        await store.compute(batch)
        chosen = rng.sample(sent, k=10)
        await store.apply_labels(
            [(t.terminal_id, t.transaction_id, t.event_time_s, True) for t in chosen]
        )
    for reply, times in replies:
        a, fa = _windows_loop(memoryview(reply).cast("d"), times)
        b, fb = _windows_numpy(reply, times)
        assert np.allclose(a, b) and np.array_equal(fa, fb)


def store_record_dtype() -> Any:
    from sankofa.engine.features_online import _BATCH_RECORD

    return _BATCH_RECORD
