"""Run wrk (Debian package ``wrk``) with a POST body, and read its figures.

wrk is a C closed-loop generator: against the same trivial endpoint, with the
same connections and the same request (method, headers, body), it shows how
far our Python generator is from what the machine allows. The request is set
in a small Lua script written to a temporary file.
"""

from __future__ import annotations

import re
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
_LATENCY_LINE = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", re.M)
_ERRORS = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)|Socket errors:[^\n]*", re.M)


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests_per_s: float
    requests: int
    latency_ms: dict[str, float]
    errors: str | None
    cpu_s: float  # wrk's own CPU time (user + system)
    command: list[str]
    output: str


def wrk_path() -> str | None:
    return shutil.which("wrk")


def lua_script(body: bytes, headers: dict[str, str]) -> str:
    """A wrk script sending ``body`` as a POST with ``headers``."""
    text = body.decode("utf-8")
    level = "=" * 3
    while f"]{level}]" in text:
        level += "="
    lines = ['wrk.method = "POST"', f"wrk.body = [{level}[{text}]{level}]"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    return "\n".join(lines) + "\n"


def parse_output(output: str) -> tuple[float, int, dict[str, float], str | None]:
    rps = _RPS.search(output)
    total = _TOTAL.search(output)
    if rps is None or total is None:
        raise ValueError(f"cannot read wrk's output:\n{output}")
    latency = {f"p{m[0]}": float(m[1]) * _UNITS[m[2]] for m in _LATENCY_LINE.findall(output)}
    errors = [m.group(0).strip() for m in _ERRORS.finditer(output)]
    return float(rps.group(1)), int(total.group(1)), latency, "; ".join(errors) or None


def run_wrk(
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    connections: int,
    threads: int,
    duration_s: float,
) -> WrkResult:
    """Run wrk to completion (bounded by ``duration_s`` plus a margin) and parse it."""
    exe = wrk_path()
    if exe is None:
        raise FileNotFoundError("wrk is not installed (Debian: apt-get install -y wrk)")
    with tempfile.TemporaryDirectory(prefix="sankofa-wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(lua_script(body, headers))
        command = [
            exe,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(round(duration_s), 1)}s",
            "--latency",
            "-s",
            str(script),
            url,
        ]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=duration_s + 60, check=False
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    rps, total, latency, errors = parse_output(done.stdout)
    return WrkResult(rps, total, latency, errors, cpu_s, command, done.stdout)
