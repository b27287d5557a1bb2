"""The batch cost model."""

from __future__ import annotations

import pytest

from sankofa.queues.cost import BatchCostModel


def test_recovers_a_linear_cost() -> None:
    m = BatchCostModel(alpha=0.2)
    for _ in range(50):
        for n in (1, 10, 100, 1000):
            m.observe(n, 0.003 + 0.00002 * n)
    assert m.fixed_s == pytest.approx(0.003, rel=1e-6)
    assert m.per_item_s == pytest.approx(0.00002, rel=1e-6)
    assert m.estimate(500) == pytest.approx(0.013, rel=1e-6)


def test_follows_a_change_of_load() -> None:
    m = BatchCostModel(alpha=0.2)
    for _ in range(50):
        for n in (10, 100):
            m.observe(n, 0.001 + 0.0001 * n)
    for _ in range(50):
        for n in (10, 100):
            m.observe(n, 0.002 + 0.0003 * n)  # the machine got slower
    assert m.per_item_s == pytest.approx(0.0003, rel=1e-3)


def test_constant_sizes_keep_the_slope_and_fit_the_level() -> None:
    m = BatchCostModel(prior_fixed_s=0.0, prior_per_item_s=0.001)
    for _ in range(100):
        m.observe(10, 0.05)
    assert m.per_item_s == 0.001
    assert m.estimate(10) == pytest.approx(0.05, rel=1e-6)


def test_largest_within_budget() -> None:
    m = BatchCostModel(prior_fixed_s=0.01, prior_per_item_s=0.001)
    assert m.largest_within(0.11, cap=1000) == 100
    assert m.largest_within(0.0, cap=1000) == 1  # always at least one
    assert m.largest_within(10.0, cap=256) == 256


def test_ignores_nonsense() -> None:
    m = BatchCostModel()
    m.observe(0, 1.0)
    m.observe(5, float("nan"))
    m.observe(5, -1.0)
    assert m.observed == 0
    with pytest.raises(ValueError):
        BatchCostModel(alpha=0)
