"""How a Redis-backed store rides out a Redis that hangs or fails (`Answering`): one
failure costs one timeout, not one per call under way or made meanwhile.

After a call fails, Redis is taken for down: the calls still waiting on it give up at
once (each would have waited out its own timeout), every call for `RETRY_AFTER_S`
fails at once without asking, and then one call at a time asks (a probe) while the
others fail at once, until one answers. A call refused unasked raises
`StoreUnavailable` with `paused_s` (worth asking again after it); one given up was
asked, and may still be made once Redis answers, so it has none: an ``APPEND`` asked
again (`asked`) would be made twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType

from llmroute.state.redis_conn import RETRY_AFTER_S

__all__ = ["Answering", "StoreUnavailable"]


class StoreUnavailable(Exception):
    """The store did not answer (down, slow, refused); the message holds no secret.
    `paused_s`: not asked at all, since it failed a moment ago (or another call is
    asking); it is asked again after about this many seconds."""

    def __init__(self, message: str, paused_s: float = 0.0) -> None:
        super().__init__(message)
        self.paused_s = paused_s


class Answering:
    """The state one store keeps of its Redis: paused until, whether the last call to
    end failed (`_suspect`: the next asks alone), whether a probe is under way, and the
    calls under way, each by the `asyncio.Timeout` that can cut it short."""

    def __init__(
        self,
        url: str,
        timeout_s: float,
        errors: tuple[type[BaseException], ...],
        clock: Callable[[], float],
    ) -> None:
        self._url = url  # masked
        self._timeout_s = timeout_s
        self._errors = errors
        self._clock = clock
        self._paused_until = 0.0
        self._suspect = False
        self._probing = False
        self._waiting: set[asyncio.Timeout] = set()

    @property
    def url(self) -> str:
        return self._url

    def __call__(self) -> _Call:
        """One call: a Redis error inside becomes `StoreUnavailable` (host and port,
        never the password), and Redis is taken for down."""
        return _Call(self)

    def _refuse_while_down(self) -> None:
        paused_s = self._paused_until - self._clock()
        if paused_s > 0:
            raise StoreUnavailable(
                f"redis {self._url}: not asked for {paused_s:.1f} s more after a failure",
                paused_s,
            )
        if self._probing:
            raise StoreUnavailable(
                f"redis {self._url}: not asked while another call asks whether it answers again",
                self._timeout_s,
            )

    def _failed(self) -> None:
        """Redis is left alone a while; the calls waiting on it give up now."""
        self._paused_until = self._clock() + RETRY_AFTER_S
        self._suspect = True
        if not self._waiting:
            return
        now = asyncio.get_running_loop().time()
        for waiting in self._waiting:
            if waiting.when() is None:  # not cut already
                waiting.reschedule(now)


class _Call:
    """One call's hold (`Answering.__call__`): a class, not a generator, as it is made
    for every call of every request to a Redis-backed store (half the cost)."""

    __slots__ = ("_bound", "_of", "_probe")

    def __init__(self, of: Answering) -> None:
        self._of = of
        self._probe = False
        self._bound = asyncio.timeout(None)

    async def __aenter__(self) -> None:
        of = self._of
        of._refuse_while_down()
        await self._bound.__aenter__()  # never suspends: nothing else runs in between
        of._waiting.add(self._bound)
        self._probe = of._suspect
        if self._probe:
            of._probing = True

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        of, bound = self._of, self._bound
        of._waiting.discard(bound)
        if self._probe:
            of._probing = False
        try:
            await bound.__aexit__(exc_type, exc, tb)
        except TimeoutError:  # cut short by `_failed`: another call failed meanwhile
            raise StoreUnavailable(
                f"redis {of.url}: given up, another call failed meanwhile"
            ) from None
        if exc is None:
            of._suspect = False
        elif isinstance(exc, of._errors):
            of._failed()
            raise StoreUnavailable(f"redis {of.url}: {_describe(exc)}") from None


def _describe(exc: BaseException) -> str:
    """The exception's kind and first line; redis-py's messages name host and port but
    not the password."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
