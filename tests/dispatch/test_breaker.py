"""`CircuitBreaker` against a fake clock: tripping, cooldown, half-open probes, release."""

from __future__ import annotations

from typing import Any

import pytest

from llmroute.dispatch.breaker import BreakerState, CircuitBreaker
from llmroute.registry.schema import BreakerSettings

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _breaker(**settings: Any) -> tuple[CircuitBreaker, Clock]:
    defaults: dict[str, Any] = {
        "failures": 3,
        "error_rate": 0.5,
        "window_s": 60.0,
        "min_requests": 10,
        "cooldown_s": 30.0,
        "half_open_probes": 1,
    }
    clock = Clock()
    return CircuitBreaker(BreakerSettings(**(defaults | settings)), clock=clock), clock


def _call(breaker: CircuitBreaker, ok: bool) -> None:
    assert breaker.allow()
    if ok:
        breaker.record_success()
    else:
        breaker.record_failure()


def _opened(**settings: Any) -> tuple[CircuitBreaker, Clock]:
    breaker, clock = _breaker(**settings)
    for _ in range(breaker.settings.failures):
        _call(breaker, ok=False)
    assert breaker.state is OPEN
    return breaker, clock


def _half_open(**settings: Any) -> tuple[CircuitBreaker, Clock]:
    breaker, clock = _opened(**settings)
    clock.now += breaker.settings.cooldown_s
    assert breaker.state is HALF_OPEN
    return breaker, clock


def test_starts_closed_and_allows() -> None:
    breaker, _ = _breaker()
    assert breaker.state is CLOSED
    assert all(breaker.allow() for _ in range(100))


def test_opens_on_consecutive_failures() -> None:
    breaker, _ = _breaker()
    _call(breaker, ok=False)
    _call(breaker, ok=False)
    assert breaker.state is CLOSED
    _call(breaker, ok=False)
    assert breaker.state is OPEN
    assert not breaker.allow()


def test_a_success_resets_the_consecutive_count() -> None:
    breaker, _ = _breaker(min_requests=1000)
    for _ in range(4):
        _call(breaker, ok=False)
        _call(breaker, ok=False)
        _call(breaker, ok=True)
    # 8 failures in 12 calls, but never 3 in a row (and the rate check is out of reach).
    assert breaker.state is CLOSED
    assert breaker.snapshot()["consecutive_failures"] == 0


def test_opens_on_error_rate_over_the_window() -> None:
    breaker, _ = _breaker(failures=100, min_requests=10, error_rate=0.5)
    for _ in range(4):
        _call(breaker, ok=True)
        _call(breaker, ok=False)
    assert breaker.state is CLOSED  # 4 of 8: under min_requests
    _call(breaker, ok=True)  # 4 of 9
    _call(breaker, ok=False)  # 5 of 10: not over 0.5
    assert breaker.state is CLOSED
    _call(breaker, ok=False)  # 6 of 11 > 0.5
    assert breaker.state is OPEN


def test_error_rate_needs_min_requests() -> None:
    breaker, _ = _breaker(failures=100, min_requests=20, error_rate=0.1)
    for _ in range(19):
        _call(breaker, ok=False)
    assert breaker.state is CLOSED  # every call failed, but only 19 outcomes
    _call(breaker, ok=False)
    assert breaker.state is OPEN


def test_old_outcomes_leave_the_window() -> None:
    breaker, clock = _breaker(failures=100, min_requests=4, error_rate=0.5, window_s=60.0)
    _call(breaker, ok=False)
    _call(breaker, ok=False)
    _call(breaker, ok=True)
    clock.now += 50.0  # still inside the window: they count
    assert breaker.snapshot()["window_requests"] == 3
    clock.now += 70.0  # well past it: gone
    assert breaker.snapshot()["window_requests"] == 0
    _call(breaker, ok=False)
    _call(breaker, ok=False)
    _call(breaker, ok=True)
    assert breaker.state is CLOSED  # 2 of 3 recent; the old ones would have made 4 of 6


def test_window_memory_is_bounded() -> None:
    breaker, clock = _breaker(failures=10**9, min_requests=10**9, window_s=10.0)
    for _ in range(5000):
        clock.now += 0.01
        _call(breaker, ok=True)
    assert len(breaker._window._slices) <= 33
    # The last 10 s at 100 calls/s, give or take one slice (window_s / 32) at the edge.
    assert breaker.snapshot()["window_requests"] == pytest.approx(1000, abs=35)


def test_stays_open_during_cooldown() -> None:
    breaker, clock = _opened()
    clock.now += 29.9
    assert breaker.state is OPEN
    assert not breaker.allow()
    breaker.record_failure()  # a late call that began while closed: no new cooldown
    clock.now += 0.1
    assert breaker.state is HALF_OPEN


@pytest.mark.parametrize("probes", [1, 3])
def test_half_open_lets_exactly_the_probes_through(probes: int) -> None:
    breaker, _ = _half_open(half_open_probes=probes)
    assert [breaker.allow() for _ in range(probes + 2)] == [True] * probes + [False, False]
    assert breaker.snapshot()["half_open_probes_in_flight"] == probes


def test_half_open_closes_on_success() -> None:
    breaker, _ = _half_open()
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is CLOSED
    snap = breaker.snapshot()
    assert snap["consecutive_failures"] == 0
    assert snap["window_requests"] == 0
    assert snap["opened_at"] is None
    assert all(breaker.allow() for _ in range(10))
    # The counters start afresh: it takes `failures` new failures to open again.
    _call(breaker, ok=False)
    _call(breaker, ok=False)
    assert breaker.state is CLOSED


def test_half_open_reopens_on_failure_with_a_new_cooldown() -> None:
    breaker, clock = _half_open()
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is OPEN
    assert breaker.snapshot()["opened_at"] == clock.now
    clock.now += 29.0
    assert not breaker.allow()
    clock.now += 1.0
    assert breaker.allow()  # half-open again, with a fresh probe slot


def test_release_frees_a_probe_slot_and_records_nothing() -> None:
    breaker, _ = _half_open()
    assert breaker.allow()
    assert not breaker.allow()
    breaker.release()  # the probe ended with the client's own 4xx
    assert breaker.state is HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()


def test_release_when_closed_changes_nothing() -> None:
    breaker, _ = _breaker()
    _call(breaker, ok=False)
    before = breaker.snapshot()
    breaker.release()
    breaker.release()
    assert breaker.snapshot() == before


def test_late_outcomes_while_open_are_ignored() -> None:
    breaker, clock = _opened()
    opened_at = breaker.snapshot()["opened_at"]
    breaker.record_success()
    breaker.release()
    assert breaker.state is OPEN
    assert breaker.snapshot()["opened_at"] == opened_at
    clock.now += 30.0
    assert breaker.state is HALF_OPEN


def test_probe_counts_never_go_negative() -> None:
    breaker, _ = _half_open(half_open_probes=2)
    for _ in range(5):
        breaker.release()
    assert [breaker.allow() for _ in range(3)] == [True, True, False]


def test_snapshot_reports_state_and_counts() -> None:
    breaker, clock = _breaker()
    _call(breaker, ok=True)
    _call(breaker, ok=False)
    assert breaker.snapshot() == {
        "state": "closed",
        "consecutive_failures": 1,
        "window_requests": 2,
        "window_failures": 1,
        "half_open_probes_in_flight": 0,
        "opened_at": None,
    }
    _call(breaker, ok=False)
    _call(breaker, ok=False)
    snap = breaker.snapshot()
    assert snap["state"] == "open"
    assert snap["opened_at"] == clock.now


def test_disabled_breaker_always_allows() -> None:
    breaker, clock = _breaker(enabled=False, failures=1, min_requests=1)
    for _ in range(50):
        _call(breaker, ok=False)
    assert breaker.state is CLOSED
    clock.now += 1000.0
    breaker.release()
    assert breaker.allow()
    assert breaker.snapshot()["state"] == "closed"


def test_an_open_breaker_says_when_it_lets_a_probe_through() -> None:
    breaker, clock = _breaker()
    assert breaker.retry_in_s() == 0.0  # closed
    for _ in range(3):
        _call(breaker, ok=False)
    assert breaker.state is OPEN and breaker.retry_in_s() == 30.0
    clock.now += 12.5
    assert breaker.retry_in_s() == 17.5
    clock.now += 17.5
    assert breaker.state is HALF_OPEN and breaker.retry_in_s() == 0.0
