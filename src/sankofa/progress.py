"""A small progress bar on stderr for long commands (simulate, replay, train).

Redraws at most five times a second, shows rate and time left, and prints one
plain line per update when stderr is not a terminal (CI logs stay readable).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(
        self,
        total: int,
        label: str,
        *,
        unit: str = "it",
        stream: TextIO | None = None,
        enabled: bool = True,
        min_interval_s: float | None = None,
    ) -> None:
        if total < 0:
            raise ValueError("total must be >= 0")
        self.total = total
        self.label = label
        self.unit = unit
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()
        self._enabled = enabled
        self._interval = (
            min_interval_s if min_interval_s is not None else (0.2 if self._tty else 10.0)
        )
        self._start = time.monotonic()
        self._last = 0.0
        self.extra = ""

    def update(self, done: int, extra: str = "") -> None:
        self.done = done
        if extra:
            self.extra = extra
        now = time.monotonic()
        if now - self._last >= self._interval or done >= self.total:
            self._last = now
            self._draw(now)

    def advance(self, n: int = 1, extra: str = "") -> None:
        self.update(self.done + n, extra)

    def _draw(self, now: float) -> None:
        if not self._enabled:
            return
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        frac = self.done / self.total if self.total else 1.0
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = f"{left:5.0f}s left" if left != float("inf") else "  ?s left"
        bar = "#" * int(frac * 30)
        line = (
            f"{self.label} [{bar:<30}] {frac * 100:5.1f}% {self.done}/{self.total} {self.unit}"
            f" {rate:,.0f} {self.unit}/s {eta} {self.extra}"
        )
        if self._tty:
            self._stream.write("\r" + line[:200])
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def close(self) -> None:
        self._draw(time.monotonic())
        if self._enabled and self._tty:
            self._stream.write("\n")
            self._stream.flush()

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._start
