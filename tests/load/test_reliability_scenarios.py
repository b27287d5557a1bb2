"""The arithmetic of the overload and soak scenarios, on hand-made reports: what
counts as normal latency, when it is back, and the RSS slope."""

from __future__ import annotations

from typing import Any

import pytest

from sankofa.load.scenarios import _overload_result, _rss_slope_mb_per_min


def row(p99: float | None, completed: int = 100, errors: int = 0) -> dict[str, Any]:
    return {
        "p99_ms": p99,
        "p50_ms": p99,
        "ok": completed - errors,
        "completed": completed,
        "errors": errors,
        "by_priority": {"critical": {"ok": 5}},
    }


def report(
    rows: list[dict[str, Any]], *, start: float, duration: float, warmup: float
) -> dict[str, Any]:
    lat = {"p50": 1.0, "p99": 2.0}
    return {
        "started_at_unix": start,
        "config": {"duration_s": duration, "warmup_s": warmup, "rate": 100.0},
        "timeseries": rows,
        "overall": {
            "offered_rps": 100.0,
            "achieved_rps": 100.0,
            "achieved_tps": 100.0,
            "success_rate": 1.0,
            "latency_ms": lat,
            "errors_by_status": {},
            "requests": 1000,
            "ok": 1000,
            "errors": 0,
        },
        "by_priority": {},
        "retry_after": {"503": {"with": 7, "without": 0}},
        "resources": {},
    }


def test_recovery_is_the_first_of_five_normal_seconds_after_the_flood() -> None:
    # Probe: 2 s warm-up, normal p99 of 10 ms, flood on the probe's clock 10..20 s
    # (p99 300 ms), then two slow seconds, a lucky one, two slow, then normal.
    rows = [row(50.0), row(50.0)] + [row(10.0)] * 8 + [row(300.0)] * 10
    rows += [row(80.0), row(80.0), row(15.0), row(90.0), row(30.0)] + [row(12.0)] * 8
    probe = report(rows, start=1000.0, duration=len(rows) - 2, warmup=2.0)
    flood = report([], start=1010.0, duration=10.0, warmup=0.0)
    out = _overload_result(300.0, probe, flood, alive=True, live_status=200)
    assert out["normal_p99_ms"] == 10.0
    # Bound 20 ms: seconds 20..24 are not all within it; 25.. are (30 ms at 24 is not).
    assert out["recovered_after_s"] == 5.0
    assert out["flood_window_s"] == [10.0, 20.0]
    assert out["flood"]["refusals_without_retry_after"] == 0


def test_never_recovered_is_none() -> None:
    rows = [row(10.0)] * 10 + [row(300.0)] * 15
    probe = report(rows, start=0.0, duration=25.0, warmup=0.0)
    flood = report([], start=10.0, duration=10.0, warmup=0.0)
    assert (
        _overload_result(1.0, probe, flood, alive=True, live_status=200)["recovered_after_s"]
        is None
    )


def test_rss_slope_in_mb_per_minute_after_the_warm_up() -> None:
    # 1 MB per 10 s after t=60 (6 MB/min); a jump during warm-up is left out.
    series = [[float(t), 0.0, 50.0 if t < 60 else 100.0 + (t - 60) / 10] for t in range(0, 600, 5)]
    assert _rss_slope_mb_per_min(series, 60.0) == pytest.approx(6.0)
    flat = [[float(t), 0.0, 80.0] for t in range(0, 600, 5)]
    assert _rss_slope_mb_per_min(flat, 60.0) == pytest.approx(0.0)
    assert _rss_slope_mb_per_min(flat[:2], 0.0) is None
