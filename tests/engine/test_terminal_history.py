"""The terminal's known-label history: hand cases, and the vectorised offline
computation against the per-transaction definition on random streams."""

from __future__ import annotations

import random

import numpy as np
import pytest

from sankofa.engine.feature_names import DAY_S
from sankofa.engine.terminal_history import from_records, terminal_history

WEEK = 7 * DAY_S


def history(
    times: list[float], frauds: list[bool], terminal: list[int] | None = None
) -> np.ndarray:
    return terminal_history(
        event_time_s=np.asarray(times, dtype=np.float64),
        terminal=np.asarray(terminal or [1] * len(times)),
        fraud=np.asarray(frauds, dtype=bool),
    )


def test_a_run_of_known_frauds_after_the_last_legitimate_payment() -> None:
    day = float(DAY_S)
    times = [0.0, day, 2 * day, 3 * day, 3 * day + WEEK + 3600]
    out = history(times, [False, True, False, True, False])
    # The last row knows rows 0-3 (7 days old or more): legit, fraud, legit, fraud.
    streak, streak_age, legit_age = out[-1].tolist()
    assert streak == 1
    assert streak_age == pytest.approx((WEEK + 3600) / day)
    assert legit_age == pytest.approx((day + WEEK + 3600) / day)


def test_nothing_known_yet_gives_the_defaults() -> None:
    out = history([0.0, 3600.0], [True, True])
    assert out.tolist() == [[0.0, 0.0, 37.0], [0.0, 0.0, 37.0]]


def test_only_frauds_known_all_count_and_no_legitimate_age() -> None:
    times = [0.0, 10.0, 20.0, WEEK + 20.0]
    out = history(times, [True, True, True, False])
    assert out[-1].tolist() == [3.0, (WEEK + 20.0) / DAY_S, 37.0]


def test_a_fraud_in_the_same_second_as_the_last_legitimate_payment_counts() -> None:
    """Order within a second must not matter: the fraud is taken as the later one."""
    for frauds in ([True, False], [False, True]):
        out = history([0.0, 0.0, WEEK], [*frauds, False])
        assert out[-1].tolist() == [1.0, 7.0, 7.0]


def test_records_beyond_the_longest_window_are_forgotten() -> None:
    times = [0.0, 38 * float(DAY_S)]
    out = history(times, [False, False])
    assert out[-1].tolist() == [0.0, 0.0, 37.0]


def test_the_delay_must_be_positive() -> None:
    with pytest.raises(ValueError, match="label_delay_days"):
        terminal_history(
            event_time_s=np.zeros(1),
            terminal=np.ones(1),
            fraud=np.ones(1, bool),
            label_delay_days=0,
        )


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_equals_the_definition(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(50, 400)
    steps = [rng.choice([0, 0, 1, 3600, DAY_S, 3 * DAY_S]) for _ in range(n)]
    times = np.cumsum(steps).astype(np.float64)
    terminal = np.asarray([rng.randint(0, 3) for _ in range(n)])
    fraud = np.asarray([rng.random() < 0.4 for _ in range(n)])
    got = terminal_history(event_time_s=times, terminal=terminal, fraud=fraud)
    for i in range(n):
        records = [
            (float(times[j]), bool(fraud[j])) for j in range(i) if terminal[j] == terminal[i]
        ]
        assert got[i].tolist() == list(from_records(float(times[i]), records)), i
