"""Online features in Redis: one Lua call per batch, in event time, idempotent per id.

Redis keeps each customer's and terminal's recent history as a string of
fixed-size records (``features.lua``); one script call per batch appends the
new transactions (once per id) and returns every history as it stands after
each one. numpy then computes all windows of the whole batch at once: Redis
only copies bytes, and no per-record work happens in Lua or in a Python loop.
Terminal risk reads a sorted set of the terminal's transactions labelled
fraud, fed by ``POST /v1/labels``.
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

from sankofa.engine import constants as C
from sankofa.engine.feature_names import (
    CUSTOMER_WINDOWS_DAYS,
    DAY_S,
    LABEL_DELAY_DAYS,
    N_FEATURES,
    NIGHT_LAST_HOUR,
    TERMINAL_WINDOWS_DAYS,
)
from sankofa.engine.transaction import Transaction
from sankofa.errors import FeatureStoreUnavailableError

ADDED_CUSTOMER: Final = 1
ADDED_TERMINAL: Final = 2
#: History records are 3 words of 8 bytes (see features.lua); the id hash sits
#: at this byte offset of a customer / terminal record.
_RECORD_WORDS: Final = 3
_CUSTOMER_HASH_AT: Final = 16
_TERMINAL_HASH_AT: Final = 8
_HEAD_WORDS: Final = 3
_FRAUD: Final = struct.pack("<d", 1.0)
_NOT_FRAUD: Final = struct.pack("<d", 0.0)
_BATCH_RECORD: Final = np.dtype([("t", "<f8"), ("cents", "<f8"), ("hash", "S8")])

#: Redis failures that mean "unavailable", as opposed to a bug in our call.
REDIS_DOWN: Final = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.ReadOnlyError,
    OSError,
    TimeoutError,
)


def _script(name: str) -> str:
    return resources.files("sankofa.engine").joinpath(name).read_text("utf-8")


def id_hash(transaction_id: str) -> bytes:
    """The 8-byte tag a history record carries to make appends idempotent."""
    return hashlib.blake2b(transaction_id.encode(), digest_size=8).digest()


@dataclass(frozen=True, slots=True)
class OnlineFeatures:
    matrix: npt.NDArray[np.float64]  # (n, N_FEATURES)
    flags: npt.NDArray[np.int64]  # ADDED_* bits per transaction


def time_flags(
    local_time_s: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Weekend and night flags from local time (seconds since 1970 in the local offset)."""
    days = np.floor_divide(local_time_s, DAY_S)
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    hour = np.floor_divide(local_time_s - days * DAY_S, 3600)
    return (weekday >= 5).astype(np.float64), (hour <= NIGHT_LAST_HOUR).astype(np.float64)


def _records(
    words: npt.NDArray[np.float64], starts: npt.NDArray[np.int64], lens: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Concatenate ragged runs of 3-word records (start, length in words) with their run index."""
    total = int(lens.sum())
    if total == 0:
        return np.empty((0, _RECORD_WORDS)), np.empty(0, dtype=np.int64)
    run = np.repeat(np.arange(lens.shape[0]), lens)
    first = np.cumsum(lens) - lens
    index = starts[run] + (np.arange(total) - first[run])
    return words[index].reshape(-1, _RECORD_WORDS), run[::_RECORD_WORDS]


def windows(
    reply: bytes, n: int, event_time_s: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Per transaction: customer (count, cents) and terminal (count, frauds) per window.

    Returns an (n, 2 * (customer windows + terminal windows)) matrix and the flags.
    """
    words = np.frombuffer(reply, dtype="<f8")
    head = words[: n * _HEAD_WORDS].reshape(n, _HEAD_WORDS)
    flags = head[:, 0].astype(np.int64)
    flat = (head[:, 1:3].astype(np.int64) // 8).reshape(-1)  # customer, terminal per tx
    starts = (n * _HEAD_WORDS + np.cumsum(flat) - flat).reshape(n, 2)
    lens = flat.reshape(n, 2)
    nc, nt = len(CUSTOMER_WINDOWS_DAYS), len(TERMINAL_WINDOWS_DAYS)
    out = np.zeros((n, 2 * (nc + nt)))

    cust, crun = _records(words, starts[:, 0], lens[:, 0])
    age = event_time_s[crun] - cust[:, 0]
    for w, days in enumerate(CUSTOMER_WINDOWS_DAYS):
        inside = ((age >= 0) & (age < days * DAY_S)).astype(np.float64)
        out[:, 2 * w] = np.bincount(crun, weights=inside, minlength=n)
        out[:, 2 * w + 1] = np.bincount(crun, weights=inside * cust[:, 1], minlength=n)

    delay = LABEL_DELAY_DAYS * DAY_S
    term, trun = _records(words, starts[:, 1], lens[:, 1])
    tage = event_time_s[trun] - term[:, 0]
    for w, days in enumerate(TERMINAL_WINDOWS_DAYS):
        inside = ((tage >= delay) & (tage < delay + days * DAY_S)).astype(np.float64)
        out[:, 2 * (nc + w)] = np.bincount(trun, weights=inside, minlength=n)
        out[:, 2 * (nc + w) + 1] = np.bincount(trun, weights=inside * term[:, 2], minlength=n)
    return out, flags


def assemble(
    counts: npt.NDArray[np.float64],
    amount_cents: npt.NDArray[np.int64],
    local_time_s: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """The model's input matrix from the window counts and sums (see ``windows``)."""
    n = counts.shape[0]
    nc, nt = len(CUSTOMER_WINDOWS_DAYS), len(TERMINAL_WINDOWS_DAYS)
    x = np.empty((n, N_FEATURES), dtype=np.float64)
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


#: How far back a transaction's windows reach.
CUSTOMER_HORIZON_S: Final = max(CUSTOMER_WINDOWS_DAYS) * DAY_S
TERMINAL_HORIZON_S: Final = (LABEL_DELAY_DAYS + max(TERMINAL_WINDOWS_DAYS)) * DAY_S


class FeatureStore:
    """Computes, corrects and rebuilds the online features kept in Redis."""

    def __init__(self, *, redis: Redis, prefix: str, timeout_s: float, key_ttl_s: int) -> None:
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

    def customer_key(self, customer_ref: str) -> str:
        return f"{self._prefix}:{C.REDIS_LAYOUT}:{C.REDIS_CUSTOMER}:{customer_ref}"

    def terminal_key(self, terminal_id: str) -> str:
        return f"{self._prefix}:{C.REDIS_LAYOUT}:{C.REDIS_TERMINAL}:{terminal_id}"

    async def compute(self, txs: Sequence[Transaction]) -> OnlineFeatures:
        """Count the transactions (once per id) and return their features, in order."""
        n = len(txs)
        if n == 0:
            return OnlineFeatures(np.empty((0, N_FEATURES)), np.empty(0, dtype=np.int64))
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
        counts, flags = windows(reply, n, times)
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

    async def ping(self) -> bool:
        try:
            return bool(await self._run(self._redis.ping()))
        except FeatureStoreUnavailableError:
            return False

    async def _run(self, awaitable: Any) -> Any:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await awaitable
        except REDIS_DOWN as exc:
            raise FeatureStoreUnavailableError(
                f"feature store unavailable: {type(exc).__name__}", retry_after_s=1.0
            ) from exc
