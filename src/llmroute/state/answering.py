"""How a Redis-backed component rides out a Redis that hangs or fails (`Answering`):
one failure costs one timeout, not one per call under way or made meanwhile. Used by
the stores (cache, affinity, stored responses, conversations, batches), the limits and
the shared breakers.

After a call fails, Redis is taken for down: the calls still waiting on it give up at
once (each would have waited out its own timeout), every call for `RETRY_AFTER_S`
fails at once without asking, and then one call at a time asks (a probe) while the
others fail at once, until one answers. A call refused unasked raises
`StoreUnavailable` with `paused_s` (worth asking again after it; `wait` returns sooner
when the probe it was refused for ends); one given up was asked, and may still be made
once Redis answers, so it has none: an ``APPEND`` asked again (`asked`) would be made
twice. One asked whose answer did not come (in time, or before its connection was lost:
`llmroute.state.redis_conn.ReplyLost`) may have been made: `maybe_made`. An error
*reply* (``OOM``, ``READONLY``, ``WRONGTYPE``...) proves Redis answers: that call
fails (`StoreUnavailable.replied`), nothing else does, and no pause follows
(``NOSCRIPT`` never gets here: redis-py loads the script and runs it again; a load
whose answer is lost is a failure, not `maybe_made`: the script was refused). Some say
Redis refuses for now, not for good (`StoreUnavailable.transient`: ``READONLY`` from a
replica until a failover ends, ``OOM`` until memory is freed, ``BUSY`` while a script
runs long, ``MISCONF`` while saves fail, ``TRYAGAIN``, ``MASTERDOWN``, ``CLUSTERDOWN``,
``NOREPLICAS``): a call worth making again (a budget settle) is kept for later then,
where one refused for good (``WRONGTYPE``) would fail again each time. A refused write
is made in none of its parts: Redis checks at a script's first write.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from llmroute.state.redis_conn import (
    RETRY_AFTER_S,
    HandshakeRefused,
    ReplyLost,
    error_replies,
    sent,
)

if TYPE_CHECKING:
    from llmroute.state.redis_conn import Outage, RedisConnection

__all__ = ["Answering", "StoreUnavailable", "note_failure"]

# The codes of the error replies that refuse for now, where redis-py has no class of
# its own for them (`RedisConnection.transient`): first in the reply, or after a "-"
# where Redis before 7 wraps a script's error in its own ("ERR Error running script
# ...: -READONLY ..."). Not ``LOADING``: redis-py raises it as a ``ConnectionError``
# (``BusyLoadingError``), never a reply here; every call is refused then, so Redis is
# taken for down, and paused for, as when it does not answer.
_TRANSIENT = re.compile(
    r"(?:^|: -)(?:BUSY|MISCONF|NOREPLICAS|OOM|READONLY|TRYAGAIN|MASTERDOWN|CLUSTERDOWN) "
)


class StoreUnavailable(Exception):
    """The store did not answer (down, slow, refused); the message holds no secret.
    `paused_s`: not asked at all, since it failed a moment ago (or another call is
    asking); it is asked again after about this many seconds. `replied`: Redis answered
    this call with an error (it is not down); `transient`: one that refuses for now
    (``READONLY``, ``OOM``...), made again later it may go through. `maybe_made`: asked,
    and no answer came once the command was sent (its timeout, cut short, or its
    connection lost): the command may have been made all the same. Without it, nothing
    was made (refused unasked, or before the command was sent: Redis refused to connect
    or was slow to, a call cut while it connected). `given_up`: asked, and failed after
    another call failed meanwhile (cut short by it, or on its own timeout as it did):
    that call's failure is the one counted."""

    def __init__(
        self,
        message: str,
        paused_s: float = 0.0,
        *,
        replied: bool = False,
        transient: bool = False,
        maybe_made: bool = False,
        given_up: bool = False,
        probe: asyncio.Event | None = None,
    ) -> None:
        super().__init__(message)
        self.paused_s = paused_s
        self.replied = replied
        self.transient = transient
        self.maybe_made = maybe_made
        self.given_up = given_up
        self._probe = probe

    async def wait(self) -> None:
        """Wait until it is worth asking again: `paused_s`, or less when it was refused
        while another call probed and that probe ends first (answered or not)."""
        if self._probe is None:
            await asyncio.sleep(self.paused_s)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.paused_s):
                await self._probe.wait()


class Answering:
    """The state one component keeps of its Redis: paused until, whether the last call
    to end failed (`_suspect`: the next asks alone), the probe under way (an event set
    when it ends), and the calls under way, each by the `asyncio.Timeout` that can cut
    it short. `errors` mean Redis failed; `replies` (among them) that it answered with an
    error, `transient` (among those) one that refuses for now; `unanswered` that it did
    not answer a call it was asked (in time, or before the connection was lost)."""

    def __init__(
        self,
        url: str,
        timeout_s: float,
        errors: tuple[type[BaseException], ...],
        clock: Callable[[], float] = time.monotonic,
        *,
        replies: tuple[type[BaseException], ...] = (),
        transient: tuple[type[BaseException], ...] = (),
        unanswered: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._url = url  # masked
        self._timeout_s = timeout_s
        self._errors = errors
        self._replies = replies
        self._transient = transient
        self._unanswered = unanswered
        self._clock = clock
        self._paused_until = 0.0
        self._suspect = False
        self._probe: asyncio.Event | None = None
        self._waiting: set[asyncio.Timeout] = set()
        self._failures = 0  # calls that found Redis down, so far

    @classmethod
    def of(
        cls, redis: RedisConnection, timeout_s: float, clock: Callable[[], float] = time.monotonic
    ) -> Answering:
        """The `Answering` of a `connect`ed client, with its kinds of errors."""
        return cls(
            redis.url,
            timeout_s,
            redis.errors,
            clock,
            replies=redis.replies,
            transient=redis.transient,
            unanswered=redis.unanswered,
        )

    @property
    def url(self) -> str:
        return self._url

    def __call__(self) -> _Call:
        """One call: a Redis error inside becomes `StoreUnavailable` (host and port,
        never the password), and Redis is taken for down unless it replied."""
        return _Call(self)

    def _refuse_while_down(self) -> None:
        paused_s = self._paused_until - self._clock()
        if paused_s > 0:
            raise StoreUnavailable(
                f"redis {self._url}: not asked for {paused_s:.1f} s more after a failure",
                paused_s,
            )
        if self._probe is not None:
            raise StoreUnavailable(
                f"redis {self._url}: not asked while another call asks whether it answers again",
                self._timeout_s,
                probe=self._probe,
            )

    def _failed(self) -> None:
        """Redis is left alone a while; the calls waiting on it give up now."""
        self._failures += 1
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

    __slots__ = ("_bound", "_failures", "_of", "_probe")

    def __init__(self, of: Answering) -> None:
        self._of = of
        self._probe: asyncio.Event | None = None
        self._bound = asyncio.timeout(None)
        self._failures = of._failures

    async def __aenter__(self) -> None:
        of = self._of
        of._refuse_while_down()
        await self._bound.__aenter__()  # never suspends: nothing else runs in between
        of._waiting.add(self._bound)
        if of._suspect:
            self._probe = of._probe = asyncio.Event()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        of, bound = self._of, self._bound
        of._waiting.discard(bound)
        if self._probe is not None:
            of._probe = None
            self._probe.set()  # the calls refused for it may ask again
        try:
            await bound.__aexit__(exc_type, exc, tb)
        except TimeoutError:  # cut short by `_failed`: another call failed meanwhile
            raise StoreUnavailable(  # made, maybe, if it was cut once it was sent
                f"redis {of.url}: given up, another call failed meanwhile",
                maybe_made=exc is not None and sent(exc),
                given_up=True,
            ) from None
        if exc is None:
            of._suspect = False
        elif isinstance(exc, of._replies):  # it answered: not down
            of._suspect = False
            transient = isinstance(exc, of._transient) or bool(_TRANSIENT.search(str(exc)))
            raise StoreUnavailable(
                f"redis {of.url} {_describe(exc, replied=True)}", replied=True, transient=transient
            ) from None
        elif isinstance(exc, of._errors):
            # another call under way failed first (on its own timeout, as this one):
            # that failure is the one counted
            given_up = of._failures != self._failures
            of._failed()
            raise StoreUnavailable(
                f"redis {of.url}: {_describe(exc)}",
                maybe_made=isinstance(exc, of._unanswered),
                given_up=given_up,
            ) from None


def note_failure(outage: Outage, exc: StoreUnavailable, message: str, *args: object) -> None:
    """Tell `outage` (logs, metrics, its own pause) of a call that failed with `exc`:
    nothing when it was refused unasked (`paused_s`: no failure of Redis's, and pausing
    for it kept a component off a second after a probe answered) or given up because
    another call failed (`given_up`: that one is counted; counting each call under way
    made a hang's count the load's, not one a second); logged and counted but not paused
    for when Redis replied with an error (it answers: the next call may not fail)."""
    if not exc.paused_s and not exc.given_up:
        outage.failed(message, *args, pause=not exc.replied)


def _describe(exc: BaseException, *, replied: bool = False) -> str:
    """What happened, in words, then the exception's first line; redis-py's messages
    name host and port but not the password. The words stand for our classes' and
    redis-py's names (``LateAfterSending: Timeout reading from ...`` was an operator's
    log line); an exception of another kind (a bug's) is named by its class."""
    from redis import exceptions

    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, HandshakeRefused):
        kind = "refused at connect"
    elif replied:
        kind = "answered with an error"
    elif isinstance(exc, error_replies()):  # Redis answered, refusing
        kind = "refused"
    elif isinstance(exc, (exceptions.TimeoutError, TimeoutError)):
        kind = "timed out"
    elif isinstance(exc, ReplyLost):
        kind = "connection lost"
    elif isinstance(exc, (exceptions.ConnectionError, OSError)):
        kind = "connection failed"
    else:
        kind = type(exc).__name__
    return f"{kind}: {text}" if text else kind
