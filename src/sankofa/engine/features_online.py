"""Online features in Redis: one Lua call per batch, in event time, idempotent per id.

The script (``features.lua``) adds each transaction to its customer's and
terminal's sorted sets (score = event time) and reads back the window counts
and sums; numpy turns those into the model's input vector (``FEATURE_NAMES``).
Terminal risk reads a separate set of the terminal's transactions labelled
fraud, fed by ``POST /v1/labels``.
"""

from __future__ import annotations

import asyncio
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

_NC: Final = len(CUSTOMER_WINDOWS_DAYS)
_NT: Final = len(TERMINAL_WINDOWS_DAYS)
#: Integers the script returns per transaction: flags, (count, cents) per
#: customer window, (count, frauds) per terminal window.
_PER_TX: Final = 1 + 2 * _NC + 2 * _NT
ADDED_CUSTOMER: Final = 1
ADDED_TERMINAL: Final = 2

#: Redis failures that mean "unavailable", as opposed to a bug in our call.
REDIS_DOWN: Final = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.ReadOnlyError,
    OSError,
    TimeoutError,
)


def _script() -> str:
    return resources.files("sankofa.engine").joinpath("features.lua").read_text("utf-8")


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


def assemble(
    raw: npt.NDArray[np.int64],
    amount_cents: npt.NDArray[np.int64],
    local_time_s: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """The model's input matrix from the script's integers (shape (n, _PER_TX))."""
    n = raw.shape[0]
    x = np.empty((n, N_FEATURES), dtype=np.float64)
    x[:, 0] = amount_cents / 100.0
    x[:, 1], x[:, 2] = time_flags(local_time_s)
    for w in range(_NC):
        count = raw[:, 1 + 2 * w].astype(np.float64)
        cents = raw[:, 2 + 2 * w].astype(np.float64)
        x[:, 3 + 2 * w] = count
        x[:, 4 + 2 * w] = np.divide(cents / 100.0, count, out=np.zeros(n), where=count > 0)
    base = 1 + 2 * _NC
    for w in range(_NT):
        count = raw[:, base + 2 * w].astype(np.float64)
        frauds = raw[:, base + 1 + 2 * w].astype(np.float64)
        x[:, 3 + 2 * _NC + 2 * w] = count
        x[:, 4 + 2 * _NC + 2 * w] = np.divide(frauds, count, out=np.zeros(n), where=count > 0)
    return x


class FeatureStore:
    """Computes, corrects and rebuilds the online features kept in Redis."""

    def __init__(self, *, redis: Redis, prefix: str, timeout_s: float, key_ttl_s: int) -> None:
        if not prefix:
            raise ValueError("prefix must not be empty")
        if not timeout_s > 0:
            raise ValueError("timeout_s must be > 0")
        if key_ttl_s < 1:
            raise ValueError("key_ttl_s must be >= 1")
        self._redis = redis
        self._prefix = prefix
        self._timeout_s = timeout_s
        self._fixed_args: list[Any] = [
            DAY_S,
            LABEL_DELAY_DAYS * DAY_S,
            C.FEATURE_TRIM_GRACE_S,
            key_ttl_s,
            _NC,
            *CUSTOMER_WINDOWS_DAYS,
            _NT,
            *TERMINAL_WINDOWS_DAYS,
        ]
        self._script = redis.register_script(_script())
        self.round_trips = 0

    def customer_key(self, customer_ref: str) -> str:
        return f"{self._prefix}:{C.REDIS_CUSTOMER}:{customer_ref}"

    def terminal_key(self, terminal_id: str) -> str:
        return f"{self._prefix}:{C.REDIS_TERMINAL}:{terminal_id}"

    def fraud_key(self, terminal_id: str) -> str:
        return f"{self._prefix}:{C.REDIS_TERMINAL_FRAUD}:{terminal_id}"

    async def compute(self, txs: Sequence[Transaction]) -> OnlineFeatures:
        """Count the transactions (once per id) and return their features, in order."""
        n = len(txs)
        if n == 0:
            return OnlineFeatures(np.empty((0, N_FEATURES)), np.empty(0, dtype=np.int64))
        keys: list[str] = []
        args: list[Any] = list(self._fixed_args)
        for tx in txs:
            keys.append(self.customer_key(tx.customer_ref))
            keys.append(self.terminal_key(tx.terminal_id))
            keys.append(self.fraud_key(tx.terminal_id))
            args.append(tx.transaction_id)
            args.append(repr(tx.event_time_s))
            args.append(tx.amount_cents)
        reply = await self._call(self._script, keys, args)
        raw = np.asarray(reply, dtype=np.int64).reshape(n, _PER_TX)
        cents = np.fromiter((tx.amount_cents for tx in txs), dtype=np.int64, count=n)
        local = np.fromiter((tx.local_time_s for tx in txs), dtype=np.float64, count=n)
        return OnlineFeatures(assemble(raw, cents, local), raw[:, 0].copy())

    async def forget(self, txs: Sequence[Transaction], flags: Sequence[int]) -> None:
        """Undo what ``compute`` added for transactions that were not stored after all."""
        pipe = self._redis.pipeline(transaction=False)
        queued = 0
        for tx, f in zip(txs, flags, strict=True):
            if f & ADDED_CUSTOMER:
                pipe.zrem(
                    self.customer_key(tx.customer_ref), f"{tx.amount_cents}:{tx.transaction_id}"
                )
                queued += 1
            if f & ADDED_TERMINAL:
                pipe.zrem(self.terminal_key(tx.terminal_id), tx.transaction_id)
                queued += 1
        if queued:
            await self._run(pipe.execute())

    async def apply_labels(self, labels: Sequence[tuple[str, str, float, bool]]) -> None:
        """Record (terminal_id, transaction_id, event_time_s, fraud) in the terminals' fraud sets."""
        if not labels:
            return
        pipe = self._redis.pipeline(transaction=False)
        for terminal_id, txid, event_time_s, fraud in labels:
            key = self.fraud_key(terminal_id)
            if fraud:
                pipe.zadd(key, {txid: event_time_s})
            else:
                pipe.zrem(key, txid)
        await self._run(pipe.execute())

    async def ping(self) -> bool:
        try:
            return bool(await self._run(self._redis.ping()))
        except FeatureStoreUnavailableError:
            return False

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        self.round_trips += 1
        return await self._run(script(keys=keys, args=args))

    async def _run(self, awaitable: Any) -> Any:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await awaitable
        except REDIS_DOWN as exc:
            raise FeatureStoreUnavailableError(
                f"feature store unavailable: {type(exc).__name__}", retry_after_s=1.0
            ) from exc
