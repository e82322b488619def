"""Whether each Redis a registry names can be used, asked once where a registry is
loaded (the gateway's start and each reload, `llmroute registry probe`): a wrong URL or
a Redis that is down showed only at the first request that used it, in that feature's
failure line. One check per distinct URL (`redis_uses`), naming the settings that use
it; what is wrong is said in a few words (`check_redis`): refused, timed out, a password
refused, a db past the server's ``databases``, another error reply to the handshake;
and, for a Redis that answers, which features' ``timeout_s`` one round trip outlasts
(`RedisCheck.outlasted`: every call of theirs may time out, though the check, given
`CHECK_S`, saw an answer). Nothing here stops a start: each feature does without its
Redis as it does when Redis goes down at request time."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmroute.errors import ConfigError
from llmroute.state.redis_conn import DbOutOfRange, HandshakeRefused, connect
from llmroute.state.stores import CACHE_ENV_VAR, has_limits, resolve_cache_url
from llmroute.telemetry.store.url import mask_url

if TYPE_CHECKING:
    from llmroute.registry.schema import Registry

__all__ = ["CHECK_S", "RedisCheck", "RedisUse", "check_redis", "redis_uses"]

# How long a check waits for Redis (connect, handshake and PING together): longer than
# a feature's timeout_s (50 ms by default), so that a start's busy event loop is not
# said to be a slow Redis, and short enough that a Redis behind a firewall that drops
# packets is said within seconds.
CHECK_S = 2.0
# PINGs timed once connected, the fastest taken as Redis's round trip (fewer once one
# fits every feature's timeout_s): one slowed by the start's busy event loop alone is
# not said to be a slow Redis
_ROUND_TRIPS = 3


@dataclass(frozen=True, slots=True)
class RedisUse:
    """One Redis URL (as the registry or ``$LLMROUTE_CACHE_URL`` names it: it may hold a
    password), the settings that name it, and the ``timeout_s`` of each one's feature
    (in the same order; none given, none compared)."""

    url: str
    settings: tuple[str, ...]
    timeouts: tuple[float, ...] = ()

    @property
    def masked(self) -> str:
        return mask_url(self.url)


@dataclass(frozen=True, slots=True)
class RedisCheck:
    """What came of checking `use`: `problem` None when Redis answered (in `latency_ms`,
    connecting included), then `round_trip_ms`: the fastest of a few more ``PING``s
    on the connection the first opened, as a feature's call on a pooled connection
    takes (at least that long where they outlasted the check)."""

    use: RedisUse
    problem: str | None
    latency_ms: float
    round_trip_ms: float | None = None

    @property
    def outlasted(self) -> tuple[tuple[str, float], ...]:
        """The ``timeout_s`` settings (name, seconds) of `use`'s features that the round
        trip took longer than, tightest first: each of their calls may time out (and
        be taken for Redis down), though Redis answers."""
        if self.round_trip_ms is None:
            return ()
        named = zip(self.use.settings, self.use.timeouts, strict=False)
        return tuple(
            sorted(
                (
                    (_timeout_setting(setting), t)
                    for setting, t in named
                    if self.round_trip_ms > t * 1000
                ),
                key=lambda pair: pair[1],
            )
        )

    def outlasted_text(self) -> str:
        """`outlasted` in words, with both times (the gateway's warning and `llmroute
        registry probe`'s row): "a round trip took 70 ms, more than affinity.timeout_s
        (50 ms)"; empty when there is none."""
        if not self.outlasted or self.round_trip_ms is None:
            return ""
        over = ", ".join(f"{name} ({seconds * 1000:g} ms)" for name, seconds in self.outlasted)
        return f"a round trip took {self.round_trip_ms:.0f} ms, more than {over}"


def _timeout_setting(setting: str) -> str:
    """The ``timeout_s`` beside URL setting `setting` (``cache.url``'s for the variable
    that overrides it)."""
    if setting == CACHE_ENV_VAR:
        return "cache.timeout_s"
    return setting.removesuffix(".url") + ".timeout_s"


def redis_uses(registry: Registry, environ: Mapping[str, str] | None = None) -> list[RedisUse]:
    """The Redis URLs `registry`'s features open (as `llmroute serve` opens them: the
    cache's as ``$LLMROUTE_CACHE_URL`` may override it, the limits' only when something
    is counted, the breakers' when they are on), each once, in the registry's order."""
    env = os.environ if environ is None else environ
    named: dict[str, list[tuple[str, float]]] = {}

    def use(url: str, setting: str, timeout_s: float) -> None:
        if url != "memory":
            named.setdefault(url, []).append((setting, timeout_s))

    cache = registry.cache
    if cache is not None and (url := resolve_cache_url(cache, env)):
        use(url, CACHE_ENV_VAR if CACHE_ENV_VAR in env else "cache.url", cache.timeout_s)
    limits, breaker = registry.dispatch.limits, registry.dispatch.breaker
    if has_limits(registry):
        use(limits.url, "dispatch.limits.url", limits.timeout_s)
    if breaker.enabled:
        use(breaker.url, "dispatch.breaker.url", breaker.timeout_s)
    for section in ("affinity", "stored_responses", "batches"):
        settings = getattr(registry, section)
        if settings is not None:
            use(settings.url, f"{section}.url", settings.timeout_s)
    return [
        RedisUse(url, tuple(s for s, _ in pairs), tuple(t for _, t in pairs))
        for url, pairs in named.items()
    ]


async def check_redis(use: RedisUse, timeout_s: float = CHECK_S) -> RedisCheck:
    """Connect to `use`'s Redis as its features do (its db selected, the connection
    named) and ``PING`` it, then time a round trip (`_ROUND_TRIPS` more ``PING``s at
    most, the fastest), all within `timeout_s`; never raises for Redis's failures.
    `latency_ms` is the connection's, handshake's and first PING's: the client is made
    first, off the clock (its first making imports redis-py, tenths of a second)."""
    try:
        conn = connect(use.url, timeout_s, use.settings[0])
    except ConfigError as exc:  # refused by the registry's load already, but said so
        return RedisCheck(use, str(exc), 0.0)
    started = time.perf_counter()
    problem: str | None = None
    answered: float | None = None
    round_trip_ms: float | None = None
    tightest_ms = min(use.timeouts, default=0.0) * 1000
    try:
        async with asyncio.timeout(timeout_s):
            await conn.client.ping()  # connects first: a few round trips
            answered = time.perf_counter()
            for _ in range(_ROUND_TRIPS):  # on the connection the first opened
                sent = time.perf_counter()
                await conn.client.ping()
                took = (time.perf_counter() - sent) * 1000
                round_trip_ms = took if round_trip_ms is None else min(round_trip_ms, took)
                if round_trip_ms <= tightest_ms:
                    break
    except TimeoutError:
        if answered is None:
            problem = f"timed out: no answer within {timeout_s:g} s"
        elif round_trip_ms is None:  # outlasted what was left: that long at least
            round_trip_ms = (time.perf_counter() - answered) * 1000
    except conn.errors as exc:
        problem = _problem(exc, timeout_s).replace(use.url, use.masked)
    finally:
        await conn.aclose()
    if problem is not None:
        return RedisCheck(use, problem, (time.perf_counter() - started) * 1000)
    assert answered is not None
    return RedisCheck(use, None, (answered - started) * 1000, round_trip_ms)


def _problem(exc: BaseException, timeout_s: float) -> str:
    """What is wrong, in a few words first: redis-py's messages name host and port (or
    the socket's path), never the password."""
    from redis import exceptions

    said = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, DbOutOfRange):
        return said  # "db 99 is out of range: this Redis has 16 databases (0 to 15)..."
    if isinstance(exc, HandshakeRefused):  # a user who may not SELECT the URL's db...
        return f"refused at connect: {said}"
    if isinstance(exc, exceptions.TimeoutError):
        return f"timed out within {timeout_s:g} s: {said}"
    auth = tuple(
        getattr(exceptions, name)
        for name in ("AuthenticationError", "AuthorizationError")
        if hasattr(exceptions, name)
    )
    if isinstance(exc, auth) or said.startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
        return f"authentication refused: {said}"
    if isinstance(exc, exceptions.BusyLoadingError):
        return f"loading its data, refusing every call until it has: {said}"
    if isinstance(exc, exceptions.ResponseError):
        return f"answered with an error: {said}"
    if isinstance(exc, ConnectionRefusedError) or isinstance(exc.__cause__, ConnectionRefusedError):
        return f"connection refused: {said}"  # redis-py's says "Connect call failed"
    return f"cannot connect: {said}"
