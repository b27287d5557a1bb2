"""Per-batch kernels of the hot path, timed by pytest-benchmark (`make bench`).

Each kernel runs on a batch of 256 transactions (the default max batch size)
built from the committed slice of published data, so the inputs have the
shapes and values the service sees. Results are reported, never asserted.

``test_model_batch`` / ``test_model_per_row_loop`` time the served tree
model on batches of 1 to 4096 rows of the slice against a per-row Python walk
of the same trees (compare the time per transaction, mean / batch size). The
served call gives calibrated scores *and* every input's contribution (the
reasons' source); ``test_model_per_row_loop`` walks for the margin only, and
``test_model_per_row_loop_with_contributions`` does the served call's whole
work row by row, the like-for-like comparison.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from sankofa.engine.decision import DecisionPolicy, decide
from sankofa.engine.features_online import assemble, windows
from sankofa.engine.serving import load_default_model
from sankofa.engine.terminal_history import N_HISTORY
from sankofa.engine.transaction import TransactionParser
from sankofa.engine.trees import TreeEnsembleModel
from sankofa.evaluation.train import raw_features
from sankofa.queues.dispatcher import ClassPolicy, Dispatcher
from sankofa.queues.priority import Priority
from sankofa.sim.data import load_raw

SLICE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "handbook-slice.csv.gz"
BATCH = 256


@pytest.fixture(scope="module")
def bodies() -> list[dict[str, Any]]:
    raw = load_raw(SLICE)
    out = []
    for i in range(BATCH):
        c = int(raw.amount_cents[i]) or 1
        out.append(
            {
                "transaction_id": str(int(raw.transaction_id[i])),
                "timestamp": np.datetime_as_string(np.datetime64(int(raw.tx_datetime[i]), "s"))
                + "-03:00",
                "amount": f"{c // 100}.{c % 100:02d}",
                "customer_id": str(int(raw.customer_id[i])),
                "terminal_id": str(int(raw.terminal_id[i])),
            }
        )
    return out


def _counts(rng: np.random.Generator) -> np.ndarray:
    counts = rng.integers(1, 50, size=(BATCH, 12 + N_HISTORY)).astype(np.float64)
    counts[:, 1:6:2] *= 5_000  # summed cents
    return counts


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    rng = np.random.default_rng(0)
    return assemble(
        _counts(rng), rng.integers(100, 20_000, BATCH), rng.uniform(1.5e9, 1.6e9, BATCH)
    )


def test_parse_json_batch(benchmark: Any, bodies: list[dict[str, Any]]) -> None:
    data = orjson.dumps({"transactions": bodies})
    benchmark(orjson.loads, data)


def test_validate_batch(benchmark: Any, bodies: list[dict[str, Any]]) -> None:
    parser = TransactionParser(hmac_key=b"bench-key-0123456789", max_metadata_bytes=2048)
    benchmark(parser.parse_many, bodies, prefix="transactions")


def test_assemble_features(benchmark: Any) -> None:
    rng = np.random.default_rng(0)
    benchmark(
        assemble, _counts(rng), rng.integers(100, 20_000, BATCH), rng.uniform(1.5e9, 1.6e9, BATCH)
    )


def test_feature_windows_from_histories(benchmark: Any) -> None:
    """numpy windows over a Redis reply holding 60 customer and 40 terminal records per
    transaction (the reply layout of ``features_online._parse_reply``)."""
    rng = np.random.default_rng(0)
    t = rng.uniform(1.5e9, 1.5e9 + 86_400, BATCH)
    heads, counts, records = [], [], []
    for i in range(BATCH):
        cust = np.column_stack(
            [
                np.sort(t[i] - rng.uniform(0, 30 * 86_400, 60)),
                rng.uniform(100, 9_000, 60),
                np.zeros(60),
            ]
        )
        term = np.column_stack(
            [np.sort(t[i] - rng.uniform(0, 37 * 86_400, 40)), np.zeros(40), rng.integers(0, 2, 40)]
        )
        # flags, then (key, first, end) of the customer's and of the terminal's records
        heads.append([0, 2 * i, 0, 60, 2 * i + 1, 0, 40])
        counts += [60, 40]
        records += [cust, term]
    reply = (
        np.asarray([BATCH, len(counts)], dtype="<f8").tobytes()
        + np.asarray(heads, dtype="<f8").tobytes()
        + np.asarray(counts, dtype="<f8").tobytes()
        + np.concatenate(records).astype("<f8").tobytes()
    )
    benchmark(windows, reply, t)


def test_model_predict(benchmark: Any, features: np.ndarray) -> None:
    model = load_default_model()
    benchmark(model.predict, features)


def test_decide(benchmark: Any, features: np.ndarray) -> None:
    model = load_default_model()
    scores, contributions, fallback = model.predict(features)
    policy = DecisionPolicy(
        review_threshold=0.06, decline_threshold=0.97, level_bounds=(0.01, 0.06, 0.97)
    )
    benchmark(decide, policy, scores, contributions, model.contribution_names, fallback)


def test_dispatcher_round_trip(benchmark: Any) -> None:
    """Submit BATCH single-transaction jobs and wait for all, with a no-op handler."""

    async def handler(jobs: Any) -> list[Any]:
        return [None] * len(jobs)

    async def run() -> None:
        d: Dispatcher[Any, Any] = Dispatcher(
            handler=handler,
            policies={p: ClassPolicy(10_000, 10.0) for p in Priority},
            max_batch_size=BATCH,
            max_wait_s=0.0,
            max_in_flight=2,
            ageing_s=1.0,
        )
        await d.start()
        await asyncio.gather(*(d.submit(i, priority=Priority.NORMAL) for i in range(BATCH)))
        await d.close()

    benchmark(lambda: asyncio.run(run()))


@pytest.fixture(scope="module")
def slice_features() -> np.ndarray:
    return raw_features(load_raw(SLICE))


@pytest.mark.parametrize("size", [1, 16, 256, 1000, 4096])
def test_model_batch(benchmark: Any, slice_features: np.ndarray, size: int) -> None:
    """The served call: calibrated scores and per-input contributions of ``size`` rows."""
    model = load_default_model()
    benchmark(model.predict, slice_features[:size])


def _per_row(model: TreeEnsembleModel, x: np.ndarray) -> list[float]:
    t = model.trees
    feature, threshold = t.feature.tolist(), t.threshold.tolist()
    left, right, value = t.left.tolist(), t.right.tolist(), t.value.tolist()
    roots = t.roots.tolist()
    z, _ = model.inputs(x)
    out = []
    for row in z.tolist():
        total = 0.0
        for node in roots:
            while left[node] != node:
                node = right[node] if row[feature[node]] > threshold[node] else left[node]
            total += value[node]
        out.append(total)
    return out


@pytest.mark.parametrize("size", [1, 16, 256])
def test_model_per_row_loop(benchmark: Any, slice_features: np.ndarray, size: int) -> None:
    """The same trees walked row by row in Python (margins only, no contributions)."""
    model = load_default_model()
    assert isinstance(model, TreeEnsembleModel)
    benchmark(_per_row, model, slice_features[:size])


def _per_row_with_contributions(
    model: TreeEnsembleModel, x: np.ndarray
) -> list[tuple[float, list[float]]]:
    t = model.trees
    feature, threshold = t.feature.tolist(), t.threshold.tolist()
    left, right, value = t.left.tolist(), t.right.tolist(), t.value.tolist()
    roots = t.roots.tolist()
    cal = model.calibration
    z, _ = model.inputs(x)
    out = []
    for row in z.tolist():
        total = 0.0
        credit = [0.0] * len(row)
        for node in roots:
            total += value[node]
            while left[node] != node:
                child = right[node] if row[feature[node]] > threshold[node] else left[node]
                change = value[child] - value[node]
                credit[feature[node]] += change
                total += change
                node = child
        log_odds = cal.slope * total + cal.intercept
        out.append((1.0 / (1.0 + math.exp(-log_odds)), [cal.slope * c for c in credit]))
    return out


@pytest.mark.parametrize("size", [1, 16, 256])
def test_model_per_row_loop_with_contributions(
    benchmark: Any, slice_features: np.ndarray, size: int
) -> None:
    """The served call's whole work (scores and contributions) row by row in Python."""
    model = load_default_model()
    assert isinstance(model, TreeEnsembleModel)
    rows = _per_row_with_contributions(model, slice_features[:size])
    served = model.predict(slice_features[:size])
    # The same model: the loop is a fair baseline only if it computes the same thing.
    assert np.allclose([s for s, _ in rows], served.scores, rtol=1e-9, atol=0)
    assert np.allclose([c for _, c in rows], served.contributions, rtol=0, atol=1e-9)
    benchmark(_per_row_with_contributions, model, slice_features[:size])
