"""Online features in Redis: one Lua call per batch, in event time, idempotent per id.

Redis keeps each customer's and terminal's recent history as a string of
fixed-size records (``features.lua``); one script call per batch appends the
new transactions (once per id) and returns every history as it stands after
each one. numpy then computes all windows of the whole batch at once: Redis
only copies bytes, and no per-record work happens in Lua or in a Python loop.
Terminal risk reads the labels in the terminal's records, set by
``POST /v1/labels``; the same records give the terminal's known-label history
(``engine.terminal_history``), the last three values of the served vector.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from sankofa.engine import constants as C
from sankofa.engine.feature_names import (
    CUSTOMER_WINDOWS_DAYS,
    DAY_S,
    LABEL_DELAY_DAYS,
    N_FEATURES,
    N_SERVED_FEATURES,
    NIGHT_LAST_HOUR,
    TERMINAL_WINDOWS_DAYS,
)
from sankofa.engine.terminal_history import N_HISTORY, from_records, no_legit_age_days
from sankofa.engine.transaction import Transaction
from sankofa.errors import FeatureStoreUnavailableError

ADDED_CUSTOMER: Final = 1
ADDED_TERMINAL: Final = 2
#: History records are 3 words of 8 bytes (see features.lua); the id hash sits
#: at this byte offset of a customer / terminal record.
_RECORD_WORDS: Final = 3
_CUSTOMER_HASH_AT: Final = 16
_TERMINAL_HASH_AT: Final = 8
_HEAD_WORDS: Final = 7
#: How far back a transaction's windows reach.
CUSTOMER_HORIZON_S: Final = max(CUSTOMER_WINDOWS_DAYS) * DAY_S
TERMINAL_HORIZON_S: Final = (LABEL_DELAY_DAYS + max(TERMINAL_WINDOWS_DAYS)) * DAY_S
_WINDOW_REACH_S: Final = float(max(CUSTOMER_HORIZON_S, TERMINAL_HORIZON_S))
_DELAY_S: Final = LABEL_DELAY_DAYS * DAY_S
_CUSTOMER_REACH_S: Final = np.asarray([d * DAY_S for d in CUSTOMER_WINDOWS_DAYS], dtype=np.float64)
_TERMINAL_REACH_S: Final = np.asarray(
    [_DELAY_S + d * DAY_S for d in TERMINAL_WINDOWS_DAYS], dtype=np.float64
)
#: Columns of the window matrix: (count, sum) per customer and terminal window,
#: then the terminal history values.
_N_WINDOW_COLUMNS: Final = 2 * (len(CUSTOMER_WINDOWS_DAYS) + len(TERMINAL_WINDOWS_DAYS))
_FRAUD: Final = struct.pack("<d", 1.0)
_NOT_FRAUD: Final = struct.pack("<d", 0.0)
_BATCH_RECORD: Final = np.dtype([("t", "<f8"), ("cents", "<f8"), ("hash", "S8")])

#: One Redis server, or a Redis Cluster (engine.features_cluster).
RedisClient = Redis | RedisCluster

#: Redis failures that mean "unavailable", as opposed to a bug in our call.
REDIS_DOWN: Final = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.ReadOnlyError,
    OSError,
    TimeoutError,
    # A cluster client's own failures (no node reached, a slot not served):
    # not RedisErrors.
    redis_errors.RedisClusterException,
)


#: Error replies that mean "Redis cannot serve right now", not a bug in our call.
_REDIS_NOT_NOW: Final = frozenset({"BUSY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN"})


def _script(name: str) -> str:
    return resources.files("sankofa.engine").joinpath(name).read_text("utf-8")


def id_hash(transaction_id: str) -> bytes:
    """The 8-byte tag a history record carries to make appends idempotent."""
    return hashlib.blake2b(transaction_id.encode(), digest_size=8).digest()


@dataclass(frozen=True, slots=True)
class OnlineFeatures:
    matrix: npt.NDArray[np.float64]  # (n, N_SERVED_FEATURES)
    flags: npt.NDArray[np.int64]  # ADDED_* bits per transaction


def time_flags(
    local_time_s: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Weekend and night flags from local time (seconds since 1970 in the local offset)."""
    days = np.floor_divide(local_time_s, DAY_S)
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    hour = np.floor_divide(local_time_s - days * DAY_S, 3600)
    return (weekday >= 5).astype(np.float64), (hour <= NIGHT_LAST_HOUR).astype(np.float64)


def _parse_reply(
    reply: bytes,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """(per-transaction heads (n, 7), records per distinct key, all records (r, 3))."""
    words = np.frombuffer(reply, dtype="<f8")
    n, m = int(words[0]), int(words[1])
    heads = words[2 : 2 + _HEAD_WORDS * n].reshape(n, _HEAD_WORDS)
    counts = words[2 + _HEAD_WORDS * n : 2 + _HEAD_WORDS * n + m].astype(np.int64)
    records = words[2 + _HEAD_WORDS * n + m :].reshape(-1, _RECORD_WORDS)
    return heads, counts, records


class _Records:
    """The reply's records (every distinct key's history, in key order), prepared once
    for both kinds of window: key of each record, time order check, and a sorted
    (key, time) composite for binary search."""

    def __init__(
        self,
        records: npt.NDArray[np.float64],
        counts: npt.NDArray[np.int64],
        query_times: npt.NDArray[np.float64],
    ) -> None:
        self.records = records
        self.counts = counts
        self.times = records[:, 0]
        self.start = np.cumsum(counts) - counts
        self.rec_key = np.repeat(np.arange(counts.shape[0]), counts)
        self.unsorted = np.zeros(counts.shape[0], dtype=bool)
        if self.times.shape[0] > 1:
            drops = (np.diff(self.times) < 0) & (self.rec_key[1:] == self.rec_key[:-1])
            self.unsorted[self.rec_key[1:][drops]] = True
        self.composite: npt.NDArray[np.int64] | None = None
        self.base = 0.0
        self.span = 0
        if self.times.shape[0] == 0:
            return
        lowest = min(float(self.times.min()), float(query_times.min())) - _WINDOW_REACH_S
        highest = max(float(self.times.max()), float(query_times.max()))
        span = int((highest - lowest) * 1e6) + 4
        if counts.shape[0] * span < 2**62:
            self.base, self.span = lowest, span
            rel = np.rint((self.times - lowest) * 1e6).astype(np.int64) + 1
            # Binary search needs the whole array sorted: records of keys out of
            # time order (answered the slow way) are flattened so they keep it so.
            self.composite = np.maximum.accumulate(self.rec_key * span + rel)


class _Histories:
    """One kind of history (customers or terminals) of a batch, with window queries.

    A transaction sees the records [first, end) of its key (arrival order). For
    a key whose records are in time order (the normal case), a window is a
    contiguous run found by binary search, and its sum a difference of prefix
    sums: O((records + transactions) log records) for the whole batch. Keys
    with out-of-order records fall back to checking each visible record.
    """

    def __init__(
        self,
        shared: _Records,
        key: npt.NDArray[np.int64],
        first: npt.NDArray[np.int64],
        end: npt.NDArray[np.int64],
        value_column: int,
    ) -> None:
        self._shared = shared
        self.times = shared.times
        self.lo_bound = shared.start[key] + first
        self.hi_bound = shared.start[key] + end
        self.key = key
        # Customer and terminal histories share the reply; the other kind's column
        # holds id-hash bits, not numbers: keep only this kind's records' values.
        mine = np.zeros(shared.counts.shape[0], dtype=bool)
        mine[key] = True
        self.mine = mine[shared.rec_key]
        self.values = np.where(self.mine, shared.records[:, value_column], 0.0)
        self.prefix = np.concatenate(([0.0], np.cumsum(self.values)))
        self.slow = shared.unsorted[key]
        if shared.composite is None:
            self.slow[:] = True

    def _position(
        self, key: npt.NDArray[np.int64], t: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.int64]:
        """Index just past the records of each key with time <= t."""
        shared = self._shared
        assert shared.composite is not None
        rel = np.rint((t - shared.base) * 1e6).astype(np.int64) + 1
        np.minimum(rel, shared.span - 1, out=rel)
        np.maximum(rel, 0, out=rel)
        found: npt.NDArray[np.int64] = np.searchsorted(
            shared.composite, key * shared.span + rel, side="right"
        )
        return found

    def windows(
        self, query: npt.NDArray[np.float64], reach_s: npt.NDArray[np.float64], upto_s: float
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Count and summed values of visible records with time in (query - reach, query - upto],
        for every reach at once: (n, len(reach_s)) each."""
        n, w = query.shape[0], reach_s.shape[0]
        count = np.zeros((n, w))
        total = np.zeros((n, w))
        fast = ~self.slow
        if fast.any():
            q, k = query[fast], self.key[fast]
            m = q.shape[0]
            hi = np.minimum(self._position(k, q - upto_s), self.hi_bound[fast])
            starts = (q[:, None] - reach_s[None, :]).ravel()
            lo = self._position(np.repeat(k, w), starts).reshape(m, w)
            lo = np.maximum(lo, self.lo_bound[fast][:, None])
            hi2 = np.maximum(hi[:, None], lo)
            count[fast] = hi2 - lo
            total[fast] = self.prefix[hi2] - self.prefix[lo]
        if self.slow.any():
            rows = np.flatnonzero(self.slow)
            lens = self.hi_bound[rows] - self.lo_bound[rows]
            run = np.repeat(np.arange(rows.shape[0]), lens)
            offset = np.cumsum(lens) - lens
            idx = self.lo_bound[rows][run] + (np.arange(int(lens.sum())) - offset[run])
            age = query[rows][run] - self.times[idx]
            values = self.values[idx]
            for c, reach in enumerate(reach_s.tolist()):
                inside = ((age >= upto_s) & (age < reach)).astype(np.float64)
                count[rows, c] = np.bincount(run, weights=inside, minlength=rows.shape[0])
                total[rows, c] = np.bincount(run, weights=inside * values, minlength=rows.shape[0])
        return count, total

    def known_history(
        self, query: npt.NDArray[np.float64], reach_s: float, upto_s: float
    ) -> npt.NDArray[np.float64]:
        """Terminal histories only: (n, 3) known-label history values
        (``engine.terminal_history``) over records with time in (query - reach, query - upto].

        In time order the records after the last legitimate one are frauds,
        apart from frauds sharing that record's second, which a same-second
        search adds back; so prefix sums and binary searches give all three.
        """
        n = query.shape[0]
        out = np.zeros((n, N_HISTORY))
        out[:, 2] = no_legit_age_days()
        fast = ~self.slow
        if fast.any():
            shared = self._shared
            assert shared.composite is not None
            q, k = query[fast], self.key[fast]
            hi = np.minimum(self._position(k, q - upto_s), self.hi_bound[fast])
            lo = np.maximum(self._position(k, q - reach_s), self.lo_bound[fast])
            hi = np.maximum(hi, lo)
            legit = np.zeros(self.values.shape[0] + 1, dtype=np.int64)
            np.cumsum(self.mine & (self.values == 0.0), out=legit[1:])
            has_legit = legit[hi] > legit[lo]
            last = np.maximum(np.searchsorted(legit, legit[hi], side="left") - 1, 0)
            same_second = np.searchsorted(shared.composite, shared.composite[last], side="left")
            start = np.where(has_legit, np.maximum(same_second, lo), lo)
            streak = self.prefix[hi] - self.prefix[start]
            # The earliest fraud at or after ``start``: where the fraud count first grows.
            first_fraud = np.searchsorted(self.prefix, self.prefix[start] + 0.5, side="left") - 1
            first_fraud = np.clip(first_fraud, 0, max(self.times.shape[0] - 1, 0))
            rows = np.zeros((q.shape[0], N_HISTORY))
            rows[:, 0] = streak
            if self.times.shape[0]:
                np.divide(q - self.times[first_fraud], DAY_S, out=rows[:, 1], where=streak > 0)
                rows[:, 2] = np.where(
                    has_legit, (q - self.times[last]) / DAY_S, no_legit_age_days()
                )
            out[fast] = rows
        for i in np.flatnonzero(self.slow).tolist():
            idx = range(int(self.lo_bound[i]), int(self.hi_bound[i]))
            records = [(float(self.times[j]), float(self.values[j])) for j in idx]
            out[i] = from_records(float(query[i]), records)
        return out


def windows(
    reply: bytes, event_time_s: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Per transaction: customer (count, cents) and terminal (count, frauds) per window,
    then the terminal's known-label history (``engine.terminal_history``).

    Returns an (n, 2 * (customer windows + terminal windows) + 3) matrix and the flags.
    Small batches take a plain loop: numpy's fixed cost per call (tens of calls
    here) outweighs its speed below a few thousand records.
    """
    words = memoryview(reply).cast("d")
    n = int(words[0])
    visible = 0
    for i in range(n):
        h = 2 + _HEAD_WORDS * i
        visible += int(words[h + 3] - words[h + 2] + words[h + 6] - words[h + 5])
    if visible <= _LOOP_MAX_RECORDS:
        return _windows_loop(words, event_time_s)
    return _windows_numpy(reply, event_time_s)


#: Up to this many visible records, the plain loop beats numpy (measured in
#: benchmarks/test_kernels.py: test_feature_windows_*).
_LOOP_MAX_RECORDS: Final = 1500


def _windows_loop(
    words: memoryview[float], event_time_s: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    n, m = int(words[0]), int(words[1])
    counts_at = 2 + _HEAD_WORDS * n
    starts = [0] * m
    total = 0
    for k in range(m):
        starts[k] = total
        total += int(words[counts_at + k])
    records_at = counts_at + m
    creach = [float(r) for r in _CUSTOMER_REACH_S]
    treach = [float(r) for r in _TERMINAL_REACH_S]
    delay = float(_DELAY_S)
    nc, nt = len(creach), len(treach)
    longest = max(treach)
    out = np.zeros((n, _N_WINDOW_COLUMNS + N_HISTORY))
    flags = np.zeros(n, dtype=np.int64)
    times = event_time_s.tolist()
    for i in range(n):
        h = 2 + _HEAD_WORDS * i
        flags[i] = int(words[h])
        t = times[i]
        row = [0.0] * (2 * (nc + nt))
        known: list[tuple[float, float]] = []
        ck, cf, ce = int(words[h + 1]), int(words[h + 2]), int(words[h + 3])
        at = records_at + 3 * starts[ck]
        for r in range(cf, ce):
            age = t - words[at + 3 * r]
            if age < 0:
                continue
            cents = words[at + 3 * r + 1]
            for w in range(nc):
                if age < creach[w]:
                    row[2 * w] += 1
                    row[2 * w + 1] += cents
        tk, tf, te = int(words[h + 4]), int(words[h + 5]), int(words[h + 6])
        at = records_at + 3 * starts[tk]
        for r in range(tf, te):
            age = t - words[at + 3 * r]
            if age < delay:
                continue
            fraud = words[at + 3 * r + 2]
            for w in range(nt):
                if age < treach[w]:
                    row[2 * (nc + w)] += 1
                    row[2 * (nc + w) + 1] += fraud
            if age < longest:
                known.append((words[at + 3 * r], fraud))
        out[i] = [*row, *from_records(t, known)]
    return out, flags


def _windows_numpy(
    reply: bytes, event_time_s: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    heads, counts, records = _parse_reply(reply)
    n = heads.shape[0]
    h = heads.astype(np.int64)
    nc = len(CUSTOMER_WINDOWS_DAYS)
    out = np.zeros((n, _N_WINDOW_COLUMNS + N_HISTORY))
    shared = _Records(records, counts, event_time_s)
    customers = _Histories(shared, h[:, 1], h[:, 2], h[:, 3], 1)
    count, total = customers.windows(event_time_s, _CUSTOMER_REACH_S, 0.0)
    out[:, 0 : 2 * nc : 2], out[:, 1 : 2 * nc : 2] = count, total
    terminals = _Histories(shared, h[:, 4], h[:, 5], h[:, 6], 2)
    count, total = terminals.windows(event_time_s, _TERMINAL_REACH_S, float(_DELAY_S))
    out[:, 2 * nc : _N_WINDOW_COLUMNS : 2] = count
    out[:, 2 * nc + 1 : _N_WINDOW_COLUMNS : 2] = total
    out[:, _N_WINDOW_COLUMNS:] = terminals.known_history(
        event_time_s, float(_TERMINAL_REACH_S.max()), float(_DELAY_S)
    )
    return out, h[:, 0]


def assemble(
    counts: npt.NDArray[np.float64],
    amount_cents: npt.NDArray[np.int64],
    local_time_s: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """The served input matrix from the window counts and sums (see ``windows``):
    the handbook's 15 values, then the terminal history values as they come."""
    n = counts.shape[0]
    nc, nt = len(CUSTOMER_WINDOWS_DAYS), len(TERMINAL_WINDOWS_DAYS)
    if counts.shape[1] != _N_WINDOW_COLUMNS + N_HISTORY:
        raise ValueError(f"counts must have {_N_WINDOW_COLUMNS + N_HISTORY} columns")
    x = np.empty((n, N_SERVED_FEATURES), dtype=np.float64)
    x[:, N_FEATURES:] = counts[:, _N_WINDOW_COLUMNS:]
    x[:, 0] = amount_cents / 100.0
    x[:, 1], x[:, 2] = time_flags(local_time_s)
    for w in range(nc):
        count, cents = counts[:, 2 * w], counts[:, 2 * w + 1]
        x[:, 3 + 2 * w] = count
        x[:, 4 + 2 * w] = np.divide(cents / 100.0, count, out=np.zeros(n), where=count > 0)
    for w in range(nt):
        count, frauds = counts[:, 2 * (nc + w)], counts[:, 2 * (nc + w) + 1]
        x[:, 3 + 2 * nc + 2 * w] = count
        x[:, 4 + 2 * nc + 2 * w] = np.divide(frauds, count, out=np.zeros(n), where=count > 0)
    return x


def degraded_matrix(txs: Sequence[Transaction]) -> npt.NDArray[np.float64]:
    """The served vector without Redis: the transaction's own values (amount, weekend,
    night) and the history unknown (NaN), which the model's fallback fills and flags."""
    n = len(txs)
    x = np.full((n, N_SERVED_FEATURES), np.nan)
    if n:
        cents = np.fromiter((tx.amount_cents for tx in txs), dtype=np.float64, count=n)
        local = np.fromiter((tx.local_time_s for tx in txs), dtype=np.float64, count=n)
        x[:, 0] = cents / 100.0
        x[:, 1], x[:, 2] = time_flags(local)
    return x


class FeatureStore:
    """Computes, corrects and rebuilds the online features kept in Redis."""

    def __init__(
        self, *, redis: RedisClient, prefix: str, timeout_s: float, key_ttl_s: int
    ) -> None:
        if not prefix:
            raise ValueError("prefix must not be empty")
        if not timeout_s > 0:
            raise ValueError("timeout_s must be > 0")
        if key_ttl_s <= TERMINAL_HORIZON_S + C.FEATURE_TRIM_GRACE_S:
            raise ValueError("key_ttl_s must exceed the longest history kept (39 days)")
        self._redis = redis
        self._prefix = prefix
        self._timeout_s = timeout_s
        self._key_ttl_s = key_ttl_s
        self._fixed_args: list[Any] = [
            CUSTOMER_HORIZON_S + C.FEATURE_TRIM_GRACE_S,
            TERMINAL_HORIZON_S + C.FEATURE_TRIM_GRACE_S,
            key_ttl_s,
        ]
        self._script = redis.register_script(_script("features.lua"))
        self._forget = redis.register_script(_script("forget.lua"))
        self._label = redis.register_script(_script("labels.lua"))
        self.round_trips = 0
        #: Says the histories under this prefix and layout are complete (engine.rebuild).
        self.marker_key = f"{prefix}:{C.REDIS_LAYOUT}:built"

    def customer_key(self, customer_ref: str) -> str:
        return f"{self._prefix}:{C.REDIS_LAYOUT}:{C.REDIS_CUSTOMER}:{customer_ref}"

    def terminal_key(self, terminal_id: str) -> str:
        return f"{self._prefix}:{C.REDIS_LAYOUT}:{C.REDIS_TERMINAL}:{terminal_id}"

    async def compute(self, txs: Sequence[Transaction]) -> OnlineFeatures:
        """Count the transactions (once per id) and return their features, in order."""
        n = len(txs)
        if n == 0:
            return OnlineFeatures(np.empty((0, N_SERVED_FEATURES)), np.empty(0, dtype=np.int64))
        keys: list[str] = []
        records = np.empty(n, dtype=_BATCH_RECORD)
        times = np.empty(n)
        cents = np.empty(n, dtype=np.int64)
        local = np.empty(n)
        hashes: list[bytes] = []
        for i, tx in enumerate(txs):
            keys.append(self.customer_key(tx.customer_ref))
            keys.append(self.terminal_key(tx.terminal_id))
            times[i] = tx.event_time_s
            cents[i] = tx.amount_cents
            local[i] = tx.local_time_s
            hashes.append(id_hash(tx.transaction_id))
        records["t"] = times
        records["cents"] = cents
        records["hash"] = hashes
        self.round_trips += 1
        reply = await self._run(
            self._script(keys=keys, args=[*self._fixed_args, records.tobytes()])
        )
        counts, flags = windows(reply, times)
        return OnlineFeatures(assemble(counts, cents, local), flags)

    async def forget(self, txs: Sequence[Transaction], flags: Sequence[int]) -> None:
        """Undo what ``compute`` added for transactions that were not stored after all."""
        keys: list[str] = []
        args: list[Any] = []
        for tx, f in zip(txs, flags, strict=True):
            h = id_hash(tx.transaction_id)
            if f & ADDED_CUSTOMER:
                keys.append(self.customer_key(tx.customer_ref))
                args += [h, _CUSTOMER_HASH_AT]
            if f & ADDED_TERMINAL:
                keys.append(self.terminal_key(tx.terminal_id))
                args += [h, _TERMINAL_HASH_AT]
        if keys:
            await self._run(self._forget(keys=keys, args=args))

    async def apply_labels(self, labels: Sequence[tuple[str, str, float, bool]]) -> int:
        """Set (terminal_id, transaction_id, event_time_s, fraud) labels in the terminals'
        histories; returns how many transactions were still there to label."""
        if not labels:
            return 0
        keys = [self.terminal_key(terminal_id) for terminal_id, _, _, _ in labels]
        args: list[Any] = []
        for _, txid, _, fraud in labels:
            args += [id_hash(txid), _FRAUD if fraud else _NOT_FRAUD]
        written: int = await self._run(self._label(keys=keys, args=args))
        return written

    async def all_nodes_answer(self) -> bool:
        """Whether every server holding histories answers, beyond the one a command just
        reached: always, with a single server (a cluster asks each master)."""
        return True

    async def ping(self) -> bool:
        try:
            return bool(await self._run(self._redis.ping()))
        except (FeatureStoreUnavailableError, redis_errors.RedisError):
            return False

    async def _run(self, awaitable: Any) -> Any:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await awaitable
        except REDIS_DOWN as exc:
            raise FeatureStoreUnavailableError(
                f"feature store unavailable: {type(exc).__name__}", retry_after_s=1.0
            ) from exc
        except redis_errors.ResponseError as exc:
            # BUSY (a script running past lua-time-limit), LOADING, MASTERDOWN,
            # CLUSTERDOWN, TRYAGAIN: Redis is there but cannot serve now.
            if str(exc).split(" ", 1)[0] in _REDIS_NOT_NOW:
                raise FeatureStoreUnavailableError(
                    f"feature store unavailable: {str(exc)[:80]}", retry_after_s=1.0
                ) from exc
            raise
