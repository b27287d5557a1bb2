"""PNG plots of a run, from its report and its per-request data.

matplotlib is imported only when plotting (it comes with the ``load`` extra),
with the Agg backend: no display is needed or touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sankofa.load.runner import RunData
from sankofa.queues.priority import PRIORITY_NAMES

_COLOURS = {"critical": "#c0392b", "high": "#e67e22", "normal": "#2980b9", "low": "#7f8c8d"}


def write_plots(report: dict[str, Any], data: RunData, out_dir: Path, stem: str) -> list[Path]:
    """Latency over time, latency CDF, throughput and (if sampled) resources; returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    title = f"{report['label']}: {report['config']['path']}"
    series = [row for row in report["timeseries"] if not row.get("after_schedule")]
    t = np.array([row["t"] for row in series], dtype=np.float64) + 0.5

    # 1. Latency percentiles per class over time.
    fig, ax = plt.subplots(figsize=(10, 5))
    for name in PRIORITY_NAMES:
        p50 = [row["by_priority"].get(name, {}).get("p50_ms") for row in series]
        p99 = [row["by_priority"].get(name, {}).get("p99_ms") for row in series]
        if all(x is None for x in p99):
            continue
        colour = _COLOURS[name]
        ax.plot(t, _nan(p99), color=colour, label=f"{name} p99")
        ax.plot(t, _nan(p50), color=colour, linestyle="--", label=f"{name} p50")
    _shade_warmup(ax, report)
    ax.set_yscale("log")
    _plain_ticks(ax.yaxis)
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("latency (ms, log)")
    ax.set_title(f"{title}: latency of 2xx answers, per second they arrived in")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, ncol=2)
    written.append(_save(fig, out_dir / f"{stem}-latency.png"))
    plt.close(fig)

    # 2. Latency CDF per class, log x axis.
    fig, ax = plt.subplots(figsize=(8, 5))
    measured = data.intended_s >= (data.spec.warmup_s if data.spec.rate is not None else 0.0)
    ok = (data.status >= 200) & (data.status < 300) & measured
    latency = (data.done_s - np.fmin(data.intended_s, data.sent_s)) * 1000.0
    for code, name in enumerate(PRIORITY_NAMES):
        lat = np.sort(latency[ok & (data.priority == code)])
        if lat.size == 0:
            continue
        y = np.arange(1, lat.size + 1) / lat.size
        ax.step(lat, y, where="post", color=_COLOURS[name], label=f"{name} (n={lat.size:,})")
    ax.set_xscale("log")
    _plain_ticks(ax.xaxis)
    ax.set_xlabel("latency (ms, log)")
    ax.set_ylabel("fraction of 2xx answers at or below")
    ax.set_ylim(0, 1.001)
    ax.set_title(f"{title}: latency CDF")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)
    written.append(_save(fig, out_dir / f"{stem}-cdf.png"))
    plt.close(fig)

    # 3. Throughput over time.
    batch = report["config"]["batch"]
    fig, ax = plt.subplots(figsize=(10, 5))
    ax.plot(t, [row["offered"] for row in series], label="offered req/s", color="#7f8c8d")
    ax.plot(t, [row["ok"] for row in series], label="2xx answers/s", color="#27ae60")
    ax.plot(t, [row["errors"] for row in series], label="errors/s", color="#c0392b")
    _shade_warmup(ax, report)
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("requests per second")
    if batch > 1:
        sec = ax.secondary_yaxis("right", functions=(lambda x: x * batch, lambda x: x / batch))
        sec.set_ylabel(f"transactions per second (x{batch})")
    ax.set_title(f"{title}: throughput")
    ax.grid(True, alpha=0.3)
    _legend(ax)
    written.append(_save(fig, out_dir / f"{stem}-throughput.png"))
    plt.close(fig)

    # 4. Resources sampled: CPU % and RSS per process group.
    sampled = {k: v for k, v in report["resources"].items() if v.get("series")}
    if sampled:
        fig, (ax_cpu, ax_rss) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
        for label, r in sampled.items():
            s = np.array(r["series"], dtype=np.float64)
            ax_cpu.plot(s[:, 0], s[:, 1], label=label)
            ax_rss.plot(s[:, 0], s[:, 2], label=label)
        ax_cpu.set_ylabel("CPU % of one core")
        ax_rss.set_ylabel("RSS (MB, summed)")
        ax_rss.set_xlabel("time since start (s)")
        ax_cpu.set_title(f"{title}: resources")
        for a in (ax_cpu, ax_rss):
            _shade_warmup(a, report)
            a.grid(True, alpha=0.3)
            _legend(a)
        written.append(_save(fig, out_dir / f"{stem}-resources.png"))
        plt.close(fig)
    return written


def _plain_ticks(axis: Any) -> None:
    """Log-axis labels as plain numbers (0.5, 2, 10), not powers of ten."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda x, _pos: f"{x:g}" if _few(x) else ""))


def _few(x: float) -> bool:
    """Label only minor ticks at 2 and 5 times a power of ten, so labels do not collide."""
    if x <= 0:
        return False
    mantissa = x / 10 ** np.floor(np.log10(x))
    return bool(np.isclose(mantissa, 2) or np.isclose(mantissa, 5))


def _legend(ax: Any, ncol: int = 1) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", ncol=ncol)


def _nan(values: list[float | None]) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _shade_warmup(ax: Any, report: dict[str, Any]) -> None:
    warmup = report["config"]["warmup_s"]
    if warmup:
        ax.axvspan(0, warmup, color="#bdc3c7", alpha=0.3, label="warm-up")


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
