"""Shedding at the door by event-loop lag."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from sankofa.queues.priority import Priority
from sankofa.queues.shedding import LoadShedder
from tests_support import tx

THRESHOLDS = {
    Priority.CRITICAL: None,
    Priority.HIGH: 0.08,
    Priority.NORMAL: 0.04,
    Priority.LOW: 0.02,
}


async def test_lower_classes_are_refused_first_and_critical_never() -> None:
    shedder = LoadShedder(thresholds_s=THRESHOLDS, sustain_s=0.05)
    await shedder.start()
    try:
        assert not any(shedder.refuses(p) for p in Priority)
        # Saturate the event loop the way a flooded worker does: it is never free,
        # so every timer fires late.
        for _ in range(12):
            time.sleep(0.03)  # noqa: ASYNC251 - blocking the loop is the point
            await asyncio.sleep(0)
        assert shedder.refuses(Priority.LOW) == "lag"
        assert shedder.refuses(Priority.CRITICAL) is None
        # Once the loop is free again, the next sample clears the refusal.
        for _ in range(200):
            await asyncio.sleep(0.005)
            if shedder.refuses(Priority.LOW) is None:
                break
        assert shedder.refuses(Priority.LOW) is None
    finally:
        await shedder.stop()


def test_isolated_stalls_are_not_overload() -> None:
    """A worker with short stalls between free periods (a GC pause, a slow commit)
    queues their burst; it does not refuse anyone (the soak's false alarms)."""
    clock = [100.0]
    shedder = LoadShedder(thresholds_s=THRESHOLDS, sustain_s=0.05, clock=lambda: clock[0])
    refused = 0
    for _ in range(8):
        clock[0] += 0.1
        shedder.observe(0.1, clock[0])  # a 100 ms stall: far beyond every threshold, once
        refused += shedder.refuses(Priority.LOW) is not None
        for _ in range(6):  # then free for 30 ms
            clock[0] += 0.005
            shedder.observe(0.0, clock[0])
            refused += shedder.refuses(Priority.LOW) is not None
    assert refused == 0


def test_signal_must_hold_on_every_sample_for_the_sustain_time() -> None:
    clock = [100.0]
    shedder = LoadShedder(
        thresholds_s=THRESHOLDS,
        in_progress_limits={
            Priority.CRITICAL: None,
            Priority.HIGH: 30,
            Priority.NORMAL: 20,
            Priority.LOW: 10,
        },
        sustain_s=0.05,
        release_s=0.0,
        clock=lambda: clock[0],
    )
    # In progress above low's and normal's limits, on every sample for 60 ms.
    shedder.in_progress = 25
    for i in range(7):
        shedder.observe(0.0, 99.94 + i * 0.01)
    assert shedder.refuses(Priority.LOW) == "in_progress"
    assert shedder.refuses(Priority.NORMAL) == "in_progress"
    assert shedder.refuses(Priority.HIGH) is None
    # One sample within limits resets the class.
    shedder.in_progress = 5
    shedder.observe(0.0, 100.0)
    assert shedder.refuses(Priority.LOW) is None
    # Over again, but only for 20 ms: not yet sustained.
    shedder.in_progress = 25
    clock[0] = 100.03
    shedder.observe(0.0, 100.01)
    shedder.observe(0.0, 100.03)
    assert shedder.refuses(Priority.LOW) is None
    clock[0] = 100.07  # 60 ms
    assert shedder.refuses(Priority.LOW) == "in_progress"


LIMITS = {Priority.CRITICAL: None, Priority.HIGH: 96, Priority.NORMAL: 48, Priority.LOW: 24}


def _shipped_door(clock: list[float]) -> LoadShedder:
    """The door with the shipped sustain and release, on a clock the test moves."""
    return LoadShedder(
        thresholds_s=THRESHOLDS,
        in_progress_limits=LIMITS,
        sustain_s=0.15,
        release_s=0.2,
        clock=lambda: clock[0],
    )


def test_a_stalls_backlog_being_worked_off_is_not_overload() -> None:
    """After a 200 ms stall at 70 % of capacity the requests in progress jump and
    then fall for longer than the sustain: a backlog being served in time, not
    overload. Refusing it was the soak's 0.058 %."""
    clock = [100.0]
    shedder = _shipped_door(clock)
    refused = 0
    shedder.in_progress = 8
    for _ in range(20):
        clock[0] += 0.005
        shedder.observe(0.0, clock[0])
    # The stall: no sample for 200 ms, then the requests that arrived meanwhile.
    clock[0] += 0.2
    shedder.in_progress = 120
    shedder.observe(0.2, clock[0])
    # Worked off at ~1.2 requests per 5 ms net (575/s arriving, 820/s served): over
    # low's and normal's limits for about 400 ms, falling all along.
    backlog = 120.0
    while backlog > 8:
        clock[0] += 0.005
        backlog -= 1.2
        shedder.in_progress = max(8, round(backlog))
        shedder.observe(0.002, clock[0])
        refused += sum(shedder.refuses(p) is not None for p in Priority)
    assert refused == 0


def test_a_backlog_that_holds_or_grows_is_refused_after_the_sustain() -> None:
    """The same jump, but the requests in progress then hold (a plateau) or grow:
    overload, refused once the signal has held for the sustain time."""
    for step in (0.0, 0.5):
        clock = [100.0]
        shedder = _shipped_door(clock)
        backlog = 60.0
        first_refusal = None
        for i in range(60):
            clock[0] += 0.005
            backlog += step
            shedder.in_progress = round(backlog)
            shedder.observe(0.0, clock[0])
            if first_refusal is None and shedder.refuses(Priority.LOW):
                first_refusal = i
        assert first_refusal is not None and 29 <= first_refusal <= 31, (step, first_refusal)
        assert shedder.refuses(Priority.NORMAL) == "in_progress"
        assert shedder.refuses(Priority.HIGH) is None
        assert shedder.refuses(Priority.CRITICAL) is None


def test_a_refusing_class_is_served_again_only_after_the_release_time() -> None:
    """Shedding clears its own signals; a flood must not be let in again at once."""
    clock = [100.0]
    shedder = LoadShedder(
        thresholds_s=THRESHOLDS,
        in_progress_limits=dict.fromkeys(Priority, None),
        sustain_s=0.05,
        release_s=0.2,
        clock=lambda: clock[0],
    )
    shedder.observe(0.5, 99.85)
    shedder.observe(0.5, 99.90)  # over for 50 ms: refusing from here
    shedder.observe(0.0, 99.95)  # then clear
    assert shedder.refuses(Priority.LOW) == "lag"  # clear for only 50 ms
    clock[0] = 100.1
    assert shedder.refuses(Priority.LOW) == "lag"  # 150 ms
    clock[0] = 100.2
    assert shedder.refuses(Priority.LOW) is None  # 250 ms: served again


def test_thresholds_checked() -> None:
    with pytest.raises(ValueError):
        LoadShedder(thresholds_s={Priority.LOW: 1.0})
    with pytest.raises(ValueError):
        LoadShedder(thresholds_s={**THRESHOLDS, Priority.LOW: -1.0})
    with pytest.raises(ValueError):
        LoadShedder(thresholds_s=THRESHOLDS, sustain_s=-1.0)
    with pytest.raises(ValueError):
        LoadShedder(thresholds_s=THRESHOLDS, release_s=-1.0)


@pytest.mark.door_shedding
async def test_shed_requests_get_503_with_retry_after_before_parsing(
    client: httpx.AsyncClient, services: object
) -> None:
    shedder = services.shedder  # type: ignore[attr-defined]
    await shedder.stop()  # hold the reading still for the test
    loop_now = asyncio.get_running_loop().time()
    shedder.observe(1.0, loop_now - 1.0)  # as if the loop had been a second late
    shedder.observe(1.0, loop_now)  # for a second
    r = await client.post("/v1/transactions", json=tx(1), headers={"x-priority": "low"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["type"].endswith("overloaded")
    # Not parsed: even a malformed body is shed, not 400.
    r = await client.post(
        "/v1/transactions", content=b"{", headers={"content-type": "application/json"}
    )
    assert r.status_code == 503
    # Critical goes through.
    r = await client.post("/v1/transactions", json=tx(2), headers={"x-priority": "critical"})
    assert r.status_code == 200
    text = (await client.get("/metrics")).text
    assert 'sankofa_shed_total{priority="low"} 1.0' in text
    assert 'sankofa_door_shed_total{priority="low",signal="lag"} 1.0' in text
