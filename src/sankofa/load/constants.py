"""The load generator's numbers, each with its reason."""

from __future__ import annotations

from typing import Final

#: Status codes recorded for requests that got no HTTP answer. Negative, so one
#: int16 array holds both and ``status > 0`` means "the server answered".
CODE_CONNECT: Final = -1  # the TCP connection could not be opened
CODE_RESET: Final = -2  # the connection broke (ECONNRESET, EPIPE) with a request in flight
CODE_CLOSED: Final = -3  # the peer closed cleanly before the whole answer arrived
CODE_TIMEOUT: Final = -4  # no answer within --timeout-s of the intended send time
CODE_PROTOCOL: Final = -5  # the bytes were not an HTTP/1.1 answer we can read
#: Never reached a terminal state (only possible if a worker is stopped early).
CODE_NOT_DONE: Final = 0

ERROR_KINDS: Final[dict[int, str]] = {
    CODE_CONNECT: "connect",
    CODE_RESET: "reset",
    CODE_CLOSED: "closed",
    CODE_TIMEOUT: "timeout",
    CODE_PROTOCOL: "protocol",
    CODE_NOT_DONE: "not_done",
}

#: The event loop's timers have millisecond resolution (libuv rounds a delay
#: to the nearest millisecond, so one under 0.5 ms fires at once: re-armed
#: again and again, that is a busy loop). So the dispatcher wakes half this
#: early and sends everything due within this much of now: no timer is ever
#: armed for less than half a millisecond, and a send is at most about half a
#: millisecond late because of the timer. Sending early costs the figures
#: nothing: latency runs from the earlier of the intended and the actual send.
DISPATCH_EARLY_S: Final = 0.001
#: How often in-flight requests are checked against their deadline. A timer per
#: request would cost more than the request's own parsing.
WATCHDOG_INTERVAL_S: Final = 0.05
#: An answer's header block larger than this is not a sane HTTP answer.
MAX_HEAD_BYTES: Final = 64 * 1024
#: Default connections: enough for this many seconds of latency at the offered
#: rate (Little's law), within the bounds below.
AUTO_CONNECTIONS_LATENCY_S: Final = 0.05
AUTO_CONNECTIONS_MIN: Final = 16
AUTO_CONNECTIONS_MAX: Final = 512
#: Closed-loop runs preallocate result slots for at most this rate per process;
#: well above what one Python process can do.
CLOSED_LOOP_MAX_RPS: Final = 250_000
#: How long workers get to build payloads and connect before the run starts.
SETUP_TIMEOUT_S: Final = 300.0
#: Margin between "every worker is ready" and the common start instant, so that
#: each worker is waiting when it comes.
START_MARGIN_S: Final = 0.25
#: Resource sampling period (server CPU and RSS).
SAMPLE_INTERVAL_S: Final = 0.5
#: Live histograms: latencies below 2**SUB_BUCKET_BITS microseconds are exact,
#: larger ones within 2**-(SUB_BUCKET_BITS-1) (0.1 %); values are clamped at
#: 2**MAX_VALUE_BITS microseconds (134 s, beyond any timeout).
SUB_BUCKET_BITS: Final = 11
MAX_VALUE_BITS: Final = 27
#: The weekday pattern of the data is kept when it is replayed again after its
#: end: each pass is shifted by whole weeks.
SECONDS_PER_WEEK: Final = 7 * 86_400
#: The handbook's naive local times are given this offset (Brazil, -03:00).
DEFAULT_UTC_OFFSET: Final = "-03:00"
#: Percentiles reported, as (name, fraction).
PERCENTILES: Final[tuple[tuple[str, float], ...]] = (
    ("p50", 0.50),
    ("p95", 0.95),
    ("p99", 0.99),
    ("p99_9", 0.999),
)
#: Arrival processes, and the default share of requests per priority class.
ARRIVALS: Final = ("constant", "poisson")
DEFAULT_PRIORITY_MIX: Final = "critical=0.05,high=0.15,normal=0.6,low=0.2"
