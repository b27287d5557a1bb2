"""Worker processes, one per core, each with its own listening socket (SO_REUSEPORT).

uvicorn's own ``--workers`` shares one listening socket between the workers,
and whichever is awake first accepts: under a burst of new keep-alive
connections one worker can take nearly all of them (measured here: 39 % of a
core on one worker, 0.4 % on the other, at 1,500 requests/s). With a socket
per worker and SO_REUSEPORT, the kernel spreads connections over the workers
by hash. This supervisor starts the workers, restarts one that dies, and on
SIGTERM / SIGINT passes the signal on (each worker drains, see
``api.lifecycle``) and waits for them within the grace period.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from sankofa.logs import LogFormat, configure_logging, uvicorn_log_config
from sankofa.tls import TLSConfig, uvicorn_tls_options

log = logging.getLogger(__name__)

#: A worker that dies sooner than this after starting is not restarted in a loop.
_MIN_UPTIME_S = 5.0


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    host: str
    port: int
    log_level: str
    graceful_shutdown_s: int
    #: Added to the process's nice value: bulk workers yield the CPU to the
    #: critical lane's worker whenever both have work.
    niceness: int = 0
    log_format: LogFormat = "json"
    #: The certificate and key to serve HTTPS with (TLS 1.3 only; sankofa.tls),
    #: or None for plain HTTP.
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None


def reuseport_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _worker(config: WorkerConfig) -> None:
    import uvicorn

    # A spawned process starts with no logging configured: its lines must come
    # out like the supervisor's (make_app leaves a configured root alone).
    configure_logging(level=config.log_level, fmt=config.log_format)
    if config.niceness:
        os.nice(config.niceness)
    sock = reuseport_socket(config.host, config.port)
    server = uvicorn.Server(
        TLSConfig(
            "sankofa.api.asgi:make_app",
            factory=True,
            log_level=config.log_level,
            access_log=False,
            timeout_graceful_shutdown=config.graceful_shutdown_s,
            **uvicorn_log_config(config.log_format),
            **uvicorn_tls_options(config.tls_certfile, config.tls_keyfile),
        )
    )
    server.run(sockets=[sock])


class Supervisor:
    """``workers`` processes on ``config.port``, plus, when ``lane`` is given, one more
    on the lane's port for critical traffic (see ``sankofa serve --critical-port``)."""

    def __init__(
        self, config: WorkerConfig, workers: int, lane: WorkerConfig | None = None
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self._config = config
        self._lane = lane
        self._workers = workers
        self._context = multiprocessing.get_context("spawn")
        self._processes: list[tuple[BaseProcess, float]] = []
        self._stopping = False
        self._failed = False

    def _configs(self) -> list[WorkerConfig]:
        return [self._config] * self._workers + ([self._lane] if self._lane is not None else [])

    def _start_one(self, config: WorkerConfig) -> tuple[BaseProcess, float]:
        process = self._context.Process(target=_worker, args=(config,), daemon=False)
        process.start()
        return process, time.monotonic()

    def run(self) -> int:
        # Fail early and plainly if the port is taken by something else.
        for config in {(c.host, c.port) for c in self._configs()}:
            reuseport_socket(*config).close()
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            configs = self._configs()
            self._processes = [self._start_one(c) for c in configs]
            log.info(
                "started %d workers on %s:%d", self._workers, self._config.host, self._config.port
            )
            while not self._stopping:
                time.sleep(0.2)
                for i, (process, started) in enumerate(self._processes):
                    if process.is_alive() or self._stopping:
                        continue
                    _forget_metrics_of(process.pid)
                    if time.monotonic() - started < _MIN_UPTIME_S:
                        log.error(
                            "worker %s exited at start (code %s); stopping",
                            process.pid,
                            process.exitcode,
                        )
                        self._stopping = True
                        self._failed = True
                        break
                    log.warning(
                        "worker %s died (code %s); restarting it", process.pid, process.exitcode
                    )
                    self._processes[i] = self._start_one(configs[i])
            code = self._stop_all()
            return 1 if self._failed else code
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stopping = True

    def _stop_all(self) -> int:
        for process, _ in self._processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self._config.graceful_shutdown_s + 5
        code = 0
        for process, _ in self._processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker %s did not stop in time; killing it", process.pid)
                process.kill()
                process.join()
                code = 1
            _forget_metrics_of(process.pid)
        return code


def _forget_metrics_of(pid: int | None) -> None:
    if pid is None:
        return
    from sankofa.metrics import mark_process_dead

    mark_process_dead(pid)
