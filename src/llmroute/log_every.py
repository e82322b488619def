"""`LogEvery`: at most one log line per kind of event a period, so that whoever can
send requests cannot make the gateway write a line for each of them.

A hostile page or client can repeat a refused request as fast as it likes; the metric
counts every one, the log says the first of each kind at once and then one a period,
with how many it held back since the last line said. Holding one back costs a dict
lookup and an addition: nothing is allocated on that path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["LogEvery"]


class LogEvery:
    """Which events of a kind to log: the first, then at most one every `every_s`
    seconds. Kinds are the caller's few fixed reasons (an error code), never a value a
    client sent: each kind seen is kept. Safe to share between threads."""

    __slots__ = ("_clock", "_held", "_last", "_lock", "every_s")

    def __init__(
        self, every_s: float = 60.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not every_s > 0:
            raise ValueError("every_s must be > 0")
        self.every_s = every_s
        self._clock = clock
        self._last: dict[str, float] = {}  # when a line of that kind was last written
        self._held: dict[str, int] = {}  # events of that kind not logged since
        self._lock = threading.Lock()

    def due(self, kind: str) -> int | None:
        """None: do not log this event (it is counted as held back). Otherwise log it:
        the number of events of `kind` held back since the last line, for it to say."""
        with self._lock:
            now = self._clock()
            last = self._last.get(kind)
            if last is not None and now - last < self.every_s:
                self._held[kind] += 1
                return None
            self._last[kind] = now
            held = self._held.get(kind, 0)
            self._held[kind] = 0
            return held

    @staticmethod
    def since(held: int) -> str:
        """What a line adds about the events held back before it: "" or
        `` (K more since the last)``."""
        return f" ({held} more since the last)" if held else ""
