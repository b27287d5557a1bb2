"""The online features on a real Redis Cluster (three masters on loopback, made by
deploy/local/sankofa_cluster.py's RedisCluster with the shipped config and init
script) against a single Redis: the same transactions, in the same batches, give
the same features to the bit, and so the same scores; a batch costs one round
trip per master, counted on the wire, and one script call per master, counted
by each master. Skipped without redis-server 7."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

import numpy as np
import pytest
import redis as redis_sync
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection

from conftest import FIXTURES
from deploy_tools import load_local_cluster
from sankofa.engine.features_cluster import (
    HASH_SLOTS,
    ClusterFeatureStore,
    cluster_client,
    slot_group_tags,
)
from sankofa.engine.features_online import FeatureStore
from sankofa.engine.serving import load_model
from sankofa.engine.transaction import Transaction, TransactionParser
from sankofa.sim.data import load_raw

cluster_mod = load_local_cluster()
PARSER = TransactionParser(
    hmac_key=b"cluster-test-key-0123", max_metadata_bytes=2048, max_clock_skew_s=1e12
)
TTL_S = 45 * 86_400
LABEL_DELAY_S = 7 * 86_400


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if cluster_mod.redis7_binary() is None:
        pytest.skip("no redis-server 7 or later (Debian package redis-server)")
    with cluster_mod.RedisCluster(tmp_path_factory.mktemp("rc"), masters=3) as rc:
        yield rc


@pytest.fixture
async def stores(
    redis_cluster: Any, redis_url: str, redis_prefix: str
) -> AsyncIterator[tuple[FeatureStore, ClusterFeatureStore]]:
    single = Redis.from_url(redis_url)
    cluster = cluster_client(redis_cluster.url, max_connections=8, timeout_s=5.0)
    try:
        yield (
            FeatureStore(redis=single, prefix=redis_prefix, timeout_s=5.0, key_ttl_s=TTL_S),
            ClusterFeatureStore(redis=cluster, prefix=redis_prefix, timeout_s=5.0, key_ttl_s=TTL_S),
        )
    finally:
        await single.aclose()
        await cluster.aclose()
        client = redis_sync.RedisCluster.from_url(redis_cluster.url)
        try:
            for key in client.scan_iter(match=f"{redis_prefix}:*", target_nodes="primaries"):
                client.delete(key)
        finally:
            client.close()


def slice_transactions() -> tuple[list[Transaction], np.ndarray[Any, Any]]:
    """The committed slice of published data (about 6,900 transactions over 80 days,
    with its frauds), as the service parses them; and the fraud flags."""
    raw = load_raw(FIXTURES / "handbook-raw-slice.csv.gz")
    txs = []
    for i in range(raw.transaction_id.shape[0]):
        when = np.datetime64(int(raw.tx_datetime[i]), "s").astype(str)
        cents = int(raw.amount_cents[i])
        txs.append(
            PARSER.parse(
                {
                    "transaction_id": f"h{int(raw.transaction_id[i])}",
                    "timestamp": f"{when}-03:00",
                    "amount": f"{cents // 100}.{cents % 100:02d}",
                    "customer_id": str(int(raw.customer_id[i])),
                    "terminal_id": str(int(raw.terminal_id[i])),
                }
            )
        )
    return txs, raw.fraud


def test_each_group_tag_hashes_to_the_middle_of_its_share() -> None:
    for groups in (1, 3, 4, 14, 256):
        tags = slot_group_tags(groups)
        assert len(set(tags)) == groups
        for g, tag in enumerate(tags):
            from redis.crc import key_slot

            lo, hi = g * HASH_SLOTS // groups, (g + 1) * HASH_SLOTS // groups
            assert lo + (hi - lo) // 4 - 1 <= key_slot(tag.encode()) <= hi - (hi - lo) // 4


async def test_three_groups_are_on_the_three_masters(
    stores: tuple[FeatureStore, ClusterFeatureStore],
) -> None:
    _, cluster = stores
    redis = cluster._cluster
    await redis.initialize()
    owners = {redis.nodes_manager.get_node_from_slot(slot).name for slot in cluster._group_slots}
    assert len(owners) == 3 == len(redis.get_primaries())


async def test_the_slice_gives_the_same_features_and_scores_as_one_redis(
    stores: tuple[FeatureStore, ClusterFeatureStore],
) -> None:
    """Batches of 1 to 400 transactions; labels known a week after each transaction
    (so terminal risk uses them); every tenth batch sent again (replays); one batch
    taken back (forget) and sent again."""
    single, cluster = stores
    txs, fraud = slice_transactions()
    model = load_model(None)
    rng = random.Random(7)
    labelled = 0
    i = batches = 0
    previous: list[Transaction] = []
    while i < len(txs):
        batch = txs[i : i + rng.choice((1, 2, 7, 50, 256, 400))]
        i += len(batch)
        batches += 1
        if batches % 10 == 0 and previous:
            batch = previous[: len(previous) // 2] + batch  # replays first
        a = await single.compute(batch)
        b = await cluster.compute(batch)
        assert np.array_equal(a.flags, b.flags)
        assert np.array_equal(a.matrix, b.matrix, equal_nan=True), f"batch {batches}"
        assert np.array_equal(model.predict(a.matrix).scores, model.predict(b.matrix).scores)
        if batches == 5:
            await single.forget(batch, a.flags.tolist())
            await cluster.forget(batch, b.flags.tolist())
            a = await single.compute(batch)
            b = await cluster.compute(batch)
            assert np.array_equal(a.flags, b.flags) and a.flags.all()
            assert np.array_equal(a.matrix, b.matrix, equal_nan=True)
        previous = batch
        # The labels known by the newest time now: a week after their transaction.
        now = batch[-1].event_time_s
        known = []
        while labelled < i and txs[labelled].event_time_s + LABEL_DELAY_S <= now:
            tx = txs[labelled]
            known.append(
                (tx.terminal_id, tx.transaction_id, tx.event_time_s, bool(fraud[labelled]))
            )
            labelled += 1
        if known:
            assert await single.apply_labels(known) == await cluster.apply_labels(known)
    assert batches > 50 and labelled > 5000 and int(fraud.sum()) > 20


class CountingConnection(Connection):
    """A real connection that counts its writes to the server: round trips."""

    writes: ClassVar[dict[str, int]] = {}

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        name = f"{self.host}:{self.port}"
        CountingConnection.writes[name] = CountingConnection.writes.get(name, 0) + 1
        await super().send_packed_command(command, check_health)


def evalsha_calls(rc: Any) -> dict[int, int]:
    out = {}
    for port, _ in rc.nodes:
        stats = rc.command(port, "info", "commandstats")
        line = next((x for x in stats.splitlines() if x.startswith("cmdstat_evalsha:")), "")
        out[port] = int(line.split("calls=")[1].split(",")[0]) if line else 0
    return out


async def test_a_batch_costs_one_round_trip_and_one_script_call_per_master(
    stores: tuple[FeatureStore, ClusterFeatureStore], redis_cluster: Any, redis_prefix: str
) -> None:
    txs, _ = slice_transactions()
    _, cluster = stores
    redis: RedisCluster = cluster._cluster
    await redis.initialize()
    await cluster.compute(txs[:10])  # the script loaded on every master
    for node in redis.get_nodes():
        # The client's own connections, counting from here on (the ones it has and
        # any it opens).
        node.connection_class = CountingConnection
        for connection in node._connections:
            connection.__class__ = CountingConnection
    for size in (3, 256, 1000):
        batch = txs[1000 : 1000 + size]
        CountingConnection.writes = {}
        before_calls, before_trips = evalsha_calls(redis_cluster), cluster.round_trips
        await cluster.compute(batch)
        after_calls = evalsha_calls(redis_cluster)
        per_node = {p: after_calls[p] - before_calls[p] for p in after_calls}
        touched = len(
            {cluster._group(t.customer_ref) for t in batch}
            | {cluster._group(t.terminal_id) for t in batch}
        )
        assert sum(CountingConnection.writes.values()) == touched, size  # one write per node
        assert all(v == 1 for v in CountingConnection.writes.values())
        assert sorted(per_node.values(), reverse=True)[:touched] == [1] * touched
        assert sum(per_node.values()) == touched
        assert cluster.round_trips - before_trips == touched
    assert touched == 3  # a batch of 1,000 touches every master


def test_cluster_setting_is_read() -> None:
    from sankofa.settings import Settings

    s = Settings(redis_cluster=True, redis_url="redis://127.0.0.1:7000/0")
    assert s.redis_cluster and s.redis_cluster_slot_groups == 3
