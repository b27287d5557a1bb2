"""The open-model schedule and engine, on a manual clock: intended times, and no coordinated omission."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sankofa.load.constants import CODE_TIMEOUT
from sankofa.load.engine import ClosedLoop, OpenLoop
from sankofa.load.http import ResponseHandler
from sankofa.load.plan import (
    arrival_offsets,
    draw_priorities,
    make_plan,
    parse_priority_mix,
)
from sankofa.queues.clock import ManualClock
from sankofa.queues.priority import PRIORITY_NAMES


def _unset(*args: object) -> None:
    raise AssertionError("on_response not set")


class FakeChannel:
    """Answers ``service_s`` after each send, on the manual clock (never, if None)."""

    def __init__(self, clock: ManualClock, service_s: float | None, status: int = 200) -> None:
        self.clock = clock
        self.service_s = service_s
        self.status = status
        self.token: int | None = None
        self.on_response: ResponseHandler = _unset
        self.sends: list[tuple[float, int]] = []

    def send(self, data: bytes, token: int) -> None:
        assert self.token is None, "one request at a time"
        self.token = token
        self.sends.append((self.clock.now(), token))
        if self.service_s is not None:
            self.clock.call_at(self.clock.now() + self.service_s, lambda: self._answer(token))

    def _answer(self, token: int) -> None:
        if self.token == token:
            self.token = None
            self.on_response(self, token, self.status, None, b"")

    def abort(self, code: int = CODE_TIMEOUT) -> None:
        token, self.token = self.token, None
        if token is not None:
            self.on_response(self, token, code, None, b"")


def _run_open(
    intended: list[float], channels: int, service_s: float | None, timeout_s: float = 10.0
) -> tuple[OpenLoop, list[FakeChannel]]:
    clock = ManualClock(start=100.0)
    chans = [FakeChannel(clock, service_s) for _ in range(channels)]
    finished: list[bool] = []
    engine = OpenLoop(
        clock=clock,
        channels=chans,
        payloads=[b"x"] * len(intended),
        intended=[100.0 + t for t in intended],
        timeout_s=timeout_s,
        early_s=0.0,
        on_finished=lambda: finished.append(True),
    )
    engine.start()
    clock.advance(max(intended, default=0.0) + timeout_s + 1.0)
    assert finished == [True] and engine.finished
    return engine, chans


def test_constant_arrivals_are_evenly_spaced() -> None:
    offsets = arrival_offsets(4.0, 2.0, "constant", np.random.default_rng(0))
    assert offsets.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75]


def test_poisson_arrivals_are_seeded_ascending_and_bounded() -> None:
    a = arrival_offsets(1000.0, 20.0, "poisson", np.random.default_rng(7))
    b = arrival_offsets(1000.0, 20.0, "poisson", np.random.default_rng(7))
    assert np.array_equal(a, b)
    assert np.all(np.diff(a) > 0) and a[0] >= 0 and a[-1] < 20.0
    gaps = np.diff(a)
    # 20,000 exponential gaps: mean and coefficient of variation near 1/rate and 1.
    assert gaps.mean() == pytest.approx(1e-3, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)
    assert len(a) == pytest.approx(20_000, rel=0.03)


def test_priorities_follow_the_mix_and_the_seed() -> None:
    mix = parse_priority_mix("critical=0.05,high=0.15,normal=0.6,low=0.2")
    assert mix.tolist() == pytest.approx([0.05, 0.15, 0.6, 0.2])
    p = draw_priorities(100_000, mix, np.random.default_rng(1))
    shares = np.bincount(p, minlength=4) / p.size
    assert shares.tolist() == pytest.approx([0.05, 0.15, 0.6, 0.2], abs=0.01)
    plan_a = make_plan(rate=50, duration_s=2, arrival="poisson", mix=mix, batch=1, seed=3)
    plan_b = make_plan(rate=50, duration_s=2, arrival="poisson", mix=mix, batch=1, seed=3)
    assert np.array_equal(plan_a.priority, plan_b.priority)
    assert parse_priority_mix("low=1").tolist() == [0, 0, 0, 1]
    for bad in ("urgent=1", "normal", "normal=-1", "normal=0"):
        with pytest.raises(ValueError):
            parse_priority_mix(bad)


def test_plan_shares_deal_requests_round_robin() -> None:
    mix = parse_priority_mix("normal=1")
    plan = make_plan(rate=10, duration_s=1, arrival="constant", mix=mix, batch=1, seed=0)
    shares = [plan.share(k, 3).tolist() for k in range(3)]
    assert shares == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert PRIORITY_NAMES[plan.priority[0]] == "normal"


def test_sends_at_intended_times_when_connections_are_free() -> None:
    intended = [0.0, 0.001, 0.002, 0.0035]
    engine, _ = _run_open(intended, channels=4, service_s=0.0005)
    sent = np.frombuffer(engine.sent) - 100.0
    done = np.frombuffer(engine.done) - 100.0
    assert sent.tolist() == pytest.approx(intended)
    assert (done - sent).tolist() == pytest.approx([0.0005] * 4)
    assert engine.n_waited == 0 and engine.n_ok == 4


def test_latency_counts_from_the_intended_time_when_the_client_is_behind() -> None:
    # One connection, a request every 1 ms, each taking 10 ms: request k waits for
    # the k before it. A closed-loop tool would report 10 ms for each.
    intended = [0.001 * k for k in range(5)]
    engine, chans = _run_open(intended, channels=1, service_s=0.010)
    sent = np.frombuffer(engine.sent) - 100.0
    done = np.frombuffer(engine.done) - 100.0
    start = np.fmin(np.frombuffer(engine.intended), np.frombuffer(engine.sent)) - 100.0
    assert sent.tolist() == pytest.approx([0.0, 0.010, 0.020, 0.030, 0.040])
    assert done.tolist() == pytest.approx([0.010, 0.020, 0.030, 0.040, 0.050])
    assert (done - start).tolist() == pytest.approx([0.010, 0.019, 0.028, 0.037, 0.046])
    assert engine.n_waited == 4 and engine.max_waiting == 4
    assert [token for _, token in chans[0].sends] == [0, 1, 2, 3, 4]


def test_unanswered_requests_time_out_in_flight_and_while_waiting() -> None:
    intended = [0.0, 0.001, 0.002]
    engine, _ = _run_open(intended, channels=1, service_s=None, timeout_s=0.5)
    status = np.frombuffer(engine.status, dtype=np.int16).tolist()
    assert status == [CODE_TIMEOUT] * 3
    sent = np.frombuffer(engine.sent)
    assert not math.isnan(sent[0]) and np.isnan(sent[1:]).all()  # expired before a connection
    assert engine.n_errors == 3 and engine.n_finished == 3


def test_early_dispatch_window_sends_due_requests_together() -> None:
    clock = ManualClock()
    chan = [FakeChannel(clock, 0.0001) for _ in range(3)]
    engine = OpenLoop(
        clock=clock,
        channels=chan,
        payloads=[b"x"],
        intended=[1.0, 1.0004, 1.0009],
        timeout_s=1.0,
        early_s=0.001,
    )
    engine.start()
    clock.advance(3.0)
    sent = np.frombuffer(engine.sent).tolist()
    # Woken half the window early (0.9995), it sends what is due within 1 ms of then;
    # the third is due later and gets its own wake-up, again half a window early.
    assert sent == pytest.approx([0.9995, 0.9995, 1.0004])
    assert np.frombuffer(engine.wake_lateness).tolist() == pytest.approx([-0.0005, -0.0005])
    assert engine.finished


def test_closed_loop_keeps_every_connection_busy_until_stop() -> None:
    clock = ManualClock()
    chans = [FakeChannel(clock, 0.010) for _ in range(2)]
    engine = ClosedLoop(
        clock=clock,
        channels=chans,
        payloads=[b"x"],
        stop_at=0.095,
        capacity=1000,
        timeout_s=1.0,
    )
    engine.start()
    clock.advance(1.0)
    assert engine.finished
    assert engine.n_requests == 20 and engine.n_ok == 20
    latency = np.frombuffer(engine.done)[:20] - np.frombuffer(engine.sent)[:20]
    assert latency.tolist() == pytest.approx([0.010] * 20)


def test_engine_arguments_are_checked() -> None:
    clock = ManualClock()
    with pytest.raises(ValueError, match="ascending"):
        OpenLoop(
            clock=clock,
            channels=[FakeChannel(clock, 0.1)],
            payloads=[b"x"],
            intended=[1.0, 0.5],
            timeout_s=1.0,
        )
    with pytest.raises(ValueError, match="channels"):
        OpenLoop(clock=clock, channels=[], payloads=[b"x"], intended=[1.0], timeout_s=1.0)
