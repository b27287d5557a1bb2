"""``sankofa loadtest run`` end to end against a real ``sankofa serve``, briefly and at a low rate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import FIXTURES, LiveServer, free_port
from sankofa.load.cli import main

SLICE = FIXTURES / "handbook-slice.csv.gz"


def test_run_against_a_live_server_writes_a_complete_report(
    live_server: LiveServer, tmp_path: Path
) -> None:
    pytest.importorskip("psutil")
    pytest.importorskip("matplotlib")
    assert live_server.proc is not None
    rc = main(
        [
            "loadtest", "run",
            "--url", live_server.url,
            "--rate", "25",
            "--duration", "2",
            "--warmup", "0.4",
            "--arrival", "poisson",
            "--connections", "4",
            "--processes", "2",
            "--input", str(SLICE),
            "--server-pid", str(live_server.proc.pid),
            "--out", str(tmp_path),
            "--label", "smoke",
            "--seed", "11",
            "--quiet",
        ]
    )  # fmt: skip
    assert rc == 0
    report = json.loads((tmp_path / "smoke.json").read_text())
    overall = report["overall"]
    assert overall["requests"] > 0
    assert overall["ok"] == overall["requests"] == overall["completed"]
    assert overall["errors"] == 0 and overall["errors_by_status"] == {}
    assert overall["errors_by_kind"] == {}
    assert overall["achieved_rps"] > 0 and overall["achieved_tps"] == overall["achieved_rps"]
    for name in ("p50", "p95", "p99", "p99_9", "max"):
        assert overall["latency_ms"][name] > 0
    assert set(report["by_priority"]) <= {"critical", "high", "normal", "low"}
    assert sum(p["requests"] for p in report["by_priority"].values()) == overall["requests"]
    assert report["config"]["processes"] == 2 and report["config"]["arrival"] == "poisson"
    assert report["warmup"]["requests"] >= 0
    assert len(report["timeseries"]) >= 3
    row = report["timeseries"][1]
    assert {"t", "offered", "completed", "ok", "errors", "p50_ms", "p99_ms"} <= set(row)
    server = report["resources"][f"server pid {live_server.proc.pid}"]
    assert server["samples"] > 0 and server["rss_mb"]["max"] > 0
    assert "cpu_pct" in report["resources"]["generator"]
    assert report["generator"]["cpu_us_per_answer"] > 0
    for png in ("latency", "cdf", "throughput", "resources"):
        assert (tmp_path / f"smoke-{png}.png").stat().st_size > 0
    assert "| **all** |" in (tmp_path / "smoke.md").read_text()


def test_unreachable_server_and_bad_arguments_are_reported(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    common = ["loadtest", "run", "--url", url, "--duration", "1", "--input", str(SLICE)]
    assert main([*common, "--rate", "5", "--priority-mix", "urgent=1", "--quiet"]) == 2
    assert main([*common, "--rate", "5", "--out", str(tmp_path), "--quiet"]) == 2
    with pytest.raises(SystemExit):
        main([*common, "--rate", "0"])
