"""`Deadline`: one moment by which a sequence of steps must all be done (the gateway's
shutdown, which its supervisor kills at a fixed time), each step bounded by its own
limit or by what is left, whichever is less; a step that must leave time to the steps
after it waits on a deadline made `earlier` by what they keep."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

__all__ = ["NEVER", "Deadline"]


@dataclass(frozen=True, slots=True)
class Deadline:
    """A moment on the monotonic clock (`time.monotonic`); `NEVER` does not come, so a
    step given it takes its own limit."""

    at: float

    @classmethod
    def within(cls, seconds: float) -> Deadline:
        """`seconds` from now."""
        return cls(time.monotonic() + seconds)

    def left(self) -> float:
        """Seconds until it, 0 once it has passed (``inf`` for `NEVER`)."""
        return max(0.0, self.at - time.monotonic())

    def bounded(self, most_s: float) -> float:
        """`most_s`, or what is left when that is less: how long a step may take."""
        return min(most_s, self.left())

    def earlier(self, seconds: float) -> Deadline:
        """This deadline `seconds` sooner: for the steps before those it keeps
        `seconds` for."""
        return Deadline(self.at - seconds)

    def timeout(self) -> float | None:
        """What is left, as `asyncio.wait`'s timeout: None for `NEVER`."""
        return None if math.isinf(self.at) else self.left()


NEVER = Deadline(math.inf)
