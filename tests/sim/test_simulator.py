"""The simulator against the Handbook's published raw data.

The fast tests regenerate a committed slice of published rows (every row of 12
customers, see tests/fixtures/make_slices.py); the slow one regenerates the
whole published file and skips when ../shared/data is absent.
"""

from __future__ import annotations

import gzip
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from sankofa.sim.simulator import (
    COLUMNS,
    Columns,
    read_csv_gz,
    simulate,
    simulate_to_csv,
    summarize,
    write_csv_gz,
)

SLICE = Path(__file__).resolve().parents[1] / "fixtures" / "handbook-raw-slice.csv.gz"
# What a faithful simulator must reproduce; TRANSACTION_ID only up to the
# order of same-second ties.
TUPLE = (
    "CUSTOMER_ID",
    "TX_TIME_SECONDS",
    "TERMINAL_ID",
    "TX_AMOUNT",
    "TX_FRAUD",
    "TX_FRAUD_SCENARIO",
)
# A configuration small enough to simulate whole in a few milliseconds.
SMALL_CUSTOMERS = 40


def shared_data() -> Path:
    """../shared/data beside the checkout, or $SANKOFA_SHARED_DATA."""
    env = os.environ.get("SANKOFA_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"


def simulate_small(
    *, customer_ids: list[int] | None = None, progress: Callable[[int, int], None] | None = None
) -> Columns:
    return simulate(
        n_customers=SMALL_CUSTOMERS,
        n_terminals=200,
        nb_days=40,
        radius=15.0,
        customer_ids=customer_ids,
        progress=progress,
    )


def records(cols: Columns, names: tuple[str, ...] = TUPLE) -> npt.NDArray[Any]:
    """The rows as a structured array, in their current order."""
    out = np.empty(len(cols[names[0]]), dtype=[(name, cols[name].dtype) for name in names])
    for name in names:
        out[name] = cols[name]
    return out


def multiset(cols: Columns, names: tuple[str, ...] = TUPLE) -> npt.NDArray[Any]:
    """The rows as a sorted structured array: equal multisets compare equal."""
    return np.sort(records(cols, names), order=list(names))


@pytest.fixture(scope="module")
def published_slice() -> Columns:
    return read_csv_gz(SLICE)


@pytest.fixture(scope="module")
def simulated_slice(published_slice: Columns) -> Columns:
    customers = np.unique(published_slice["CUSTOMER_ID"]).tolist()
    return simulate(customer_ids=customers)


def test_slice_covers_every_scenario_and_day(published_slice: Columns) -> None:
    assert set(published_slice["TX_FRAUD_SCENARIO"].tolist()) == {0, 1, 2, 3}
    assert set(published_slice["TX_TIME_DAYS"].tolist()) == set(range(183))
    # The doubly multiplied amount (two overlapping scenario 3 windows).
    assert published_slice["TX_AMOUNT"].max() == 2628.0


def test_slice_rows_equal_published(published_slice: Columns, simulated_slice: Columns) -> None:
    assert len(simulated_slice["TRANSACTION_ID"]) == len(published_slice["TRANSACTION_ID"])
    with_time = (*TUPLE, "TX_DATETIME", "TX_TIME_DAYS")
    np.testing.assert_array_equal(
        multiset(simulated_slice, with_time), multiset(published_slice, with_time)
    )


def test_slice_is_sorted_by_time_with_ids_as_ranks(simulated_slice: Columns) -> None:
    assert np.all(np.diff(simulated_slice["TX_TIME_SECONDS"]) >= 0)
    n = len(simulated_slice["TRANSACTION_ID"])
    np.testing.assert_array_equal(simulated_slice["TRANSACTION_ID"], np.arange(n))


def test_subset_equals_the_same_customers_of_a_full_run() -> None:
    """Scenario 3 pools customers: a subset must still get the full run's rows."""
    full = simulate_small()
    compromised = np.random.RandomState(3).choice(SMALL_CUSTOMERS, 3, replace=False).tolist()
    for subset in ([compromised[0]], [compromised[1], 7], list(range(0, 40, 5))):
        part = simulate_small(customer_ids=subset)
        keep = np.isin(full["CUSTOMER_ID"], subset)
        assert keep.any()
        expected = {name: values[keep] for name, values in full.items()}
        np.testing.assert_array_equal(multiset(part), multiset(expected))
    assert set(full["TX_FRAUD_SCENARIO"].tolist()) >= {0, 2, 3}


def test_progress_is_reported_per_customer() -> None:
    calls: list[tuple[int, int]] = []
    simulate_small(progress=lambda done, total: calls.append((done, total)))
    total = SMALL_CUSTOMERS
    assert calls == [(done, total) for done in range(1, total + 1)]


def test_caller_random_state_is_left_alone() -> None:
    np.random.seed(123)
    random.seed(123)
    expected = (np.random.uniform(), random.random())
    np.random.seed(123)
    random.seed(123)
    simulate_small()
    assert (np.random.uniform(), random.random()) == expected


@pytest.mark.parametrize("bad", [{"n_customers": 0}, {"radius": 0.0}, {"customer_ids": [5000]}])
def test_bad_arguments_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        simulate(**bad)


def test_writer_round_trips_published_lines(published_slice: Columns, tmp_path: Path) -> None:
    out = tmp_path / "slice.csv.gz"
    write_csv_gz(published_slice, out)
    assert gzip.decompress(out.read_bytes()) == gzip.decompress(SLICE.read_bytes())


def test_writer_formats_simulated_rows_as_published(
    simulated_slice: Columns, tmp_path: Path
) -> None:
    """Every simulated line, bar its subset-local id, is a published line."""
    out = tmp_path / "sim.csv.gz"
    write_csv_gz(simulated_slice, out)
    ours = gzip.decompress(out.read_bytes()).decode("ascii").splitlines()
    theirs = gzip.decompress(SLICE.read_bytes()).decode("ascii").splitlines()
    assert ours[0] == theirs[0] == ",".join(COLUMNS)
    assert sorted(line.split(",", 1)[1] for line in ours[1:]) == sorted(
        line.split(",", 1)[1] for line in theirs[1:]
    )


def test_writer_accepts_datetimes_as_strings(simulated_slice: Columns, tmp_path: Path) -> None:
    as_text = dict(simulated_slice)
    as_text["TX_DATETIME"] = np.array([str(d).replace("T", " ") for d in as_text["TX_DATETIME"]])
    write_csv_gz(simulated_slice, tmp_path / "a.csv.gz")
    write_csv_gz(as_text, tmp_path / "b.csv.gz")
    assert (tmp_path / "a.csv.gz").read_bytes() == (tmp_path / "b.csv.gz").read_bytes()


def test_simulate_to_csv_writes_and_summarises(tmp_path: Path) -> None:
    out = tmp_path / "small.csv.gz"
    stats = simulate_to_csv(
        out, n_customers=SMALL_CUSTOMERS, n_terminals=200, nb_days=40, radius=15.0
    )
    back = read_csv_gz(out)
    direct = simulate_small()
    for name in COLUMNS:
        np.testing.assert_array_equal(back[name], direct[name])
    assert stats == summarize(direct)
    assert stats["rows"] == len(direct["TRANSACTION_ID"]) > 0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_full_simulation_equals_published_data() -> None:
    source = shared_data() / "handbook-raw.csv.gz"
    if not source.exists():
        pytest.skip(f"published data not found at {source} (set SANKOFA_SHARED_DATA)")
    published = read_csv_gz(source)
    simulated = simulate()

    assert summarize(simulated) == summarize(published)
    stats = summarize(simulated)
    assert stats["rows"] == 1_754_155
    assert stats["frauds"] == 14_681
    assert stats["scenarios"] == {"S1": 973, "S2": 9_077, "S3": 4_631}
    assert stats["active_customers"] == 4_990
    assert round(stats["mean_amount"], 2) == 53.63
    assert stats["max_amount"] == 2628.0

    # The tuples, as multisets.
    np.testing.assert_array_equal(multiset(simulated), multiset(published))

    # TRANSACTION_ID: both are ranks after a sort by time, so a row can only
    # carry another id than its published twin inside a group of transactions
    # on the same second.
    for cols in (simulated, published):
        np.testing.assert_array_equal(cols["TRANSACTION_ID"], np.arange(stats["rows"]))
    seconds = published["TX_TIME_SECONDS"]
    np.testing.assert_array_equal(simulated["TX_TIME_SECONDS"], seconds)
    differs = records(simulated) != records(published)
    _, group, size = np.unique(seconds, return_inverse=True, return_counts=True)
    assert np.all(size[group[differs]] >= 2)
    print(
        f"\n{int(differs.sum())} of {stats['rows']} TRANSACTION_IDs differ from the published"
        f" ones; {int((size[group] >= 2).sum())} rows share their second with another"
    )
