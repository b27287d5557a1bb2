"""Offline features: stream semantics by hand, against a naive reference, and
against the handbook's published features (committed slice always, full data
when ``../shared/data`` is present)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from sankofa.engine.feature_names import DAY_S, FEATURE_NAMES, N_FEATURES
from sankofa.engine.features_offline import compute_features
from sankofa.sim.data import load_features, load_raw, parse_cents

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SLICE = FIXTURES / "handbook-slice.csv.gz"
COL = {name: k for k, name in enumerate(FEATURE_NAMES)}
#: The published rolling sums leave float residue (up to ~2e-13) where the exact
#: mean amount is 0; no real difference in an amount mean is anywhere near this.
ABS_SLACK = 1e-9


def shared_data() -> Path:
    env = os.environ.get("SANKOFA_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"


def matches_published(
    mine: npt.NDArray[np.float64], published: npt.NDArray[np.float64]
) -> npt.NDArray[np.bool_]:
    """Equal at the published precision: the files carry 10 significant digits."""
    magnitude = np.abs(published)
    exponent = np.floor(np.log10(np.where(magnitude > 0, magnitude, 1.0)))
    half_unit = 0.5 * 10.0 ** (exponent - 9)
    # The 1e-6 slack covers exact decimal ties (101.84015625 printed either way).
    return np.abs(mine - published) <= np.maximum(half_unit * (1 + 1e-6), ABS_SLACK)


def features_of_raw(path: Path) -> npt.NDArray[np.float64]:
    raw = load_raw(path)
    t = raw.tx_datetime.astype(np.float64)
    # Event time as if the naive timestamps were at UTC-03:00; local time is the naive one.
    return compute_features(
        event_time_s=t + 3 * 3600,
        local_time_s=t,
        customer=raw.customer_id,
        terminal=raw.terminal_id,
        amount_cents=raw.amount_cents,
        fraud=raw.fraud,
    )


def stream(
    times: Sequence[float],
    customer: Sequence[int] | None = None,
    terminal: Sequence[int] | None = None,
    cents: Sequence[int] | None = None,
    fraud: Sequence[bool] | None = None,
    local: Sequence[float] | None = None,
    **kwargs: float,
) -> npt.NDArray[np.float64]:
    n = len(times)
    return compute_features(
        event_time_s=np.array(times, dtype=np.float64),
        local_time_s=np.array(local if local is not None else times, dtype=np.float64),
        customer=np.array(customer or [1] * n),
        terminal=np.array(terminal or [1] * n),
        amount_cents=np.array(cents or [100] * n, dtype=np.int64),
        fraud=np.array(fraud or [False] * n, dtype=bool),
        **kwargs,
    )


# -- the published data ---------------------------------------------------------


def test_slice_matches_published_features() -> None:
    mine = features_of_raw(SLICE)[:, 1:]
    _, published = load_features(SLICE)
    for k, name in enumerate(FEATURE_NAMES[1:]):
        checked = ~np.isnan(published[:, k])
        bad = np.flatnonzero(checked & ~matches_published(mine[:, k], published[:, k]))
        assert bad.size == 0, f"{name}: {bad.size} rows differ, first at slice row {bad[0]}"


def test_slice_checks_every_feature_on_many_rows() -> None:
    """The fixture must keep exercising every feature, including non-zero terminal risk."""
    _, published = load_features(SLICE)
    checked = (~np.isnan(published)).sum(axis=0)
    positive = (np.nan_to_num(published) > 0).sum(axis=0)
    assert np.all(checked[:2] > 10_000)  # weekend, night: every row
    assert np.all(checked[2:8] > 3_000)  # customer windows
    assert np.all(checked[8:] > 2_500)  # terminal windows
    risk = [FEATURE_NAMES[1:].index(f"TERMINAL_ID_RISK_{w}DAY_WINDOW") for w in (1, 7, 30)]
    assert np.all(positive[risk] > 200)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_full_published_features_differ_only_at_same_second_ties() -> None:
    data = shared_data()
    if not (data / "handbook-raw.csv.gz").exists():
        pytest.skip(f"published data not found in {data}")
    raw = load_raw(data / "handbook-raw.csv.gz")
    ids, published = load_features(data / "handbook-features.csv.gz")
    assert np.array_equal(ids, raw.transaction_id)
    assert len(raw) == 1_754_155
    mine = features_of_raw(data / "handbook-raw.csv.gz")[:, 1:]
    ok = matches_published(mine, published)
    differing = np.flatnonzero(~ok.all(axis=1))
    columns = np.flatnonzero(~ok.all(axis=0))
    # The handbook sorts each customer's rows by time with an unstable sort, so
    # two rows of one customer in the same second may be counted in either
    # order there; a stream counts the earlier row first.
    key = raw.customer_id * 10**9 + raw.tx_datetime
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    in_tie = counts[inverse] > 1
    print(
        f"\n{differing.size} of {len(raw)} rows differ (in columns "
        f"{[FEATURE_NAMES[1 + c] for c in columns]}); {int(in_tie.sum())} rows are in "
        "same-second ties of one customer"
    )
    assert in_tie[differing].all(), "a difference outside a same-second tie"
    assert all(FEATURE_NAMES[1 + c].startswith("CUSTOMER_ID_") for c in columns)
    assert differing.size == 20


def test_reader_keeps_exact_cents_and_file_order() -> None:
    texts = [b"85.64999999999999", b"52.300000000000004", b"146.0", b"6", b"0.05", b"2628.0"]
    assert parse_cents(np.array(texts)).tolist() == [8565, 5230, 14600, 600, 5, 262800]
    with pytest.raises(ValueError):
        parse_cents(np.array([b"1e-05"]))
    raw = load_raw(SLICE)
    ids, _ = load_features(SLICE)
    assert np.array_equal(ids, raw.transaction_id)
    assert np.all(np.diff(raw.transaction_id) > 0)
    # TX_TIME_SECONDS counts from 2018-04-01 00:00:00, the naive TX_DATETIME's origin.
    assert np.array_equal(raw.tx_datetime - raw.tx_time_seconds, np.full(len(raw), 1_522_540_800))
    assert np.array_equal(raw.fraud, raw.scenario > 0)


# -- semantics by hand --------------------------------------------------------------


def test_same_second_rows_see_only_earlier_rows() -> None:
    out = stream([100.0, 100.0, 100.0], cents=[100, 200, 600])
    assert out[:, COL["CUSTOMER_ID_NB_TX_1DAY_WINDOW"]].tolist() == [1, 2, 3]
    assert out[:, COL["CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"]].tolist() == [1.0, 1.5, 3.0]


def test_customer_window_is_open_at_its_start() -> None:
    t = 40 * DAY_S
    out = stream([t - DAY_S, t - DAY_S + 1, t], cents=[1000, 2000, 3000])
    last = out[-1]
    # (t - 1 day, t]: the row exactly one day earlier is out, one second later is in.
    assert last[COL["CUSTOMER_ID_NB_TX_1DAY_WINDOW"]] == 2
    assert last[COL["CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"]] == 25.0
    assert last[COL["CUSTOMER_ID_NB_TX_7DAY_WINDOW"]] == 3
    assert last[COL["CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW"]] == 20.0


def test_customers_are_separate() -> None:
    out = stream([0.0, 1.0, 2.0], customer=[7, -3, 7], cents=[100, 900, 300])
    assert out[:, COL["CUSTOMER_ID_NB_TX_30DAY_WINDOW"]].tolist() == [1, 1, 2]
    assert out[:, COL["CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW"]].tolist() == [1.0, 9.0, 2.0]
    assert out[:, COL["TX_AMOUNT"]].tolist() == [1.0, 9.0, 3.0]


def test_terminal_window_counts_only_labels_known_after_the_delay() -> None:
    t = 50 * DAY_S
    times = [t - 8 * DAY_S, t - 8 * DAY_S + 1, t - 7 * DAY_S, t - 7 * DAY_S + 1, t]
    out = stream(times, customer=[1, 2, 3, 4, 5], fraud=[True, False, True, True, False])
    last = out[-1]
    # 1-day window (t - 8d, t - 7d]: rows 2 and 3 (one fraud); row 4 is not known yet.
    assert last[COL["TERMINAL_ID_NB_TX_1DAY_WINDOW"]] == 2
    assert last[COL["TERMINAL_ID_RISK_1DAY_WINDOW"]] == 0.5
    assert last[COL["TERMINAL_ID_NB_TX_7DAY_WINDOW"]] == 3
    assert last[COL["TERMINAL_ID_RISK_7DAY_WINDOW"]] == pytest.approx(2 / 3)
    assert out[0, COL["TERMINAL_ID_NB_TX_30DAY_WINDOW"]] == 0
    assert out[0, COL["TERMINAL_ID_RISK_30DAY_WINDOW"]] == 0.0


def test_label_delay_zero_behaves_like_a_stream() -> None:
    out = stream([5.0, 5.0], customer=[1, 2], fraud=[True, False], label_delay_days=0)
    assert out[:, COL["TERMINAL_ID_NB_TX_1DAY_WINDOW"]].tolist() == [1, 2]
    assert out[:, COL["TERMINAL_ID_RISK_1DAY_WINDOW"]].tolist() == [1.0, 0.5]


def test_weekend_and_night_use_local_time() -> None:
    saturday = 2 * DAY_S  # 1970-01-03 was a Saturday
    local = [
        saturday - 1,  # Friday 23:59:59
        saturday,  # Saturday 00:00
        saturday + 7 * 3600 - 1,  # Saturday 06:59:59
        saturday + 7 * 3600,  # Saturday 07:00
        saturday + 2 * DAY_S - 1,  # Sunday 23:59:59
        saturday + 2 * DAY_S + 12 * 3600,  # Monday noon
    ]
    event = [x + 3 * 3600 for x in local]  # at UTC-03:00
    out = stream(event, local=local)
    assert out[:, COL["TX_DURING_WEEKEND"]].tolist() == [0, 1, 1, 1, 1, 0]
    assert out[:, COL["TX_DURING_NIGHT"]].tolist() == [0, 1, 1, 0, 0, 0]


def test_empty_input() -> None:
    assert stream([]).shape == (0, N_FEATURES)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"event_time_s": np.array([2.0, 1.0])}, "non-decreasing"),
        ({"event_time_s": np.array([1.0, np.nan])}, "finite"),
        ({"amount_cents": np.array([1.5, 2.0])}, "integers"),
        ({"fraud": np.array([0, 1])}, "boolean"),
        ({"customer": np.array([1, 2, 3])}, "customer"),
        ({"label_delay_days": -1}, "label_delay_days"),
    ],
)
def test_rejects_bad_input(change: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "event_time_s": np.array([1.0, 2.0]),
        "local_time_s": np.array([1.0, 2.0]),
        "customer": np.array([1, 2]),
        "terminal": np.array([1, 2]),
        "amount_cents": np.array([1, 2]),
        "fraud": np.array([False, True]),
    }
    args.update(change)
    with pytest.raises(ValueError, match=message):
        compute_features(**args)  # type: ignore[arg-type]


# -- a naive reference on random streams ----------------------------------------------


def naive_features(
    t: npt.NDArray[np.float64],
    customer: npt.NDArray[np.int64],
    terminal: npt.NDArray[np.int64],
    cents: npt.NDArray[np.int64],
    fraud: npt.NDArray[np.bool_],
    delay: float,
) -> npt.NDArray[np.float64]:
    """The customer and terminal columns, straight from the definitions, row by row."""
    out = np.zeros((t.shape[0], 12))
    for i in range(t.shape[0]):
        seen = np.arange(i + 1)  # the stream so far
        for k, w in enumerate((1, 7, 30)):
            c = seen[(customer[seen] == customer[i]) & (t[seen] > t[i] - w * DAY_S)]
            out[i, 2 * k] = c.size
            out[i, 2 * k + 1] = cents[c].sum() / c.size / 100
            hi = t[i] - delay * DAY_S
            m = seen[(terminal[seen] == terminal[i]) & (t[seen] > hi - w * DAY_S) & (t[seen] <= hi)]
            out[i, 6 + 2 * k] = m.size
            out[i, 7 + 2 * k] = fraud[m].mean() if m.size else 0.0
    return out


@pytest.mark.parametrize(("seed", "delay"), [(0, 7), (1, 7), (2, 0), (3, 2.5)])
def test_matches_naive_reference_on_random_streams(seed: int, delay: float) -> None:
    rng = np.random.RandomState(seed)
    n = 400
    # Times on a 6-hour grid with jitter on half the rows: many exact ties and
    # many rows exactly on a window boundary.
    t = np.sort(rng.randint(0, 60 * 4, n) * 6 * 3600 + (rng.rand(n) < 0.5) * rng.rand(n))
    customer = rng.randint(0, 6, n) * 1_000_003
    terminal = rng.randint(0, 5, n) - 2
    cents = rng.randint(0, 50_000, n)
    fraud = rng.rand(n) < 0.3
    out = compute_features(
        event_time_s=t,
        local_time_s=t,
        customer=customer,
        terminal=terminal,
        amount_cents=cents,
        fraud=fraud,
        label_delay_days=delay,
    )
    expected = naive_features(t, customer, terminal, cents, fraud, delay)
    np.testing.assert_allclose(out[:, 3:], expected, rtol=1e-12, atol=0)
