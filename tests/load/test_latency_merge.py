"""Percentiles are exact after merging processes; live histograms merge by adding counts."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from sankofa.load.histogram import (
    N_BUCKETS,
    LatencyHistogram,
    bucket_high,
    bucket_index,
    percentile,
)
from sankofa.load.plan import make_plan, parse_priority_mix
from sankofa.load.report import summarise
from sankofa.load.runner import RunSpec, merge_results
from sankofa.load.worker import ReadyInfo, WorkerResult

QS = (0.0, 0.01, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0)


def test_percentile_is_numpys_inverted_cdf() -> None:
    values = np.random.default_rng(0).lognormal(0.0, 1.0, 10_001)
    for q in QS:
        assert percentile(values, q) == np.quantile(values, q, method="inverted_cdf")
    assert percentile(np.array([3.0, 1.0, 2.0]), 0.5) == 2.0
    assert np.isnan(percentile(np.zeros(0), 0.5))


def test_histogram_is_exact_below_2048_us_and_within_a_tenth_of_a_percent_above() -> None:
    rng = np.random.default_rng(1)
    small = rng.integers(0, 2048, 5000).astype(np.float64)
    h = LatencyHistogram.of(small)
    for q in QS:
        assert h.value_at(q) == np.quantile(small, q, method="inverted_cdf")
    large = rng.lognormal(9.0, 2.0, 20_000)  # about 8 ms, spread over decades
    h = LatencyHistogram.of(large)
    for q in QS[1:]:
        exact = np.quantile(np.floor(large), q, method="inverted_cdf")
        assert exact <= h.value_at(q) <= exact * (1 + 1 / 1024) + 1


def test_buckets_cover_each_value_with_bounded_width() -> None:
    v = np.unique(np.random.default_rng(2).integers(0, 2**27, 50_000))
    idx = bucket_index(v)
    high = bucket_high(idx)
    assert np.all(idx >= 0) and np.all(idx < N_BUCKETS)
    assert np.all(high >= v) and np.all(high - v <= np.maximum(v / 1024, 0))
    assert np.all(np.diff(idx) >= 0)  # monotonic
    assert bucket_index([2**40]).tolist() == [N_BUCKETS - 1]  # clamped, not lost


def test_histograms_from_processes_merge_exactly() -> None:
    rng = np.random.default_rng(3)
    parts = [rng.lognormal(7.0, 1.5, n) for n in (1000, 2500, 7)]
    merged = LatencyHistogram()
    for part in parts:
        index, counts = LatencyHistogram.of(part).sparse()
        merged.merge(LatencyHistogram.from_sparse(index, counts))
    whole = LatencyHistogram.of(np.concatenate(parts))
    assert np.array_equal(merged.counts, whole.counts)
    assert merged.total == 3507


def _fake_result(
    k: int, intended: np.ndarray, latency_s: np.ndarray, status: np.ndarray, priority: np.ndarray
) -> WorkerResult:
    return WorkerResult(
        worker=k,
        intended_s=intended,
        sent_s=intended.copy(),
        done_s=intended + latency_s,
        status=status.astype(np.int16),
        priority=priority,
        wake_lateness_s=np.zeros(1),
        n_waited=0,
        max_waiting=0,
        retry_after=Counter({(503, True): int((status == 503).sum())}),
        cpu_s=0.1,
        loop="uvloop",
    )


def test_results_of_three_processes_merge_in_plan_order_with_exact_percentiles() -> None:
    mix = parse_priority_mix("critical=0.2,normal=0.8")
    spec = RunSpec(
        url="http://127.0.0.1:1",
        path="/v1/transactions",
        rate=1000.0,
        duration_s=3.0,
        mix=mix,
        run_id="lttest",
        processes=3,
        fixed_body=b"{}",
        sample_generator=False,
    )
    plan = make_plan(rate=1000.0, duration_s=3.0, arrival="poisson", mix=mix, batch=1, seed=5)
    rng = np.random.default_rng(6)
    latency = rng.lognormal(-6.0, 1.0, len(plan))  # seconds, about 2.5 ms
    status = np.where(rng.random(len(plan)) < 0.01, 503, 200)
    results = []
    for k in range(3):
        share = plan.share(k, 3)
        results.append(
            _fake_result(
                k, plan.offsets_s[share], latency[share], status[share], plan.priority[share]
            )
        )
    ready = [ReadyInfo(1, [], 0.0, 0) for _ in range(3)]
    data = merge_results(spec, plan, results, ready, [], 0.0, 0.0, False)
    assert np.array_equal(data.intended_s, plan.offsets_s)
    assert np.array_equal(data.done_s, plan.offsets_s + latency)

    report = summarise(data)
    ok = status == 200
    overall = report["overall"]
    assert overall["requests"] == len(plan)
    assert overall["ok"] == int(ok.sum())
    assert overall["errors_by_status"] == {"503": int((~ok).sum())}
    assert report["retry_after"] == {"503": {"with": int((~ok).sum()), "without": 0}}
    ms = latency[ok] * 1000.0
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("p99_9", 0.999)):
        expected = np.quantile(ms, q, method="inverted_cdf")
        assert overall["latency_ms"][name] == pytest.approx(expected, abs=5e-4)
    assert overall["latency_ms"]["max"] == pytest.approx(ms.max(), abs=5e-4)
    crit = ok & (plan.priority == 0)
    assert report["by_priority"]["critical"]["ok"] == int(crit.sum())
    assert report["by_priority"]["critical"]["latency_ms"]["p99"] == pytest.approx(
        np.quantile(latency[crit] * 1000.0, 0.99, method="inverted_cdf"), abs=5e-4
    )
    assert set(report["by_priority"]) == {"critical", "normal"}
    series = report["timeseries"]
    assert sum(row["offered"] for row in series) == len(plan)
    assert sum(row["ok"] + row["errors"] for row in series) == len(plan)
