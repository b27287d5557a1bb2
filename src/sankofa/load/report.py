"""A run's figures: per priority and overall, per second, and the resources sampled.

Definitions (also written into every report under ``definitions``):

* measured requests: those intended at or after the warm-up;
* latency: from the intended send time (or the actual send, if that was
  earlier) to the last byte of the answer, over 2xx answers; error answers'
  latencies are given apart;
* achieved rate: 2xx answers to measured requests that arrived within the
  measured window, per second of it (transactions: times the batch size);
* success rate: 2xx answers over measured requests;
* errors: by HTTP status, and by transport kind (``connect``, ``reset``,
  ``closed``, ``timeout``, ``protocol``, ``not_done``); a timeout whose
  request never got a connection before its deadline is a timeout too,
  counted again under ``timeouts_before_send``.
"""

from __future__ import annotations

import platform
import sys
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from sankofa.load import _loop
from sankofa.load.constants import CODE_TIMEOUT, ERROR_KINDS, PERCENTILES
from sankofa.load.histogram import percentile
from sankofa.load.runner import RunData
from sankofa.queues.priority import PRIORITY_NAMES

_DEFINITIONS = {
    "latency_ms": "intended send time (or actual send, if earlier) to the last byte of a 2xx"
    " answer",
    "achieved_rps": "2xx answers to measured requests arriving within the measured window,"
    " per second of it",
    "success_rate": "2xx answers / measured requests",
    "percentile": "smallest latency with at least that fraction at or below it (inverted CDF)",
    "rss": "summed over a group's processes; shared pages count once per process",
}

FloatArray = npt.NDArray[np.float64]


def _r(x: float, nd: int = 3) -> float | None:
    return None if not np.isfinite(x) else round(float(x), nd)


def latency_summary(ms: FloatArray) -> dict[str, float | None]:
    out: dict[str, float | None] = {name: _r(percentile(ms, q)) for name, q in PERCENTILES}
    out["max"] = _r(float(ms.max())) if ms.size else None
    out["mean"] = _r(float(ms.mean())) if ms.size else None
    return out


class _Views:
    """Derived per-request arrays, computed once."""

    def __init__(self, data: RunData) -> None:
        spec = data.spec
        self.data = data
        self.window = (
            (spec.warmup_s, spec.total_s) if spec.rate is not None else (0.0, spec.total_s)
        )
        self.window_s = self.window[1] - self.window[0]
        self.measured = data.intended_s >= self.window[0]
        self.answered = data.status > 0
        self.ok = (data.status >= 200) & (data.status < 300)
        self.was_sent = ~np.isnan(data.sent_s)
        start = np.fmin(data.intended_s, data.sent_s)
        self.latency_ms = (data.done_s - start) * 1000.0
        self.in_window = (data.done_s >= self.window[0]) & (data.done_s < self.window[1])


def _group(v: _Views, mask: npt.NDArray[np.bool_], batch: int) -> dict[str, Any]:
    data = v.data
    m = mask & v.measured
    status = data.status[m]
    ok = v.ok[m]
    answered = v.answered[m]
    errors_http = Counter(int(s) for s in status[answered & ~ok])
    errors_transport = Counter(ERROR_KINDS.get(int(s), str(int(s))) for s in status[~answered])
    n = int(m.sum())
    n_ok = int(ok.sum())
    ok_in_window = int((m & v.ok & v.in_window).sum())
    rps = ok_in_window / v.window_s if v.window_s > 0 else 0.0
    err_lat = v.latency_ms[m & v.answered & ~v.ok]
    return {
        "requests": n,
        "transactions": n * batch,
        "sent": int(v.was_sent[m].sum()),
        "completed": int(answered.sum()),
        "ok": n_ok,
        "errors": int(n - n_ok),
        "errors_by_status": {str(k): c for k, c in sorted(errors_http.items())},
        "errors_by_kind": dict(sorted(errors_transport.items())),
        "timeouts_before_send": int(((status == CODE_TIMEOUT) & ~v.was_sent[m]).sum()),
        "success_rate": _r(n_ok / n, 6) if n else None,
        "offered_rps": _r(n / v.window_s, 2) if v.window_s > 0 else None,
        "achieved_rps": _r(rps, 2),
        "achieved_tps": _r(rps * batch, 2),
        "latency_ms": latency_summary(v.latency_ms[m & v.ok]),
        "error_latency_ms": latency_summary(err_lat) if err_lat.size else None,
    }


def timeseries(v: _Views) -> list[dict[str, Any]]:
    """One row per second from the start: offered, sent, completed, ok, errors, p50, p99."""
    data = v.data
    done = data.done_s
    horizon = max(data.spec.total_s, float(np.nanmax(done)) if np.isfinite(done).any() else 0.0)
    n_sec = int(np.ceil(horizon)) or 1
    offered = np.bincount(_sec(data.intended_s, n_sec), minlength=n_sec + 1)
    sent = np.bincount(_sec(data.sent_s, n_sec), minlength=n_sec + 1)
    sec_done = _sec(done, n_sec)
    completed = np.bincount(sec_done[v.answered], minlength=n_sec + 1)
    ok = np.bincount(sec_done[v.ok], minlength=n_sec + 1)
    finished = np.isfinite(done)
    errors = np.bincount(sec_done[finished & ~v.ok], minlength=n_sec + 1)
    # Latencies of 2xx answers grouped by the second they arrived in, per class.
    ok_idx = np.flatnonzero(v.ok)
    order = np.lexsort((v.latency_ms[ok_idx], sec_done[ok_idx]))
    ok_idx = ok_idx[order]
    secs = sec_done[ok_idx]
    bounds = np.searchsorted(secs, np.arange(n_sec + 2))
    rows: list[dict[str, Any]] = []
    for s in range(n_sec):
        idx = ok_idx[bounds[s] : bounds[s + 1]]
        lat = v.latency_ms[idx]
        pri = data.priority[idx]
        per: dict[str, Any] = {}
        for code, name in enumerate(PRIORITY_NAMES):
            lp = lat[pri == code]
            if lp.size:
                per[name] = {
                    "ok": int(lp.size),
                    "p50_ms": _r(percentile(lp, 0.5)),
                    "p99_ms": _r(percentile(lp, 0.99)),
                }
        rows.append(
            {
                "t": s,
                "warmup": bool(s < data.spec.warmup_s),
                # Seconds past the schedule hold only the last answers' tail.
                "after_schedule": bool(s >= data.spec.total_s),
                "offered": int(offered[s]),
                "sent": int(sent[s]),
                "completed": int(completed[s]),
                "ok": int(ok[s]),
                "errors": int(errors[s]),
                "p50_ms": _r(percentile(lat, 0.5)),
                "p99_ms": _r(percentile(lat, 0.99)),
                "by_priority": per,
            }
        )
    return rows


def _sec(t: FloatArray, n_sec: int) -> npt.NDArray[np.intp]:
    """The whole second each time falls in; NaN and out-of-range times go to a spare bin."""
    out = np.full(t.shape, n_sec, dtype=np.intp)
    ok = np.isfinite(t) & (t >= 0)
    out[ok] = np.minimum(t[ok].astype(np.intp), n_sec)
    return out


def resources(data: RunData, window: tuple[float, float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for g in data.resources:
        t = np.asarray(g.t) - data.resources_t0
        cpu = np.asarray(g.cpu_pct)
        rss_mb = np.asarray(g.rss_bytes, dtype=np.float64) / 2**20
        inside = (t >= window[0]) & (t <= window[1] + 0.5)
        if not inside.any():
            inside = np.ones(t.shape, dtype=bool)
        entry: dict[str, Any] = {
            "pid": g.spec.pid,
            "name": g.spec.name,
            "error": g.error,
            "samples": int(t.size),
        }
        if t.size:
            entry.update(
                {
                    "cpu_pct": {
                        "mean": _r(float(cpu[inside].mean()), 1),
                        "max": _r(float(cpu[inside].max()), 1),
                    },
                    "rss_mb": {
                        "mean": _r(float(rss_mb[inside].mean()), 1),
                        "max": _r(float(rss_mb[inside].max()), 1),
                    },
                    "processes_max": int(max(g.processes)),
                    "series": [
                        [_r(float(a), 2), _r(float(b), 1), _r(float(c), 1)]
                        for a, b, c in zip(t, cpu, rss_mb, strict=True)
                    ],
                }
            )
        out[g.spec.label] = entry
    return out


def _retry_after(data: RunData) -> dict[str, dict[str, int]]:
    """For 429 / 503 / 504 answers: how many carried Retry-After, how many did not."""
    counts = data.retry_after
    return {
        str(code): {"with": counts[(code, True)], "without": counts[(code, False)]}
        for code in sorted({code for code, _ in counts})
    }


def summarise(data: RunData) -> dict[str, Any]:
    """The whole report as a JSON-ready dict."""
    spec = data.spec
    v = _Views(data)
    everyone = np.ones(data.status.shape, dtype=bool)
    by_priority = {
        name: _group(v, data.priority == code, spec.batch)
        for code, name in enumerate(PRIORITY_NAMES)
        if (data.priority == code).any()
    }
    lag = (data.sent_s - data.intended_s)[v.was_sent & v.measured] * 1000.0
    wake_ms = np.concatenate([np.zeros(0), *(w.wake_lateness_s for w in data.workers)]) * 1000.0
    cpu_s = sum(w.cpu_s for w in data.workers)
    answered = int(v.answered.sum())
    return {
        "label": spec.label,
        "run_id": spec.run_id,
        "started_at": datetime.fromtimestamp(data.started_at, UTC).isoformat(timespec="seconds"),
        "started_at_unix": round(data.started_at, 3),
        "definitions": _DEFINITIONS,
        "config": {
            "url": spec.url,
            "path": spec.path,
            "model": "closed" if spec.rate is None else "open",
            "rate": spec.rate,
            "arrival": spec.arrival if spec.rate is not None else None,
            "duration_s": spec.duration_s,
            "warmup_s": spec.warmup_s,
            "connections": data.connections,
            "processes": spec.processes,
            "batch": spec.batch,
            "priority_mix": {
                n: _r(float(p), 4) for n, p in zip(PRIORITY_NAMES, spec.mix, strict=True)
            },
            "seed": spec.seed,
            "timeout_s": spec.timeout_s,
            "input": str(data.input_path) if data.input_path else None,
            "fixed_body": spec.fixed_body is not None,
        },
        "overall": _group(v, everyone, spec.batch),
        "by_priority": by_priority,
        "retry_after": _retry_after(data),
        "warmup": {
            "requests": int((~v.measured).sum()),
            "ok": int((~v.measured & v.ok).sum()),
        },
        "generator": {
            "loop": data.workers[0].loop if data.workers else _loop.loop_name(),
            "python": platform.python_version(),
            "platform": sys.platform,
            "connections_opened_at_start": sum(r.connected for r in data.ready),
            "connect_errors_at_start": sorted({e for r in data.ready for e in r.connect_errors}),
            "payload_build_s": _r(max((r.build_s for r in data.ready), default=0.0), 2),
            "payload_mb": _r(sum(r.payload_bytes for r in data.ready) / 2**20, 1),
            "requests_waited_for_connection": sum(w.n_waited for w in data.workers),
            "max_waiting_for_connection": max((w.max_waiting for w in data.workers), default=0),
            "send_lag_ms": latency_summary(lag)
            | {"min": _r(float(lag.min())) if lag.size else None},
            "dispatcher_lateness_ms": latency_summary(wake_ms),
            "cpu_s": _r(cpu_s, 2),
            # Includes the idle loop's wake-ups: meaningful at high rates only.
            "cpu_us_per_answer": _r(cpu_s / answered * 1e6, 1) if answered else None,
            "stopped_early": data.stopped_early,
        },
        "resources": resources(data, v.window),
        "timeseries": timeseries(v),
    }


def _fmt(x: Any, nd: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return f"{x:,}"


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown: configuration, a table per class, errors, resources."""
    c = report["config"]
    g = report["generator"]
    lines = [
        f"## Load test `{report['label']}` ({report['started_at']})",
        "",
        f"`{c['url']}{c['path']}`, {c['model']} model"
        + (f", {c['arrival']} arrivals at {_fmt(c['rate'])} req/s" if c["rate"] else "")
        + f", {c['duration_s']:g} s measured after {c['warmup_s']:g} s warm-up,"
        f" {c['connections']} connections, {c['processes']} process(es), batch {c['batch']},"
        f" seed {c['seed']}, run id `{report['run_id']}`.",
        "",
        "| class | requests | ok | errors | success | offered req/s | achieved req/s | tx/s"
        " | p50 ms | p95 ms | p99 ms | p99.9 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [*report["by_priority"].items(), ("**all**", report["overall"])]
    for name, s in rows:
        lat = s["latency_ms"]
        success = f"{s['success_rate'] * 100:.3f} %" if s["success_rate"] is not None else "-"
        lines.append(
            f"| {name} | {_fmt(s['requests'])} | {_fmt(s['ok'])} | {_fmt(s['errors'])}"
            f" | {success} | {_fmt(s['offered_rps'], 1)} | {_fmt(s['achieved_rps'], 1)}"
            f" | {_fmt(s['achieved_tps'], 1)} | {_fmt(lat['p50'])} | {_fmt(lat['p95'])}"
            f" | {_fmt(lat['p99'])} | {_fmt(lat['p99_9'])} | {_fmt(lat['max'])} |"
        )
    o = report["overall"]
    if o["errors"]:
        lines += [
            "",
            f"Errors by status: {o['errors_by_status'] or 'none'}; by kind:"
            f" {o['errors_by_kind'] or 'none'}; timeouts before send:"
            f" {o['timeouts_before_send']}. Retry-After on 429/503/504: {report['retry_after']}.",
        ]
    lag = g["send_lag_ms"]
    late = g["dispatcher_lateness_ms"]
    lines += [
        "",
        f"Generator: {g['loop']}, CPU {_fmt(g['cpu_s'])} s"
        f" ({_fmt(g['cpu_us_per_answer'], 1)} µs per answer); dispatcher lateness p99"
        f" {_fmt(late['p99'])} ms, max {_fmt(late['max'])} ms; send lag (incl. waiting for a"
        f" connection) p50 {_fmt(lag['p50'])} / p99 {_fmt(lag['p99'])} / max {_fmt(lag['max'])} ms;"
        f" {g['requests_waited_for_connection']:,} requests waited for a connection"
        f" (at most {g['max_waiting_for_connection']:,} at once).",
    ]
    if report["resources"]:
        lines += [
            "",
            "| process group | CPU % mean | CPU % max | RSS MB mean | RSS MB max | processes |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for label, r in report["resources"].items():
            if "cpu_pct" not in r:
                lines.append(f"| {label} | - | - | - | - | {r.get('error') or 'no samples'} |")
                continue
            lines.append(
                f"| {label} | {_fmt(r['cpu_pct']['mean'], 1)} | {_fmt(r['cpu_pct']['max'], 1)}"
                f" | {_fmt(r['rss_mb']['mean'], 1)} | {_fmt(r['rss_mb']['max'], 1)}"
                f" | {r['processes_max']} |"
            )
        lines.append("")
        lines.append("CPU % is of one core (200 % = both cores of this machine).")
    return "\n".join(lines) + "\n"
