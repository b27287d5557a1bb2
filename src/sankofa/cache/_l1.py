"""L1: a bounded, in-process LRU map with a time to live per entry."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

V = TypeVar("V")

#: What ``get`` answers for a key it does not hold (None is a cached value: an absence).
MISSING: object = object()


class LruTtl(Generic[V]):
    """At most ``max_entries`` entries, the least recently used evicted first; an entry
    is dropped when read after its deadline. ``clock``: monotonic seconds."""

    __slots__ = ("_clock", "_entries", "_max")

    def __init__(self, *, max_entries: int, clock: Callable[[], float]) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, V | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> object:
        """The value (None for a cached absence), or ``MISSING``."""
        entry = self._entries.get(key)
        if entry is None:
            return MISSING
        if entry[0] <= self._clock():
            del self._entries[key]
            return MISSING
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: str, value: V | None, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        entries = self._entries
        entries[key] = (self._clock() + ttl_s, value)
        entries.move_to_end(key)
        while len(entries) > self._max:
            entries.popitem(last=False)

    def discard(self, keys: Iterable[str]) -> None:
        pop = self._entries.pop
        for key in keys:
            pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
