"""L1: bounded (least recently used evicted first) and timed (an entry read after
its deadline is gone), on an injected clock."""

from __future__ import annotations

import pytest

from sankofa.cache._l1 import MISSING, LruTtl


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_least_recently_used_entry_goes_first() -> None:
    l1: LruTtl[str] = LruTtl(max_entries=2, clock=Clock())
    l1.put("a", "A", 10)
    l1.put("b", "B", 10)
    assert l1.get("a") == "A"  # a is now the most recently used
    l1.put("c", "C", 10)
    assert len(l1) == 2
    assert l1.get("b") is MISSING
    assert l1.get("a") == "A" and l1.get("c") == "C"


def test_entries_expire_and_absences_are_values() -> None:
    clock = Clock()
    l1: LruTtl[str] = LruTtl(max_entries=10, clock=clock)
    l1.put("a", "A", 5)
    l1.put("gone", None, 1)  # a cached absence
    l1.put("never", "N", 0)  # a time to live of 0 keeps nothing
    assert l1.get("gone") is None
    assert l1.get("never") is MISSING
    clock.now = 1.0
    assert l1.get("gone") is MISSING
    assert l1.get("a") == "A"
    clock.now = 5.0
    assert l1.get("a") is MISSING
    assert len(l1) == 0


def test_discard_and_clear() -> None:
    l1: LruTtl[str] = LruTtl(max_entries=10, clock=Clock())
    for k in "abc":
        l1.put(k, k.upper(), 10)
    l1.discard(["a", "zz"])
    assert l1.get("a") is MISSING and l1.get("b") == "B"
    l1.clear()
    assert len(l1) == 0


def test_a_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        LruTtl(max_entries=0, clock=Clock())
