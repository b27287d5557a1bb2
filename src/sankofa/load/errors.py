"""The load generator's failures (it is a client: none of them becomes HTTP).

::

    LoadTestError            a run could not be carried out
    +-- LoadTestSetupError   before the start: no data, server unreachable, workers not ready
    +-- WorkerFailedError    a worker process failed, or did not stop when told

Per-request failures (refused connections, resets, timeouts, error statuses)
are not exceptions: they are recorded and reported, since at load they are
measurements. Misuse (a bad argument) is a plain ``ValueError``.
"""

from __future__ import annotations


class LoadTestError(Exception):
    """Base of the load generator's runtime failures."""


class LoadTestSetupError(LoadTestError):
    """The run could not start."""


class WorkerFailedError(LoadTestError):
    """A worker process failed or would not stop."""
