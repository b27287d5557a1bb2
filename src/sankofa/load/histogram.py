"""Latency percentiles: exact from arrays, and HDR-like fixed buckets for live progress.

Final figures are exact: every worker returns its raw latencies and the
parent concatenates them, so merging processes loses nothing. The fixed-bucket
histogram is what workers send every second for the "p99 so far" line: its
buckets are the same in every process, so merging is adding counts.

One definition of a percentile everywhere: the smallest recorded value with at
least that fraction of values at or below it (numpy's ``inverted_cdf``, HDR
Histogram's "value at percentile"). It is always a latency that happened.

Buckets (log-linear, like HDR Histogram with 2**11 sub-buckets): integer
microseconds below 2**11 are exact; above, each power-of-two range is cut into
2**10 equal buckets, so a value is known to within 0.1 %. A percentile read
from a bucket is the bucket's highest value.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from sankofa.load.constants import MAX_VALUE_BITS, SUB_BUCKET_BITS

_SUB = 1 << SUB_BUCKET_BITS
_HALF = _SUB >> 1
#: Number of buckets: the exact range, then one half-range per extra power of two.
N_BUCKETS = _SUB + (MAX_VALUE_BITS - SUB_BUCKET_BITS) * _HALF
MAX_VALUE_US = (1 << MAX_VALUE_BITS) - 1

FloatArray = npt.NDArray[np.float64]
CountArray = npt.NDArray[np.int64]


def percentile(values: FloatArray, q: float) -> float:
    """The ``q`` quantile (0-1) of ``values``; NaN when empty."""
    if not 0.0 <= q <= 1.0:
        raise ValueError("q must be in [0, 1]")
    if values.size == 0:
        return float("nan")
    return float(np.quantile(values, q, method="inverted_cdf"))


def bucket_index(values_us: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """The bucket of each latency in microseconds (negative -> 0, huge -> the last)."""
    v = np.clip(np.floor(np.asarray(values_us, dtype=np.float64)), 0, MAX_VALUE_US).astype(np.int64)
    # frexp's exponent is the bit length, exactly, for integers below 2**53.
    _, bits = np.frexp(v.astype(np.float64))
    shift = np.maximum(bits.astype(np.int64) - SUB_BUCKET_BITS, 0)
    index = np.where(shift == 0, v, _SUB + (shift - 1) * _HALF + ((v >> shift) - _HALF))
    out: npt.NDArray[np.intp] = index.astype(np.intp)
    return out


def bucket_high(index: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """The highest microsecond value that falls in each bucket."""
    i = np.asarray(index, dtype=np.int64)
    shift = np.where(i < _SUB, 0, (i - _SUB) // _HALF + 1)
    low = np.where(i < _SUB, i, ((i - _SUB) % _HALF + _HALF) << shift)
    out: npt.NDArray[np.int64] = low + (np.int64(1) << shift) - 1
    return out


class LatencyHistogram:
    """Counts per fixed bucket; add two to merge them."""

    __slots__ = ("counts",)

    def __init__(self, counts: CountArray | None = None) -> None:
        if counts is None:
            counts = np.zeros(N_BUCKETS, dtype=np.int64)
        elif counts.shape != (N_BUCKETS,):
            raise ValueError(f"counts must have {N_BUCKETS} buckets")
        self.counts = counts

    @classmethod
    def of(cls, values_us: npt.ArrayLike) -> LatencyHistogram:
        h = cls()
        h.record(values_us)
        return h

    def record(self, values_us: npt.ArrayLike) -> None:
        idx = bucket_index(values_us)
        if idx.size:
            self.counts += np.bincount(idx, minlength=N_BUCKETS)

    def merge(self, other: LatencyHistogram) -> None:
        self.counts += other.counts

    def __add__(self, other: LatencyHistogram) -> LatencyHistogram:
        return LatencyHistogram(self.counts + other.counts)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def value_at(self, q: float) -> float:
        """The ``q`` quantile (0-1) in microseconds (a bucket's highest value); NaN when empty."""
        if not 0.0 <= q <= 1.0:
            raise ValueError("q must be in [0, 1]")
        total = self.total
        if total == 0:
            return float("nan")
        rank = max(int(np.ceil(q * total)), 1)
        index = int(np.searchsorted(np.cumsum(self.counts), rank))
        return float(bucket_high(index))

    def sparse(self) -> tuple[npt.NDArray[np.intp], CountArray]:
        """Non-empty buckets as (indexes, counts): what a worker sends each second."""
        nz = np.flatnonzero(self.counts)
        return nz, self.counts[nz]

    @classmethod
    def from_sparse(cls, index: npt.NDArray[np.intp], counts: CountArray) -> LatencyHistogram:
        h = cls()
        np.add.at(h.counts, index, counts)
        return h
