"""Online features on a Redis Cluster: hash-tagged slot groups, one round trip per node.

A Lua script may only touch keys of one hash slot, and a transaction's customer
and terminal are two unrelated keys. So every history key carries a hash tag
naming one of ``slot_groups`` groups (``{prefix}:f2:{3.1.4}:c:{customer_ref}``;
the group from a CRC of the customer or terminal), and the batch is split by
group, not by transaction: each group's customer and terminal histories go
to ``features_group.lua`` (features.lua's per-key work, with each history an
item of its own) in one call. The calls go through one cluster pipeline, which
sends each node its calls in one write and reads them in one go, all nodes at
once: a batch costs one round trip per master it touches and one script call
per group, whatever its size. The replies are joined back into the reply
features.lua gives, so the windows are computed by the very same code: the
features are those of a single Redis, to the bit (tests/cluster/test_redis_cluster_service.py).

Each group's tag hashes to a slot in the middle of the group's even share of
the 16384 slots, where ``redis-cli --cluster create`` puts one master per share:
with as many groups as masters (the default 3, the shipped topology) each master
holds one group and a batch costs one script call per master. More masters need
more groups (``SANKOFA_REDIS_CLUSTER_SLOT_GROUPS``, a multiple of the masters):
a slot, hence a group, is the smallest thing resharding can move. The group
count is part of the key layout, and of the rebuild marker: a new count starts
from empty histories, which the service rebuilds from PostgreSQL by itself.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.crc import key_slot

from sankofa.engine import constants as C
from sankofa.engine.feature_names import N_SERVED_FEATURES
from sankofa.engine.features_online import (
    _BATCH_RECORD,
    _CUSTOMER_HASH_AT,
    _FRAUD,
    _HEAD_WORDS,
    _NOT_FRAUD,
    _TERMINAL_HASH_AT,
    ADDED_CUSTOMER,
    ADDED_TERMINAL,
    FeatureStore,
    OnlineFeatures,
    RedisClient,
    _script,
    assemble,
    id_hash,
    windows,
)
from sankofa.engine.transaction import Transaction
from sankofa.errors import FeatureStoreUnavailableError

HASH_SLOTS: Final = 16384
#: One script call: its slot group, its keys (all tagged to that group), its arguments.
_Call = tuple[int, list[str], list[Any]]
#: features_group.lua's reply: doubles per item head.
_ITEM_WORDS: Final = 4
#: A cluster client gives up on a command after this many retries (each after
#: a topology refresh): a master that died fails the batch in tens of
#: milliseconds, and the service scores on degraded features until the cluster
#: has failed over, instead of holding batches for the whole failover.
_RETRIES: Final = 2
_BACKOFF_CAP_S: Final = 0.05
_BACKOFF_BASE_S: Final = 0.01


def slot_group_tags(groups: int) -> list[str]:
    """One hash tag per group, each hashing to a slot near the middle of the group's
    even share of the slots (within a quarter of the share either side)."""
    if not 1 <= groups <= 1024:
        raise ValueError(f"groups must be 1..1024, got {groups}")
    tags = []
    for g in range(groups):
        lo, hi = g * HASH_SLOTS // groups, (g + 1) * HASH_SLOTS // groups
        mid, reach = (lo + hi) // 2, (hi - lo) // 4
        i = 0
        while abs(key_slot(f"{groups}.{g}.{i}".encode()) - mid) > reach:
            i += 1
        tags.append(f"{groups}.{g}.{i}")
    return tags


def cluster_client(url: str, *, max_connections: int, timeout_s: float) -> RedisCluster:
    """A Redis Cluster client from any node's URL (it learns the others from it)."""
    return RedisCluster.from_url(
        url,
        max_connections=max_connections,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(ExponentialBackoff(cap=_BACKOFF_CAP_S, base=_BACKOFF_BASE_S), _RETRIES),
    )


def redis_client(url: str, *, cluster: bool, max_connections: int, timeout_s: float) -> RedisClient:
    """The client the service uses: a cluster client, or one pool to one server."""
    if cluster:
        return cluster_client(url, max_connections=max_connections, timeout_s=timeout_s)
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
    )
    # from_pool: the client owns the pool, so aclose() closes its connections too.
    return Redis.from_pool(pool)


def feature_store(
    redis: RedisClient, *, prefix: str, timeout_s: float, key_ttl_s: int, slot_groups: int
) -> FeatureStore:
    """The feature store for that client: grouped keys on a cluster."""
    if isinstance(redis, RedisCluster):
        return ClusterFeatureStore(
            redis=redis,
            prefix=prefix,
            timeout_s=timeout_s,
            key_ttl_s=key_ttl_s,
            slot_groups=slot_groups,
        )
    return FeatureStore(redis=redis, prefix=prefix, timeout_s=timeout_s, key_ttl_s=key_ttl_s)


class ClusterFeatureStore(FeatureStore):
    """``FeatureStore`` on a Redis Cluster: the same features, one round trip per node."""

    def __init__(
        self,
        *,
        redis: RedisCluster,
        prefix: str,
        timeout_s: float,
        key_ttl_s: int,
        slot_groups: int = 3,
    ) -> None:
        super().__init__(redis=redis, prefix=prefix, timeout_s=timeout_s, key_ttl_s=key_ttl_s)
        self._cluster = redis
        self._groups = slot_groups
        self._tags = slot_group_tags(slot_groups)
        self._group_slots = [key_slot(tag.encode()) for tag in self._tags]
        self._group_script = redis.register_script(_script("features_group.lua"))
        self.marker_key = f"{prefix}:{C.REDIS_LAYOUT}:g{slot_groups}:built"
        #: Script calls made (one per slot group a call touches).
        self.script_calls = 0

    def _group(self, name: str) -> int:
        return zlib.crc32(name.encode()) % self._groups

    def _key(self, kind: str, name: str, group: int) -> str:
        return f"{self._prefix}:{C.REDIS_LAYOUT}:{{{self._tags[group]}}}:{kind}:{name}"

    def customer_key(self, customer_ref: str) -> str:
        return self._key(C.REDIS_CUSTOMER, customer_ref, self._group(customer_ref))

    def terminal_key(self, terminal_id: str) -> str:
        return self._key(C.REDIS_TERMINAL, terminal_id, self._group(terminal_id))

    async def compute(self, txs: Sequence[Transaction]) -> OnlineFeatures:
        n = len(txs)
        if n == 0:
            return OnlineFeatures(np.empty((0, N_SERVED_FEATURES)), np.empty(0, dtype=np.int64))
        records = np.empty(n, dtype=_BATCH_RECORD)
        times = np.empty(n)
        cents = np.empty(n, dtype=np.int64)
        local = np.empty(n)
        cgroup = np.empty(n, dtype=np.int64)
        tgroup = np.empty(n, dtype=np.int64)
        ckeys: list[str] = []
        tkeys: list[str] = []
        hashes: list[bytes] = []
        for i, tx in enumerate(txs):
            cgroup[i] = cg = self._group(tx.customer_ref)
            tgroup[i] = tg = self._group(tx.terminal_id)
            ckeys.append(self._key(C.REDIS_CUSTOMER, tx.customer_ref, cg))
            tkeys.append(self._key(C.REDIS_TERMINAL, tx.terminal_id, tg))
            times[i] = tx.event_time_s
            cents[i] = tx.amount_cents
            local[i] = tx.local_time_s
            hashes.append(id_hash(tx.transaction_id))
        records["t"] = times
        records["cents"] = cents
        records["hash"] = hashes
        # Per group: its customer items, then its terminal items, each in batch
        # order (a history's items keep the batch's order, which is all the
        # script's per-key work depends on).
        plan: list[tuple[int, np.ndarray[Any, Any], np.ndarray[Any, Any]]] = []
        calls: list[_Call] = []
        for g in sorted(set(cgroup.tolist()) | set(tgroup.tolist())):
            ci = np.flatnonzero(cgroup == g)
            ti = np.flatnonzero(tgroup == g)
            keys = [ckeys[i] for i in ci.tolist()] + [tkeys[i] for i in ti.tolist()]
            batch = records[ci].tobytes() + records[ti].tobytes()
            kinds = b"c" * ci.shape[0] + b"t" * ti.shape[0]
            plan.append((g, ci, ti))
            calls.append((g, keys, [*self._fixed_args, batch, kinds]))
        replies = await self._run(self._eval_all(self._group_script, calls))
        reply = _join(n, plan, replies)
        counts, flags = windows(reply, times)
        return OnlineFeatures(assemble(counts, cents, local), flags)

    async def forget(self, txs: Sequence[Transaction], flags: Sequence[int]) -> None:
        by_group: dict[int, _Call] = {}
        for tx, f in zip(txs, flags, strict=True):
            h = id_hash(tx.transaction_id)
            if f & ADDED_CUSTOMER:
                g = self._group(tx.customer_ref)
                _, keys, args = by_group.setdefault(g, (g, [], []))
                keys.append(self._key(C.REDIS_CUSTOMER, tx.customer_ref, g))
                args += [h, _CUSTOMER_HASH_AT]
            if f & ADDED_TERMINAL:
                g = self._group(tx.terminal_id)
                _, keys, args = by_group.setdefault(g, (g, [], []))
                keys.append(self._key(C.REDIS_TERMINAL, tx.terminal_id, g))
                args += [h, _TERMINAL_HASH_AT]
        if by_group:
            await self._run(self._eval_all(self._forget, list(by_group.values())))

    async def apply_labels(self, labels: Sequence[tuple[str, str, float, bool]]) -> int:
        by_group: dict[int, _Call] = {}
        for terminal_id, txid, _, fraud in labels:
            g = self._group(terminal_id)
            _, keys, args = by_group.setdefault(g, (g, [], []))
            keys.append(self._key(C.REDIS_TERMINAL, terminal_id, g))
            args += [id_hash(txid), _FRAUD if fraud else _NOT_FRAUD]
        if not by_group:
            return 0
        written = await self._run(self._eval_all(self._label, list(by_group.values())))
        return sum(int(w) for w in written)

    async def ping(self) -> bool:
        return await self.all_nodes_answer()

    async def all_nodes_answer(self) -> bool:
        """Every master answers a PING (one round trip each, all at once)."""
        try:
            await self._run(self._cluster.ping(target_nodes=RedisCluster.PRIMARIES))
            return True
        except (FeatureStoreUnavailableError, redis_errors.RedisError):
            return False

    async def _eval_all(self, script: Any, calls: list[_Call]) -> list[Any]:
        """Run one script call per (group, keys, args), each call's keys in its group's
        slot, through one pipeline: one round trip per node. Raises the first error.

        Each call is sent to its group's node as the client last saw the cluster, which
        spares the client checking that every key of a call hashes to one slot (ours do,
        by their tag): a moved slot is redirected (MOVED), and a retry after a failure
        routes by the keys.
        """
        await self._cluster.initialize()  # at once unless a refresh is due
        manager = self._cluster.nodes_manager
        nodes = [manager.get_node_from_slot(self._group_slots[g]) for g, _, _ in calls]
        pipe = self._cluster.pipeline(transaction=False)
        for node, (_, keys, args) in zip(nodes, calls, strict=True):
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args, target_nodes=node)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        self.round_trips += len({node.name for node in nodes})
        self.script_calls += len(calls)
        missing = [i for i, r in enumerate(results) if isinstance(r, redis_errors.NoScriptError)]
        if missing:
            # A node that never ran the script (new, restarted, a promoted replica):
            # EVAL runs it and leaves it cached there. NOSCRIPT means it did not run.
            pipe = self._cluster.pipeline(transaction=False)
            for i in missing:
                _, keys, args = calls[i]
                pipe.eval(script.script, len(keys), *keys, *args)
            again = await pipe.execute(raise_on_error=False)
            for i, r in zip(missing, again, strict=True):
                results[i] = r
            self.round_trips += len({nodes[i].name for i in missing})
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return results

    async def _run(self, awaitable: Any) -> Any:
        try:
            return await super()._run(awaitable)
        except Exception as exc:
            if _unavailable(exc):
                raise FeatureStoreUnavailableError(
                    f"feature store unavailable: {type(exc).__name__}", retry_after_s=1.0
                ) from exc
            raise


def _unavailable(exc: BaseException) -> bool:
    """Cluster failures that mean "not now": the cluster is down or failing over, a
    slot is moving or not served, or no node answered a topology refresh."""
    return isinstance(
        exc,
        redis_errors.RedisClusterException
        | redis_errors.ClusterError
        | redis_errors.TryAgainError
        | redis_errors.AskError,
    )


def _join(
    n: int,
    plan: list[tuple[int, np.ndarray[Any, Any], np.ndarray[Any, Any]]],
    replies: list[bytes],
) -> bytes:
    """The groups' replies as one features.lua reply for the whole batch."""
    heads = np.zeros((n, _HEAD_WORDS))
    counts: list[np.ndarray[Any, Any]] = []
    bodies: list[bytes] = []
    base = 0
    for (_, ci, ti), reply in zip(plan, replies, strict=True):
        words = np.frombuffer(reply, dtype="<f8")
        items, m = int(words[0]), int(words[1])
        item = words[2 : 2 + _ITEM_WORDS * items].reshape(items, _ITEM_WORDS).copy()
        item[:, 1] += base
        nc = ci.shape[0]
        heads[ci, 0] += item[:nc, 0]  # ADDED_CUSTOMER
        heads[ci, 1:4] = item[:nc, 1:4]
        heads[ti, 0] += 2 * item[nc:, 0]  # ADDED_TERMINAL
        heads[ti, 4:7] = item[nc:, 1:4]
        counts.append(words[2 + _ITEM_WORDS * items : 2 + _ITEM_WORDS * items + m])
        bodies.append(reply[8 * (2 + _ITEM_WORDS * items + m) :])
        base += m
    head = np.asarray([n, base], dtype="<f8")
    return b"".join(
        [head.tobytes(), heads.astype("<f8").tobytes(), np.concatenate(counts).tobytes(), *bodies]
    )
