"""A circuit breaker per deployment: stop sending to a deployment that keeps failing, and
let a few probes through after a cooldown to find out whether it has recovered.

Closed, it counts failures two ways: consecutive (catches a hard outage fast) and the
failure share over a sliding time window (catches a flaky one that sometimes succeeds).
The window is kept in per-slice counters, not per request, so memory stays bounded at
any request rate; its edge is therefore exact only to within ``window_s / 32``.

It is used from one event loop, so it needs no locks; it is still told about calls that
overlap, and counts in-flight half-open probes so no more than ``half_open_probes`` reach
a deployment that may still be down.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from llmroute.registry.schema import BreakerSettings

__all__ = ["BreakerState", "CircuitBreaker"]

_SLICES = 32  # window resolution: how many counters cover window_s


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class _Slice:
    """Outcomes recorded during one time slice of the window."""

    index: int
    ok: int = 0
    failed: int = 0


class _Window:
    """Success and failure counts over roughly the last `window_s` seconds."""

    def __init__(self, window_s: float) -> None:
        self._width = window_s / _SLICES
        self._slices: deque[_Slice] = deque()
        self.total = 0
        self.failed = 0

    def add(self, now: float, *, ok: bool) -> None:
        self.prune(now)
        index = math.floor(now / self._width)
        if not self._slices or self._slices[-1].index != index:
            self._slices.append(_Slice(index))
        current = self._slices[-1]
        if ok:
            current.ok += 1
        else:
            current.failed += 1
            self.failed += 1
        self.total += 1

    def prune(self, now: float) -> None:
        oldest = math.floor(now / self._width) - _SLICES
        while self._slices and self._slices[0].index < oldest:
            gone = self._slices.popleft()
            self.total -= gone.ok + gone.failed
            self.failed -= gone.failed

    def clear(self) -> None:
        self._slices.clear()
        self.total = self.failed = 0


class CircuitBreaker:
    """One deployment's breaker. `clock` is a seam for tests (monotonic seconds).

    Outcomes reported while half-open are taken as the probes' (the breaker cannot tell
    a probe from a call that began before it opened); outcomes reported while open are
    ignored, since the cooldown's probes decide what happens next.
    """

    def __init__(
        self, settings: BreakerSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._window = _Window(settings.window_s)
        self._opened_at: float | None = None
        self._probes = 0  # half-open calls allowed and not yet finished

    @property
    def settings(self) -> BreakerSettings:
        return self._settings

    @property
    def state(self) -> BreakerState:
        """The current state; OPEN turns HALF_OPEN here once the cooldown has passed."""
        if (
            self._state is BreakerState.OPEN
            and self._opened_at is not None
            and self._clock() - self._opened_at >= self._settings.cooldown_s
        ):
            self._state = BreakerState.HALF_OPEN
            self._probes = 0
        return self._state

    def retry_in_s(self) -> float:
        """Seconds until an open breaker lets a probe through (0 unless open)."""
        if self.state is not BreakerState.OPEN or self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self._settings.cooldown_s - self._clock())

    def allow(self) -> bool:
        """Whether a call may go out now. A True while half-open reserves a probe slot,
        which the call's `record_success`, `record_failure` or `release` gives back."""
        if not self._settings.enabled:
            return True
        state = self.state
        if state is BreakerState.HALF_OPEN:
            if self._probes >= self._settings.half_open_probes:
                return False
            self._probes += 1
            return True
        return state is BreakerState.CLOSED

    def record_success(self) -> None:
        """An allowed call succeeded: a half-open breaker closes; a closed one counts it."""
        if not self._settings.enabled:
            return
        state = self.state
        if state is BreakerState.HALF_OPEN:
            self._close()
        elif state is BreakerState.CLOSED:
            self._consecutive = 0
            self._window.add(self._clock(), ok=True)

    def record_failure(self) -> bool:
        """An allowed call failed in a way that speaks of the deployment's health (no
        response, a timeout, 5xx, 429): a half-open breaker reopens; a closed one opens
        when either threshold is crossed. True when this failure opened it."""
        if not self._settings.enabled:
            return False
        state = self.state
        if state is BreakerState.HALF_OPEN:
            self._open()
            return True
        if state is BreakerState.CLOSED:
            self._consecutive += 1
            self._window.add(self._clock(), ok=False)
            if self._tripped():
                self._open()
                return True
        return False

    def open_elsewhere(self, remaining_s: float) -> None:
        """Another process opened this deployment's breaker and it stays open for
        `remaining_s` more: stay off it as long (never shorter than this breaker's own
        cooldown, when it is open already)."""
        if not self._settings.enabled or remaining_s <= 0:
            return
        opened_at = self._clock() - self._settings.cooldown_s + remaining_s
        if self.state is BreakerState.OPEN and self._opened_at is not None:
            opened_at = max(opened_at, self._opened_at)
        self._state = BreakerState.OPEN
        self._opened_at = opened_at
        self._probes = 0

    def release(self) -> None:
        """An allowed call ended saying nothing about the deployment's health (the
        request's own 4xx, a cancellation): free its probe slot, record nothing."""
        if self._settings.enabled and self.state is BreakerState.HALF_OPEN:
            self._probes = max(0, self._probes - 1)

    def snapshot(self) -> dict[str, object]:
        """The breaker's state and counters, for metrics and logs."""
        state = self.state
        if self._settings.enabled:
            self._window.prune(self._clock())
        return {
            "state": state.value,
            "consecutive_failures": self._consecutive,
            "window_requests": self._window.total,
            "window_failures": self._window.failed,
            "half_open_probes_in_flight": self._probes,
            "opened_at": self._opened_at,
        }

    def _tripped(self) -> bool:
        settings = self._settings
        if self._consecutive >= settings.failures:
            return True
        window = self._window
        return (
            window.total >= settings.min_requests
            and window.failed / window.total > settings.error_rate
        )

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._probes = 0

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        self._opened_at = None
        self._probes = 0
        self._consecutive = 0
        self._window.clear()
