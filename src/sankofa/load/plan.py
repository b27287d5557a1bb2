"""What a run will send and when, decided before it starts and from a seed.

The plan is global: request ``j`` has one intended time, one priority and
its own rows of the data, whatever the number of worker processes. Worker
``k`` of ``K`` takes requests ``j = k, k + K, ...``. Dealing a Poisson stream
out round-robin leaves the merged stream exactly the Poisson stream that was
drawn, and keeps transactions going out in the data's time order overall, so
the server's online features see each customer's history in order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from sankofa.load.constants import ARRIVALS, SECONDS_PER_WEEK
from sankofa.queues.priority import PRIORITY_NAMES

Arrival = Literal["constant", "poisson"]


def parse_priority_mix(text: str) -> npt.NDArray[np.float64]:
    """``critical=0.05,high=0.15,...`` as probabilities in ``PRIORITY_NAMES`` order.

    Classes not named get probability 0; the shares are normalised to sum to 1.
    """
    shares = np.zeros(len(PRIORITY_NAMES))
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in PRIORITY_NAMES:
            raise ValueError(
                f"--priority-mix: {part!r} is not CLASS=SHARE with CLASS in"
                f" {', '.join(PRIORITY_NAMES)}"
            )
        try:
            share = float(value)
        except ValueError:
            raise ValueError(f"--priority-mix: {value!r} is not a number") from None
        if not share >= 0 or math.isinf(share):
            raise ValueError(f"--priority-mix: {part!r}: a share must be a finite number >= 0")
        shares[PRIORITY_NAMES.index(name)] = share
    total = float(shares.sum())
    if total <= 0:
        raise ValueError("--priority-mix: the shares must not all be 0")
    out: npt.NDArray[np.float64] = shares / total
    return out


def arrival_offsets(
    rate: float, duration_s: float, arrival: Arrival, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """Intended send times in ``[0, duration_s)`` seconds from the start, ascending.

    ``constant``: exactly every ``1/rate`` seconds. ``poisson``: exponential
    gaps with mean ``1/rate`` (a Poisson process), drawn from ``rng``.
    """
    if not rate > 0 or math.isinf(rate):
        raise ValueError("rate must be a finite number > 0")
    if not duration_s > 0 or math.isinf(duration_s):
        raise ValueError("duration_s must be a finite number > 0")
    if arrival == "constant":
        n = math.ceil(rate * duration_s)
        offsets = np.arange(n, dtype=np.float64) / rate
        out: npt.NDArray[np.float64] = offsets[offsets < duration_s]
        return out
    if arrival != "poisson":
        raise ValueError(f"arrival must be one of {ARRIVALS}, not {arrival!r}")
    expected = rate * duration_s
    # Enough gaps to pass the end almost always; draw more in the rare other case.
    chunk = int(expected + 10 * math.sqrt(expected) + 10)
    gaps = rng.exponential(1.0 / rate, size=chunk)
    times = np.cumsum(gaps)
    while times[-1] < duration_s:
        more = np.cumsum(rng.exponential(1.0 / rate, size=chunk)) + times[-1]
        times = np.concatenate([times, more])
    out = times[times < duration_s]
    return out


def draw_priorities(
    n: int, mix: npt.NDArray[np.float64], rng: np.random.Generator
) -> npt.NDArray[np.int8]:
    """Each request's class (an index into ``PRIORITY_NAMES``), drawn independently."""
    out: npt.NDArray[np.int8] = rng.choice(len(mix), size=n, p=mix).astype(np.int8)
    return out


def select_rows(
    amount_cents: npt.NDArray[np.int64], n: int, start_row: int = 0
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64]]:
    """``n`` rows in file (time) order from ``start_row``, skipping zero amounts.

    The API refuses an amount of 0 by contract, so those rows are never sent.
    Past the end the data starts again: the second element gives each row's
    pass number, which shifts its time forward and keeps its id unique.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    valid = np.flatnonzero(amount_cents > 0)
    if valid.size == 0:
        raise ValueError("the data has no row with an amount > 0")
    first = int(np.searchsorted(valid, max(start_row, 0)))
    k = np.arange(first, first + n, dtype=np.int64)
    rows: npt.NDArray[np.intp] = valid[k % valid.size]
    passes: npt.NDArray[np.int64] = k // valid.size
    return rows, passes


def pass_shift_s(tx_datetime: npt.NDArray[np.int64]) -> int:
    """Time shift of each new pass over the data: its span rounded up to whole weeks."""
    if tx_datetime.size == 0:
        return SECONDS_PER_WEEK
    span = int(tx_datetime.max() - tx_datetime.min()) + 1
    return -(-span // SECONDS_PER_WEEK) * SECONDS_PER_WEEK


@dataclass(frozen=True, slots=True)
class Plan:
    """The whole run: request ``j`` is intended at ``offsets_s[j]`` with ``priority[j]``."""

    offsets_s: npt.NDArray[np.float64]
    priority: npt.NDArray[np.int8]
    batch: int

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ValueError("batch must be >= 1")
        if self.offsets_s.shape != self.priority.shape:
            raise ValueError("offsets_s and priority must have the same length")

    def __len__(self) -> int:
        return int(self.offsets_s.shape[0])

    @property
    def n_transactions(self) -> int:
        return len(self) * self.batch

    def share(self, worker: int, workers: int) -> npt.NDArray[np.intp]:
        """Indexes of the requests worker ``worker`` of ``workers`` sends (round robin)."""
        if not 0 <= worker < workers:
            raise ValueError("worker must be in [0, workers)")
        out: npt.NDArray[np.intp] = np.arange(worker, len(self), workers)
        return out


def make_plan(
    *,
    rate: float,
    duration_s: float,
    arrival: Arrival,
    mix: npt.NDArray[np.float64],
    batch: int,
    seed: int,
) -> Plan:
    """Intended times and priorities for ``rate`` requests/s over ``duration_s``."""
    rng = np.random.default_rng(seed)
    offsets = arrival_offsets(rate, duration_s, arrival, rng)
    return Plan(offsets, draw_priorities(len(offsets), mix, rng), batch)
