"""CPU and memory of the server (and of the generator itself), sampled during a run.

A group is a process tree (``--server-pid``: uvicorn's worker processes are
the server's children) or every process with a name (``--sample-process-name
postgres``: one backend per connection, coming and going). Each sample sums
the group: CPU as percent of one core over the last interval (from CPU-time
deltas per process, so a process that appeared since the last sample counts
from its start), RSS in bytes. Summed RSS counts shared pages (PostgreSQL's
shared buffers) once per process: an upper bound, said so in the report.

psutil is imported only here and only when sampling is asked for (it comes
with the ``load`` extra).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sankofa.load.constants import SAMPLE_INTERVAL_S

if TYPE_CHECKING:
    import psutil


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """What to sample: the process tree rooted at ``pid``, all processes named ``name``,
    or exactly the processes ``pids`` (without their children)."""

    label: str
    pid: int | None = None
    name: str | None = None
    pids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if (self.pid is not None) + (self.name is not None) + bool(self.pids) != 1:
            raise ValueError("give exactly one of pid, name and pids")


@dataclass(slots=True)
class GroupSeries:
    """Samples of one group: times (monotonic s), CPU % of one core, RSS bytes, process count."""

    spec: GroupSpec
    t: list[float] = field(default_factory=list)
    cpu_pct: list[float] = field(default_factory=list)
    rss_bytes: list[int] = field(default_factory=list)
    processes: list[int] = field(default_factory=list)
    error: str | None = None


class ResourceSampler:
    """Samples every group every ``interval_s`` in a background thread, from start() to stop()."""

    def __init__(self, groups: list[GroupSpec], *, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        import psutil as _psutil

        self._psutil = _psutil
        self._interval_s = interval_s
        self.series = [GroupSeries(g) for g in groups]
        # Last CPU time per process, keyed by (pid, create time) so a reused pid is a new process.
        self._last_cpu: list[dict[tuple[int, float], float]] = [{} for _ in groups]
        self._last_t: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._sample()  # the baseline for the first interval
        self._thread = threading.Thread(target=self._run, name="resource-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> list[GroupSeries]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        return self.series

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample()

    def _processes(self, spec: GroupSpec) -> list[psutil.Process]:
        ps = self._psutil
        if spec.pid is not None:
            root = ps.Process(spec.pid)
            return [root, *root.children(recursive=True)]
        if spec.pids:
            found = []
            for pid in spec.pids:
                try:
                    found.append(ps.Process(pid))
                except ps.NoSuchProcess:
                    continue
            return found
        return [p for p in ps.process_iter(["name"]) if p.info.get("name") == spec.name]

    def _sample(self) -> None:
        now = time.monotonic()
        last_t = self._last_t
        self._last_t = now
        for k, series in enumerate(self.series):
            if series.error is not None:
                continue
            try:
                procs = self._processes(series.spec)
            except self._psutil.Error as exc:
                series.error = f"{type(exc).__name__}: {exc}"
                continue
            cpu_s = 0.0
            rss = 0
            seen: dict[tuple[int, float], float] = {}
            for p in procs:
                try:
                    with p.oneshot():
                        key = (p.pid, p.create_time())
                        times: Any = p.cpu_times()
                        rss += int(p.memory_info().rss)
                except self._psutil.Error:
                    continue  # exited between listing and reading: its last interval is lost
                total = float(times.user + times.system)
                seen[key] = total
                before = self._last_cpu[k].get(key)
                if before is not None:
                    cpu_s += total - before
                elif last_t is not None and key[1] >= time.time() - (now - last_t):
                    cpu_s += total  # started during this interval
            self._last_cpu[k] = seen
            if last_t is None:
                continue
            series.t.append(now)
            series.cpu_pct.append(100.0 * cpu_s / max(now - last_t, 1e-9))
            series.rss_bytes.append(rss)
            series.processes.append(len(seen))


def psutil_available() -> bool:
    try:
        import psutil  # noqa: F401
    except ImportError:
        return False
    return True
