"""The committed slice of published data, replayed through the running service over
HTTP: every online feature the service stored equals the published one (and the
offline computation, for the features the handbook does not publish), and the
live scores give the protocol's figures as ``sankofa evaluate`` does."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np

from conftest import FIXTURES, LiveServer
from sankofa.engine.feature_names import N_FEATURES, N_SERVED_FEATURES
from sankofa.engine.features_offline import compute_served_features
from sankofa.engine.serving import default_model_path
from sankofa.evaluation.train import evaluate_split
from sankofa.sim.compare import Comparison, compare, fetch_stored
from sankofa.sim.data import load_features, load_raw
from sankofa.sim.replay import run_replay

SLICE = FIXTURES / "handbook-slice.csv.gz"


def replay_args(url: str, report: Path, **over: Any) -> argparse.Namespace:
    values: dict[str, Any] = {
        "input": SLICE,
        "url": url,
        "date_from": None,
        "date_to": None,
        "rate": None,
        "concurrency": 4,
        "batch": 25,
        "priority_mix": "critical=0.05,high=0.15,normal=0.6,low=0.2",
        "label_delay_days": 7.0,
        "offset": "-03:00",
        "report": report,
        "id_prefix": "",
        "seed": 0,
        "no_progress": True,
        "protocol": None,
    }
    values.update(over)
    return argparse.Namespace(**values)


def compare_slice(database_url: str) -> Comparison:
    ids, published = load_features(SLICE)
    return compare(load_raw(SLICE), ids, published, asyncio.run(fetch_stored(database_url)))


def test_replayed_slice_stores_the_published_features(
    live_server: LiveServer, database_url: str, tmp_path: Path
) -> None:
    report_path = tmp_path / "report.json"
    code = run_replay(replay_args(live_server.url, report_path))
    report = json.loads(report_path.read_text())
    assert code == 0, report
    raw = load_raw(SLICE)
    n = len(raw)
    zero = int((raw.amount_cents == 0).sum())
    assert zero == 2  # the slice holds two of the published data's zero amounts
    assert report["sent"] == n and report["accepted"] == n - zero
    # Only the zero amounts are refused, each with a 422 naming the amount.
    assert report["errors_by_status"] == {"422": zero}
    assert report["refused_transactions"] == {"422": zero}
    assert all(r["errors"][0]["field"].endswith("amount") for r in report["refused"])
    assert report["labels_posted"] > 0
    assert sum(report["decisions"].values()) == n - zero
    assert set(report["latency_ms"]) >= {"normal", "all"}
    assert "auc_roc" in report["quality"]

    result = compare_slice(database_url)
    assert result.rows_stored == n - zero
    assert result.values_compared > 10_000  # every non-empty published value of the slice
    assert result.values_unexplained == 0, result.examples
    # The refused zero amounts do change a few values: exactly the rows whose windows held them.
    assert 0 < result.values_explained < result.values_compared // 100


def test_replayed_terminal_history_equals_the_offline_computation(
    live_server: LiveServer, database_url: str, tmp_path: Path
) -> None:
    """The three served values the handbook does not publish, online against offline,
    on every stored row (the refused zero amounts are left out of both)."""
    assert run_replay(replay_args(live_server.url, tmp_path / "r.json")) == 0
    raw = load_raw(SLICE)
    kept = raw.take(raw.amount_cents > 0)
    t = kept.tx_datetime.astype(np.float64)
    offline = compute_served_features(
        event_time_s=t + 3 * 3600,
        local_time_s=t,
        customer=kept.customer_id,
        terminal=kept.terminal_id,
        amount_cents=kept.amount_cents,
        fraud=kept.fraud,
    )
    stored = asyncio.run(fetch_stored(database_url))
    online = np.asarray([stored[int(i)] for i in kept.transaction_id])
    assert online.shape == (len(kept), N_SERVED_FEATURES)
    history = slice(N_FEATURES, N_SERVED_FEATURES)
    assert np.array_equal(online[:, history], offline[:, history])
    assert (online[:, N_FEATURES] > 0).sum() > 100  # known fraud streaks were exercised


def test_replay_gives_the_split_protocol_figures_of_evaluate(
    live_server: LiveServer, tmp_path: Path
) -> None:
    """--protocol split: the live scores of exactly the protocol's test set, within 0.01
    of ``sankofa evaluate`` with the served artefact (the slice covers the split)."""
    report_path = tmp_path / "report.json"
    assert run_replay(replay_args(live_server.url, report_path, protocol="split")) == 0
    live = json.loads(report_path.read_text())["protocol"]
    offline = evaluate_split(load_raw(SLICE), model=str(default_model_path()))
    assert live["test"]["transactions"] == offline["test"]["transactions"]
    assert live["test"]["scored"] == live["test"]["transactions"] - live["test"]["not_stored"]
    for metric in ("auc_roc", "average_precision", "card_precision_at_100"):
        assert abs(live["metrics"][metric] - offline["metrics"][metric]) <= 0.01, metric


def test_single_transaction_requests_give_the_same_features(
    live_server: LiveServer, database_url: str, tmp_path: Path
) -> None:
    """The single endpoint, one request per transaction, agrees with the published values too."""
    report_path = tmp_path / "report.json"
    code = run_replay(
        replay_args(live_server.url, report_path, batch=1, concurrency=8, date_from=None)
    )
    assert code == 0, report_path.read_text()
    result = compare_slice(database_url)
    assert result.values_compared > 10_000
    assert result.values_unexplained == 0, result.examples


def test_replaying_twice_counts_nothing_twice(
    live_server: LiveServer, database_url: str, tmp_path: Path
) -> None:
    """A second replay of the same ids is all replays: same decisions, features unchanged."""
    first = tmp_path / "first.json"
    second = tmp_path / "second.json"
    assert run_replay(replay_args(live_server.url, first)) == 0
    before = asyncio.run(fetch_stored(database_url))
    assert run_replay(replay_args(live_server.url, second, concurrency=2, batch=100)) == 0
    after = asyncio.run(fetch_stored(database_url))
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    r1, r2 = json.loads(first.read_text()), json.loads(second.read_text())
    assert r1["decisions"] == r2["decisions"]
