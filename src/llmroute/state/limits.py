"""Limits of the pool, counted in this process or in Redis (shared by every gateway
and SDK pointed at it): requests per minute of upstream deployments, and money spent per
hour, day or month on pool models (budgets).

Requests are counted over a sliding window the way most rate limiters do it: per-minute
buckets by the wall clock, the previous minute's count weighted by how much of it still
lies inside the last 60 seconds. ``acquire`` takes one request from the limit when there
is room. Tokens (a client key's ``tpm``) use the same window: ``tokens`` reads the
weighted count, ``add_tokens`` adds a finished request's tokens, and ``hold_tokens``
counts a request's estimated prompt while it is in flight (refused when it would pass
the limit) until ``release_tokens`` takes it back out of the minute it went into, so
concurrent requests see each other before any has finished. Requests in flight (a
deployment's ``max_in_flight``) are slots: ``take_slot`` takes one when fewer than the cap
are taken, ``give_slot`` gives it back when the request (a stream: its last event) ends.
Each slot is a lease that lapses (after `SLOT_LEASE_S` unless the taker asks for longer),
so a process that dies holding slots, or a stream nobody reads or closes, does not shrink
the deployment for good; ``renew_slot`` extends a lease that is still held (a long
stream, still answering, renews its own). Spending is summed per
calendar period (UTC): ``spent`` reads it, ``charge`` adds a request's cost once it is
known. A hard budget also counts calls in flight: ``hold_usd`` adds a call's worst case
when the sum stays within the cap (refused otherwise), and ``settle_usd`` replaces it
by what the call cost (0: takes it back out), in the period it went into. Each hold has
an id, noted beside the sum, so a settle corrects the sum by what was really held: a
hold whose reply was lost (a timeout after Redis ran it) is found and replaced, and one
that never went in (Redis down) leaves the cost alone added. A settle Redis does not
take is kept in this process and tried again with the next call that reaches Redis;
one made twice (Redis made it, its answer was lost) counts once, as the settled id is
kept beside the holds for `SETTLED_KEPT_S` (made again past `LATE_S` after the try whose
answer was lost, when that may be gone, it only replaces its hold, if that is still
there), and so does a hold that reaches Redis after its own settle or twice (its id is
there already: it changes nothing). A
hold in Redis is leased (``renew_usd`` extends it): one neither settled nor renewed in
time (its process died mid-call) is taken out of the sum by the next hold.
Wall-clock periods let replicas on different machines agree.

A Redis that cannot answer lets requests through (a limit exists to spare a quota or a
budget, and the upstream still enforces its own quota): spending is then not counted,
the failure is logged at most once a minute and Redis is left alone for a second; the
calls waiting on it give up when one fails, and then one asks at a time
(`llmroute.state.answering`). An error reply fails that call alone; a give-back or a
settle it answers so is dropped, as asked again it would fail again, unless it refuses
for now (``READONLY`` until a failover ends, ``OOM``...): such a give-back or settle is
kept, and asked again after the same pause as a failure's. A count (an rpm take, a tpm
hold, a slot) Redis may have made while its caller never learned of it (its answer
lost: a timeout, a connection lost once it was sent; or its caller cancelled once it
was sent, a client that hung up) is given back before the next count: its request goes
no further, or on uncounted. Had Redis not counted it, that lets one more request through
(an under-count of one, where leaving it counted held one request that never went
upstream against the limit for up to two minutes, a slot for its lease).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from llmroute.state.answering import Answering, StoreUnavailable, note_failure
from llmroute.state.redis_conn import LOG_EVERY_S, RETRY_AFTER_S, Outage, connect, sent

__all__ = [
    "NOT_HELD",
    "SLOT_LEASE_S",
    "UNCOUNTED_SLOT",
    "MemoryLimits",
    "RateLimits",
    "RedisLimits",
    "UsdHold",
    "budget_period",
    "open_limits",
    "process_limits",
    "seconds_until_below",
]

log = logging.getLogger("llmroute.limits")

WINDOW_S = 60.0
NOT_HELD = -1  # `hold_tokens` let the request through without counting it (Redis down)
UNCOUNTED_SLOT = ""  # `take_slot` let the request through without counting it (Redis down)
_PENDING_RELEASES = 10_000  # give-backs kept while Redis does not take them
_PENDING_SETTLES = 10_000  # settles kept for a Redis that did not take them, at most
CLOSE_S = 1.5  # the longest closing tries those again: once past an outage's pause (1 s)
_CLOSE_POLL_S = 0.05
HOLD_LEASE_S = 1800.0  # a hard-budget hold lapses after this unless settled or renewed
SETTLED_KEPT_S = 120.0  # a settle made again within this (its answer lost) changes nothing
# A kept settle made again this long after a try whose answer was lost is late: its
# tombstone may be gone (it lapses `SETTLED_KEPT_S` after that try was made, on Redis's
# clock, whatever the gateways' clocks say; this leaves half of it for a slow reply), so
# it replaces its hold if that is still there, and else changes nothing.
LATE_S = SETTLED_KEPT_S / 2


# What is said when a full queue drops its oldest, by kind: what it holds, and what
# dropping one costs.
_DROPPED = {
    "settle": (
        "hard-budget settles",
        "each dropped settle's call keeps its worst case held in its budget until the "
        "hold's lease lapses (30 min, or the call's longer lease), and its cost is never "
        "counted",
    ),
    "slot": (
        "in-flight slot give-backs",
        "each dropped slot stays taken until its lease lapses (10 min, or the call's "
        "longer lease): one call fewer for its deployment's max_in_flight meanwhile",
    ),
    "tokens": (
        "tpm hold give-backs",
        "each dropped hold's tokens count against its tpm until their minute leaves "
        "the window (at most 2 min)",
    ),
    "take": (
        "rpm count give-backs (takes whose answer was lost)",
        "each dropped request counts against its rpm until its minute leaves the "
        "window (at most 2 min)",
    ),
}


@dataclass(slots=True)
class _Kept:
    """A settle Redis did not take yet: `hold` replaced by `usd`; `tried_at` when (on
    the monotonic clock) a try of it whose answer was lost may have made it, if one did."""

    hold: UsdHold
    usd: float
    tried_at: float | None = None


@dataclass(frozen=True, slots=True)
class UsdHold:
    """A call's worst case held in the budget counted under `key`, in the calendar
    period `window` (where it is settled even after that period ends); `hold_id` names
    it beside the sum; `keep_s` how long the period's sum is kept; `lease_s` how long
    it was leased for, what a renewal leases it for again (a shorter renewal would cut
    short a lease sized for the call's longest wait)."""

    key: str
    window: str
    hold_id: str
    usd: float
    keep_s: float
    lease_s: float = HOLD_LEASE_S


SLOT_LEASE_S = 600.0  # a slot lapses after this (the shortest lease), given back or not

# KEYS[1] the deployment's slots (member: a slot, score: when its lease lapses); ARGV[1]
# now, ARGV[2] the cap, ARGV[3] the new slot's lapse, ARGV[4] its name, ARGV[5] the
# set's expiry. Lapsed leases go first; 1 when taken, 0 at the cap. The set's expiry is
# only ever lengthened: a shorter lease taken later must not cut a longer one short.
_TAKE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[5]) then
  redis.call('EXPIRE', KEYS[1], ARGV[5])
end
return 1
"""

# KEYS[1] the deployment's slots; ARGV[1] the slot's new lapse, ARGV[2] its name, ARGV[3]
# the set's expiry. A slot no longer there (given back, or lapsed and taken over) is not
# brought back: 0; else 1.
_RENEW_SLOT = """
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[2])
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return 1
"""

# KEYS[1] this minute's counter, KEYS[2] the previous minute's; ARGV[1] the limit,
# ARGV[2] the previous minute's weight. The weighted count with this request, as a
# string (a Lua number would be cut to an integer), when taken; false (nil) at the limit.
_ACQUIRE = """
local curr = tonumber(redis.call('GET', KEYS[1]) or '0')
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
local used = prev * tonumber(ARGV[2]) + curr
if used >= tonumber(ARGV[1]) then
  return false
end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], 130)
return tostring(used + 1)
"""

# KEYS[1] this minute's token counter, KEYS[2] the previous minute's; ARGV[1] the tokens
# to hold, ARGV[2] the limit, ARGV[3] the previous minute's weight. 1 when held, 0 when
# they would pass the limit (a first request in an empty window is always held).
_HOLD = """
local curr = tonumber(redis.call('GET', KEYS[1]) or '0')
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
local used = math.max(prev * tonumber(ARGV[3]) + curr, 0)
if used > 0 and used + tonumber(ARGV[1]) > tonumber(ARGV[2]) then
  return 0
end
redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], 130)
return 1
"""

# Redis's own clock, in seconds (``TIME``); a script that reads it must replicate its
# writes, not itself (Redis 5 and later do; before, it is asked first).
_REDIS_NOW = """
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local redis_now = tonumber(time[1]) + tonumber(time[2]) / 1000000
"""

# Hard-budget holds. KEYS[1] the period's spending, KEYS[2] its holds (id -> USD), KEYS[3]
# their leases (id -> when it lapses). A hold whose lease lapsed (its process died mid-call)
# is taken out of the sum by the next hold: _DROP_LAPSED, run first (ARGV[1] now, the
# holder's clock, which leases are given in). A settled id's tombstone (no hold beside it)
# lapses on Redis's clock, as `_SETTLE_USD` gives it: on the holder's, a gateway whose
# clock ran ahead of the settler's swept it that much early (a settle made again within
# `LATE_S`, its answer lost, then counted its cost twice).
_DROP_LAPSED = (
    _REDIS_NOW
    + """
local now = tonumber(ARGV[1])
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', math.max(now, redis_now), 'WITHSCORES')
for i = 1, #gone, 2 do
  local id, at = gone[i], tonumber(gone[i + 1])
  local held = redis.call('HGET', KEYS[2], id)
  if held then
    if at <= now then
      redis.call('HDEL', KEYS[2], id)
      if redis.call('EXISTS', KEYS[1]) == 1 then
        redis.call('INCRBYFLOAT', KEYS[1], tostring(-tonumber(held)))
      end
      redis.call('ZREM', KEYS[3], id)
    end
  elseif at <= redis_now then
    redis.call('ZREM', KEYS[3], id)
  end
end
"""
)

# ARGV[1] now, ARGV[2] the USD to hold, ARGV[3] the cap, ARGV[4] the keys' expiry, ARGV[5]
# the hold's id, ARGV[6] when its lease lapses. {1, the sum before} when held; {0, the
# sum} when it would pass the cap; {2, the sum} when the id is in the leases already
# (held, or settled: its tombstone), so a hold that reaches Redis twice or after its own
# settle (reordered, or asked again once its answer was lost) changes nothing: held
# again, it would count until its lease lapsed with no settle left to take it out. Sums
# are strings: a Lua number would be cut to an integer.
_HOLD_USD = (
    _DROP_LAPSED
    + """
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
if redis.call('ZSCORE', KEYS[3], ARGV[5]) then
  return {2, tostring(spent)}
end
if spent + tonumber(ARGV[2]) > tonumber(ARGV[3]) then
  return {0, tostring(spent)}
end
redis.call('INCRBYFLOAT', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[5], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[4])
return {1, tostring(spent)}
"""
)

# ARGV[1] the hold's id, ARGV[2] what the call cost, ARGV[3] the keys' expiry, ARGV[4]
# how long its tombstone is kept (s, on Redis's clock), ARGV[5] '1' when it is late. The
# sum changes by the cost less what the hold put in (nothing, when it never went in or
# lapsed and was taken out). The id stays in the leases as a tombstone (no hold beside
# it: _DROP_LAPSED sweeps it once lapsed on Redis's clock), so a settle made again (its
# answer was lost) changes nothing: 1. A late one (made again long after a try whose
# answer was lost, when the tombstone that try left may have lapsed) changes nothing
# unless its hold is still there: 2 when neither is; else 0.
_SETTLE_USD = (
    _REDIS_NOW
    + """
local held = redis.call('HGET', KEYS[2], ARGV[1])
if not held then
  if redis.call('ZSCORE', KEYS[3], ARGV[1]) then
    return 1
  end
  if ARGV[5] == '1' then
    return 2
  end
end
local change = tonumber(ARGV[2])
if held then
  redis.call('HDEL', KEYS[2], ARGV[1])
  change = change - tonumber(held)
end
redis.call('ZADD', KEYS[3], tostring(redis_now + tonumber(ARGV[4])), ARGV[1])
if redis.call('TTL', KEYS[3]) < 0 then
  redis.call('EXPIRE', KEYS[3], ARGV[3])
end
if change ~= 0 and (change > 0 or redis.call('EXISTS', KEYS[1]) == 1) then
  redis.call('INCRBYFLOAT', KEYS[1], tostring(change))
  if redis.call('TTL', KEYS[1]) < 0 then
    redis.call('EXPIRE', KEYS[1], ARGV[3])
  end
end
return 0
"""
)

# ARGV[1] the hold's id, ARGV[2] when its lease now lapses: a hold still there (a long
# stream still answering) is kept.
_RENEW_USD = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[3], 'XX', ARGV[2], ARGV[1])
end
return 0
"""

# KEYS[1] the minute's token counter a hold went into; ARGV[1] the tokens held. A
# counter that has expired is not recreated below zero.
_RELEASE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DECRBY', KEYS[1], ARGV[1])
end
return 0
"""


class RateLimits(Protocol):
    url: str
    remote: bool  # whether its calls wait on the network (a cancellation can cut them)

    @property
    def answering(self) -> bool:
        """False while the store is taken for down (its reads then say nothing)."""
        ...

    async def acquire(self, key: str, per_minute: int) -> int | None:
        """Take one request: the minute it was counted in (`NOT_HELD` when it was let
        through uncounted), for `release_request`; None at the limit."""
        ...

    async def take(self, key: str, per_minute: int) -> float | None: ...

    async def release_request(self, key: str, minute: int) -> None:
        """Take a request `acquire` counted back out of its minute (its request went
        no further)."""
        ...

    async def spent(self, key: str, period: str) -> float: ...

    async def charge(self, key: str, period: str, usd: float) -> None: ...

    async def hold_usd(
        self, key: str, period: str, usd: float, cap: float, lease_s: float = HOLD_LEASE_S
    ) -> tuple[UsdHold | None, float]: ...

    async def settle_usd(self, hold: UsdHold, usd: float) -> None: ...

    async def renew_usd(self, hold: UsdHold, lease_s: float | None = None) -> None:
        """Lease `hold` `lease_s` from now (None: as long as it was leased for), if it is
        still there."""
        ...

    async def tokens(self, key: str) -> float: ...

    async def requests(self, key: str) -> float:
        """The requests `take` counted in the sliding minute, read without counting one."""
        ...

    async def add_tokens(self, key: str, count: int) -> None: ...

    async def hold_tokens(self, key: str, count: int, per_minute: int) -> int | None: ...

    async def retry_after(self, key: str, target: float, *, tokens: bool = False) -> float: ...

    async def release_tokens(self, key: str, minute: int, count: int) -> None: ...

    async def take_slot(self, key: str, cap: int, lease_s: float = SLOT_LEASE_S) -> str | None: ...

    async def renew_slot(self, key: str, slot: str, lease_s: float = SLOT_LEASE_S) -> bool: ...

    async def give_slot(self, key: str, slot: str) -> None: ...

    async def aclose(self, within_s: float = CLOSE_S) -> None: ...


def budget_period(period: str, now: float) -> tuple[str, float]:
    """The calendar period (UTC) `now` falls in, as a key suffix, and how long its sum
    must be kept (the period, twice over)."""
    if period == "hour":
        return f"h{int(now // 3600)}", 7200.0
    if period == "day":
        return f"d{int(now // 86400)}", 172800.0
    if period == "month":
        t = time.gmtime(now)
        return f"m{t.tm_year:04d}{t.tm_mon:02d}", 64 * 86400.0
    raise ValueError(f"unknown budget period {period!r}")


def _window(now: float) -> tuple[int, float]:
    """This minute's index and the weight of the previous minute's count."""
    minute = int(now // WINDOW_S)
    return minute, 1.0 - (now - minute * WINDOW_S) / WINDOW_S


def seconds_until_below(previous: float, this: float, now: float, target: float) -> float:
    """How long until the sliding count (``previous`` weighted by what is left of the last
    minute, plus ``this``) falls below `target`, with nothing more added: what a 429's
    ``Retry-After`` says. `target` <= 0 means until the window is empty."""
    weight = _window(now)[1]
    left_s = weight * WINDOW_S  # of this minute
    previous, this = max(previous, 0.0), max(this, 0.0)
    if target <= 0:
        return left_s + (WINDOW_S if this > 0 else 0.0) if previous > 0 or this > 0 else 0.0
    if previous * weight + this < target:
        return 0.0
    if this < target:  # within this minute, as the previous minute's share decays
        return max(0.0, WINDOW_S * (weight - (target - this) / previous))
    # next minute: this minute's count becomes the previous one and decays
    return left_s + WINDOW_S * (1.0 - target / this)


def _rolled(entry: tuple[int, int, int] | None, minute: int) -> tuple[int, int]:
    """(this minute's count, the previous minute's) from a (minute, this, previous)
    entry last written in any minute."""
    if entry is None:
        return 0, 0
    seen, this, previous = entry
    if seen == minute:
        return this, previous
    return 0, this if seen == minute - 1 else 0


class MemoryLimits:
    """Counts in this process; thread-safe (the SDK's loops share it)."""

    url = "memory"
    remote = False
    answering = True

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        lease_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock  # what periods and minutes are counted in: the calendar
        self._lease_clock = lease_clock  # what leases last in: a clock steps cannot move
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, int, int]] = {}  # key → (minute, this, previous)
        self._spent: dict[str, tuple[str, float]] = {}  # key → (period, USD)
        self._tokens: dict[str, tuple[int, int, int]] = {}  # key → (minute, this, previous)
        self._slots: dict[str, dict[int, float]] = {}  # key → {slot: when its lease lapses}
        self._next_slot = 0

    async def acquire(self, key: str, per_minute: int) -> int | None:
        minute, used = self._take(key, per_minute)
        return None if used is None else minute

    async def release_request(self, key: str, minute: int) -> None:
        """As `release_tokens`, for one request."""
        now, _ = _window(self._clock())
        with self._lock:
            this, previous = _rolled(self._counts.get(key), now)
            if minute == now:
                self._counts[key] = (now, this - 1, previous)
            elif minute == now - 1:
                self._counts[key] = (now, this, previous - 1)

    async def take(self, key: str, per_minute: int) -> float | None:
        """`acquire`, saying how many requests the window holds with this one (None when
        it was at the limit): what the rate-limit headers report."""
        return self._take(key, per_minute)[1]

    def _take(self, key: str, per_minute: int) -> tuple[int, float | None]:
        """The minute `take` counts in (one clock reading: the minute `acquire` says is
        the one counted in, as a minute turns), and what `take` says."""
        minute, weight = _window(self._clock())
        with self._lock:
            this, previous = _rolled(self._counts.get(key), minute)
            used = previous * weight + this
            if used >= per_minute:
                self._counts[key] = (minute, this, previous)
                return minute, None
            self._counts[key] = (minute, this + 1, previous)
            return minute, used + 1

    async def spent(self, key: str, period: str) -> float:
        window, _ = budget_period(period, self._clock())
        with self._lock:
            seen, usd = self._spent.get(key, (window, 0.0))
        return usd if seen == window else 0.0

    async def charge(self, key: str, period: str, usd: float) -> None:
        window, _ = budget_period(period, self._clock())
        with self._lock:
            seen, total = self._spent.get(key, (window, 0.0))
            self._spent[key] = (window, (total if seen == window else 0.0) + usd)

    async def hold_usd(
        self, key: str, period: str, usd: float, cap: float, lease_s: float = HOLD_LEASE_S
    ) -> tuple[UsdHold | None, float]:
        """Add `usd` to this period's sum unless that would pass `cap`: (the hold, the
        sum before), or (None, the sum) when refused. (No lease: a process that dies
        takes its counts with it.)"""
        window, keep_s = budget_period(period, self._clock())
        with self._lock:
            seen, total = self._spent.get(key, (window, 0.0))
            total = total if seen == window else 0.0
            if total + usd > cap:
                return None, total
            self._spent[key] = (window, total + usd)
        return UsdHold(key, window, os.urandom(8).hex(), usd, keep_s, lease_s), total

    async def settle_usd(self, hold: UsdHold, usd: float) -> None:
        """Replace `hold` by `usd`, what its call cost (0: take it back), in the period
        it went into (nothing once a later period has begun: that sum is gone)."""
        with self._lock:
            seen, total = self._spent.get(hold.key, (hold.window, 0.0))
            if seen == hold.window:
                self._spent[hold.key] = (hold.window, total + usd - hold.usd)

    async def renew_usd(self, hold: UsdHold, lease_s: float | None = None) -> None:
        """Nothing lapses in memory."""

    async def tokens(self, key: str) -> float:
        minute, weight = _window(self._clock())
        with self._lock:
            this, previous = _rolled(self._tokens.get(key), minute)
        return max(previous * weight + this, 0.0)

    async def requests(self, key: str) -> float:
        minute, weight = _window(self._clock())
        with self._lock:
            this, previous = _rolled(self._counts.get(key), minute)
        return max(previous * weight + this, 0.0)

    async def add_tokens(self, key: str, count: int) -> None:
        if count <= 0:
            return
        minute, _ = _window(self._clock())
        with self._lock:
            this, previous = _rolled(self._tokens.get(key), minute)
            self._tokens[key] = (minute, this + count, previous)

    async def hold_tokens(self, key: str, count: int, per_minute: int) -> int | None:
        """Count `count` tokens now, unless the window already holds some and they would
        pass `per_minute`: the minute they went into, or None when refused."""
        minute, weight = _window(self._clock())
        with self._lock:
            this, previous = _rolled(self._tokens.get(key), minute)
            used = max(previous * weight + this, 0.0)
            if used > 0 and used + count > per_minute:
                return None
            self._tokens[key] = (minute, this + count, previous)
        return minute

    async def release_tokens(self, key: str, minute: int, count: int) -> None:
        """Take a hold back out of the minute it went into (nothing once that minute has
        left the window)."""
        now, _ = _window(self._clock())
        with self._lock:
            this, previous = _rolled(self._tokens.get(key), now)
            if minute == now:
                self._tokens[key] = (now, this - count, previous)
            elif minute == now - 1:
                self._tokens[key] = (now, this, previous - count)

    async def retry_after(self, key: str, target: float, *, tokens: bool = False) -> float:
        """Seconds until `key`'s requests (or `tokens`) fall below `target`."""
        now = self._clock()
        minute, _ = _window(now)
        with self._lock:
            entry = (self._tokens if tokens else self._counts).get(key)
            this, previous = _rolled(entry, minute)
        return seconds_until_below(previous, this, now, target)

    async def take_slot(self, key: str, cap: int, lease_s: float = SLOT_LEASE_S) -> str | None:
        """One of `cap` slots of `key`, leased for `lease_s`, or None when all are taken.
        Leased like Redis's, so a stream nobody ever read or closed cannot hold its slot
        for good."""
        now = self._lease_clock()
        with self._lock:
            slots = self._slots.setdefault(key, {})
            if len(slots) >= cap:
                for slot, lapses in list(slots.items()):
                    if lapses <= now:
                        del slots[slot]
                if len(slots) >= cap:
                    return None
            self._next_slot += 1
            slots[self._next_slot] = now + lease_s
            return str(self._next_slot)

    async def renew_slot(self, key: str, slot: str, lease_s: float = SLOT_LEASE_S) -> bool:
        """Lease `slot` for `lease_s` from now, if it is still held (not given back, nor
        lapsed and taken over)."""
        if slot == UNCOUNTED_SLOT:
            return True
        with self._lock:
            slots = self._slots.get(key, {})
            if int(slot) not in slots:
                return False
            slots[int(slot)] = self._lease_clock() + lease_s
            return True

    async def give_slot(self, key: str, slot: str) -> None:
        if slot == UNCOUNTED_SLOT:
            return
        with self._lock:
            self._slots.get(key, {}).pop(int(slot), None)

    async def aclose(self, within_s: float = CLOSE_S) -> None:
        """Nothing to release: the counts outlive a registry reload."""


_PROCESS = MemoryLimits()


def process_limits() -> MemoryLimits:
    """This process's counts, shared by every dispatcher in it, so a registry reload or
    a second SDK loop does not start a fresh minute."""
    return _PROCESS


# This process's open RedisLimits by the counts they share (URL, namespace): one closing
# (a registry version retired by a reload) hands what Redis did not take yet to another
# (`aclose`), which makes it before its next count, as its own.
_OPEN: dict[tuple[str, str], weakref.WeakSet[RedisLimits]] = {}
_OPEN_LOCK = threading.Lock()


class RedisLimits:
    """Counts in Redis with one atomic script per request (one round trip)."""

    remote = True

    def __init__(
        self,
        url: str,
        timeout_s: float,
        namespace: str,
        clock: Callable[[], float] = time.time,
        on_error: Callable[[], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = connect(url, timeout_s, "dispatch.limits.url")
        self.url = self._redis.url
        self._client: Any = self._redis.client
        self._script = self._client.register_script(_ACQUIRE)
        self._hold = self._client.register_script(_HOLD)
        self._release = self._client.register_script(_RELEASE)
        self._hold_usd = self._client.register_script(_HOLD_USD)
        self._settle_usd = self._client.register_script(_SETTLE_USD)
        self._renew_usd = self._client.register_script(_RENEW_USD)
        self._take_slot = self._client.register_script(_TAKE_SLOT)
        self._renew_slot = self._client.register_script(_RENEW_SLOT)
        self._prefix = f"{namespace}:rpm:"
        self._slots_prefix = f"{namespace}:inflight:"
        self._budget_prefix = f"{namespace}:usd:"
        self._tokens_prefix = f"{namespace}:tpm:"
        self._clock = clock
        self._monotonic = monotonic  # what a kept settle's age is measured on
        # monotonic: a wall-clock step must not stretch it
        self._outage = Outage(log, on_failure=on_error)
        # the calls under way give up when one fails; then one asks at a time
        self._answering = Answering.of(self._redis, timeout_s)
        self._pending: deque[_Kept] = deque(maxlen=_PENDING_SETTLES)
        self._unsure = [0, 0.0]  # late settles that found neither hold nor tombstone: USD
        self._dropped: dict[str, int] = {}  # kind → dropped from its full queue, unsaid
        self._dropped_said: dict[str, float] = {}  # kind → when that was last said
        # monotonic: when the kept settles and give-backs are asked again after Redis
        # refused one for now (a transient error reply), as after a failure (the
        # outage's pause)
        self._writes_after = 0.0
        # Give-backs Redis did not take (it failed, or was taken for down after another
        # call failed): slots (key, slot) and token holds (key, minute, count), made
        # before the next count. Dropped, a slot would stay taken for its whole lease
        # (10 min) and a token hold for two minute windows: a 0.1 s hiccup would stop a
        # model with `max_in_flight` or refuse a key with `tpm` that long.
        self._slots_back: deque[tuple[str, str]] = deque(maxlen=_PENDING_RELEASES)
        self._tokens_back: deque[tuple[str, int, int]] = deque(maxlen=_PENDING_RELEASES)
        # takes (key, minute) whose answer was lost: counted in Redis, maybe, but the
        # request went on uncounted (a minute's count one too high, refusing one)
        self._takes_back: deque[tuple[str, int]] = deque(maxlen=_PENDING_RELEASES)
        self._counts = (url, namespace)
        with _OPEN_LOCK:
            _OPEN.setdefault(self._counts, weakref.WeakSet()).add(self)

    @property
    def answering(self) -> bool:
        return not self._outage.down()

    async def acquire(self, key: str, per_minute: int) -> int | None:
        minute, taken = await self._take(key, per_minute)
        return None if taken is None else minute

    async def take(self, key: str, per_minute: int) -> float | None:
        return (await self._take(key, per_minute))[1]

    async def release_request(self, key: str, minute: int) -> None:
        if minute == NOT_HELD:
            return
        if not await self._given_back(self._taken_back(key, minute)):
            self._later(self._takes_back, (key, minute))

    async def _take(self, key: str, per_minute: int) -> tuple[int, float | None]:
        """The minute `take` counted in (`NOT_HELD` when it let the request through
        uncounted), and what `take` says."""
        if self._outage.down() or not await self._give_back_pending():
            return NOT_HELD, 0.0  # let through, count unknown
        minute, weight = _window(self._clock())
        keys = [f"{self._prefix}{key}:{minute}", f"{self._prefix}{key}:{minute - 1}"]
        try:
            async with self._answering():
                taken = await self._script(keys=keys, args=[per_minute, f"{weight:.6f}"])
        except StoreUnavailable as exc:
            self._failed(exc)
            if exc.maybe_made:
                # it may have been counted before the answer was lost: given back later
                # (a take refused or never made, given back all the same, lets one more
                # request through that minute, as a Redis that does not answer does)
                self._later(self._takes_back, (key, minute))
            return NOT_HELD, 0.0
        except asyncio.CancelledError as exc:
            if sent(exc):  # its request goes no further: given back, as a lost one is
                self._later(self._takes_back, (key, minute))
            raise
        if taken is None:
            return minute, None
        try:
            return minute, float(taken)
        except (TypeError, ValueError):
            return minute, 0.0

    async def spent(self, key: str, period: str) -> float:
        if self._outage.down() or not await self._settle_pending():
            return 0.0
        window, _ = budget_period(period, self._clock())
        try:
            async with self._answering():
                value = await self._client.get(f"{self._budget_prefix}{key}:{window}")
        except StoreUnavailable as exc:
            self._failed(exc)
            return 0.0
        try:
            return float(value) if value is not None else 0.0
        except ValueError:
            return 0.0

    async def charge(self, key: str, period: str, usd: float) -> None:
        if self._outage.down() or usd <= 0:
            return
        window, keep_s = budget_period(period, self._clock())
        name = f"{self._budget_prefix}{key}:{window}"
        try:
            async with self._answering(), self._client.pipeline(transaction=True) as pipe:
                pipe.incrbyfloat(name, usd)
                pipe.expire(name, int(keep_s))
                await pipe.execute()
        except StoreUnavailable as exc:
            self._failed(exc)

    async def hold_usd(
        self, key: str, period: str, usd: float, cap: float, lease_s: float = HOLD_LEASE_S
    ) -> tuple[UsdHold | None, float]:
        """As in memory, with a lease: a hold neither settled nor renewed within
        `lease_s` (its process died) is taken out of the sum by a later hold. A Redis
        that does not answer lets the call through with a hold it may not have (its
        settle finds out)."""
        now = self._clock()
        window, keep_s = budget_period(period, now)
        hold = UsdHold(key, window, os.urandom(8).hex(), usd, keep_s, lease_s)
        if self._outage.down():
            return hold, 0.0
        await self._settle_pending()
        names = self._budget_names(key, window)
        args = [f"{now:.3f}", repr(usd), repr(cap), int(keep_s), hold.hold_id]
        try:
            async with self._answering():
                held, before = await self._hold_usd(
                    keys=names, args=[*args, f"{now + lease_s:.3f}"]
                )
        except StoreUnavailable as exc:
            self._failed(exc)
            return hold, 0.0  # it may have gone in before the reply was lost
        try:
            total = float(before)
        except (TypeError, ValueError):
            total = 0.0
        return (hold if held else None), total  # 2: there already, as a hold of its own

    async def settle_usd(self, hold: UsdHold, usd: float) -> None:
        """As in memory; kept and tried again later when Redis does not take it."""
        kept = _Kept(hold, usd)
        if self._outage.down() or not await self._settle_pending():
            self._keep_for_later(kept)
            return
        if not await self._settled(kept):
            self._keep_for_later(kept)

    async def _settled(self, kept: _Kept) -> bool:
        """Whether `kept` was made (or is done with: refused for good). Made `LATE_S`
        after a try whose answer was lost, it only replaces its hold, if that is still
        there: its tombstone, which says it was made, may be gone by then, and adding
        its cost again would count it twice."""
        hold = kept.hold
        late = kept.tried_at is not None and self._monotonic() - kept.tried_at > LATE_S
        args = [hold.hold_id, repr(kept.usd), int(hold.keep_s), repr(SETTLED_KEPT_S), int(late)]
        try:
            async with self._answering():
                done = await self._settle_usd(
                    keys=self._budget_names(hold.key, hold.window), args=args
                )
        except StoreUnavailable as exc:
            if exc.maybe_made and kept.tried_at is None:
                kept.tried_at = self._monotonic()  # it may have been made
            return self._refused(exc, settle=True)
        except asyncio.CancelledError as exc:
            if sent(exc) and kept.tried_at is None:
                kept.tried_at = self._monotonic()  # asked: it may have been made
            raise
        if done == 2:
            self._unsure[0] += 1
            self._unsure[1] += kept.usd
        return True

    async def renew_usd(self, hold: UsdHold, lease_s: float | None = None) -> None:
        if self._outage.down():
            return
        names = self._budget_names(hold.key, hold.window)
        lapses = self._clock() + (hold.lease_s if lease_s is None else lease_s)
        try:
            async with self._answering():
                await self._renew_usd(keys=names, args=[hold.hold_id, f"{lapses:.3f}"])
        except StoreUnavailable as exc:
            self._failed(exc)

    def _keep_for_later(self, kept: _Kept) -> None:
        self._later(self._pending, kept)

    async def _settle_pending(self, most: int = 100) -> bool:
        """Settle what Redis did not take before (the `most` oldest now); False when it
        still does not answer. One whose caller is cancelled meanwhile (a budget read
        whose client hung up) goes back first in line: made twice, it counts once."""
        if self._pending and self._monotonic() < self._writes_after:
            return False  # Redis refused one for now a moment ago: not asked again yet
        try:
            for _ in range(min(len(self._pending), most)):
                if not self._pending:  # another caller settled the rest meanwhile
                    break
                item = self._pending.popleft()  # taken first: no two callers settle it
                if not await self._kept_unless_made(
                    self._pending, item, self._settled(item), again=True
                ):
                    return False
            return True
        finally:
            if self._unsure[0]:
                self._said_unsure()

    def _said_unsure(self) -> None:
        count, usd = self._unsure
        self._unsure = [0, 0.0]
        log.warning(
            "limits: %d budget settle(s) (%.6f USD) made again over %g s after a try "
            "whose answer redis %s lost found neither their hold nor its tombstone: taken "
            "as made by that try, they changed nothing (made twice, a cost would count "
            "twice); had that try not reached redis, those calls' cost is not counted",
            count,
            usd,
            LATE_S,
            self.url,
        )

    def _budget_names(self, key: str, window: str) -> list[str]:
        name = f"{self._budget_prefix}{key}:{window}"
        return [name, f"{name}:holds", f"{name}:lapses"]

    async def tokens(self, key: str) -> float:
        if self._outage.down():
            return 0.0
        minute, weight = _window(self._clock())
        names = [f"{self._tokens_prefix}{key}:{minute}", f"{self._tokens_prefix}{key}:{minute - 1}"]
        return await self._windowed(names, weight)

    async def requests(self, key: str) -> float:
        if self._outage.down():
            return 0.0
        minute, weight = _window(self._clock())
        names = [f"{self._prefix}{key}:{minute}", f"{self._prefix}{key}:{minute - 1}"]
        return await self._windowed(names, weight)

    async def _windowed(self, names: list[str], weight: float) -> float:
        """The sliding minute's count from its two per-minute keys (`names`: this
        minute's, then the last), 0 when Redis does not answer."""
        try:
            async with self._answering():
                this, previous = await self._client.mget(names)
        except StoreUnavailable as exc:
            self._failed(exc)
            return 0.0
        try:
            return max(float(previous or 0) * weight + float(this or 0), 0.0)
        except ValueError:
            return 0.0

    async def add_tokens(self, key: str, count: int) -> None:
        if self._outage.down() or count <= 0:
            return
        minute, _ = _window(self._clock())
        name = f"{self._tokens_prefix}{key}:{minute}"
        try:
            async with self._answering(), self._client.pipeline(transaction=True) as pipe:
                pipe.incrby(name, count)
                pipe.expire(name, 130)
                await pipe.execute()
        except StoreUnavailable as exc:
            self._failed(exc)

    async def hold_tokens(self, key: str, count: int, per_minute: int) -> int | None:
        minute, weight = _window(self._clock())
        if self._outage.down() or not await self._give_back_pending():
            return NOT_HELD
        keys = [f"{self._tokens_prefix}{key}:{minute}", f"{self._tokens_prefix}{key}:{minute - 1}"]
        try:
            async with self._answering():
                held = await self._hold(keys=keys, args=[count, per_minute, f"{weight:.6f}"])
        except StoreUnavailable as exc:
            self._failed(exc)
            if exc.maybe_made:
                # it may have been held before the answer was lost, and the request goes
                # on unheld (nothing gives it back) while its real tokens are counted
                # too: given back before the next count, as a lost take is
                self._later(self._tokens_back, (key, minute, count))
            return NOT_HELD
        except asyncio.CancelledError as exc:
            if sent(exc):  # its caller never learns the minute to give it back to
                self._later(self._tokens_back, (key, minute, count))
            raise
        return minute if held else None

    async def release_tokens(self, key: str, minute: int, count: int) -> None:
        if minute == NOT_HELD:
            return
        if not await self._given_back(self._released_tokens(key, minute, count)):
            self._later(self._tokens_back, (key, minute, count))

    async def _released_tokens(self, key: str, minute: int, count: int) -> bool:
        return await self._released(self._tokens_prefix + key, minute, count)

    async def _taken_back(self, key: str, minute: int) -> bool:
        """A `take` whose answer was lost, out of the count of the minute it went into."""
        return await self._released(self._prefix + key, minute, 1)

    async def _released(self, counter: str, minute: int, count: int) -> bool:
        """`count` out of `counter`'s count of `minute`; whether it is done: Redis took
        it, or it may have (asked, and its answer lost: `maybe_made`), as a DECRBY made
        twice gives another request's count back (its caller cancelled: dropped too)."""
        if minute < _window(self._clock())[0] - 1:
            return True  # its minute no longer counts in the sliding window
        try:
            async with self._answering():
                await self._release(keys=[f"{counter}:{minute}"], args=[count])
        except StoreUnavailable as exc:
            return self._refused(exc) or exc.maybe_made
        return True

    async def retry_after(self, key: str, target: float, *, tokens: bool = False) -> float:
        now = self._clock()
        if self._outage.down():
            return 1.0
        minute, _ = _window(now)
        prefix = self._tokens_prefix if tokens else self._prefix
        names = [f"{prefix}{key}:{minute}", f"{prefix}{key}:{minute - 1}"]
        try:
            async with self._answering():
                this, previous = await self._client.mget(names)
            return seconds_until_below(float(previous or 0), float(this or 0), now, target)
        except StoreUnavailable as exc:
            self._failed(exc)
        except ValueError:
            pass
        return 1.0

    async def take_slot(self, key: str, cap: int, lease_s: float = SLOT_LEASE_S) -> str | None:
        if self._outage.down() or not await self._give_back_pending():
            return UNCOUNTED_SLOT
        now = self._clock()
        slot = os.urandom(8).hex()
        args = [f"{now:.3f}", cap, f"{now + lease_s:.3f}", slot, math.ceil(lease_s) + 60]
        try:
            async with self._answering():
                taken = await self._take_slot(keys=[f"{self._slots_prefix}{key}"], args=args)
        except StoreUnavailable as exc:
            self._failed(exc)
            if exc.maybe_made:
                # asked, and it may have been taken before the answer was lost (a
                # timeout, a connection lost once it was sent): given back later, or it
                # stays taken for its whole lease (one never sent, Redis refusing to
                # connect, is not queued)
                self._later(self._slots_back, (key, slot))
            return UNCOUNTED_SLOT
        except asyncio.CancelledError as exc:
            if sent(exc):  # its caller never learns the slot to give it back
                self._later(self._slots_back, (key, slot))
            raise
        return slot if taken else None

    async def renew_slot(self, key: str, slot: str, lease_s: float = SLOT_LEASE_S) -> bool:
        if slot == UNCOUNTED_SLOT or self._outage.down():
            return True  # not counted: nothing lapses
        args = [f"{self._clock() + lease_s:.3f}", slot, math.ceil(lease_s) + 60]
        try:
            async with self._answering():
                renewed = await self._renew_slot(keys=[f"{self._slots_prefix}{key}"], args=args)
            return bool(renewed)
        except StoreUnavailable as exc:
            self._failed(exc)
            return True

    async def give_slot(self, key: str, slot: str) -> None:
        if slot == UNCOUNTED_SLOT:
            return
        if not await self._given_back(self._gave_slot(key, slot)):
            self._later(self._slots_back, (key, slot))

    async def _gave_slot(self, key: str, slot: str) -> bool:
        try:
            async with self._answering():
                await self._client.zrem(f"{self._slots_prefix}{key}", slot)
        except StoreUnavailable as exc:
            return self._refused(exc)
        return True

    async def _given_back(self, give: Coroutine[Any, Any, bool]) -> bool:
        """Whether `give` was made: not while Redis is taken for down, nor before the
        give-backs it did not take yet (an older one first)."""
        if self._outage.down() or not await self._give_back_pending():
            give.close()
            return False
        return await give

    def _later(self, queue: deque[Any], item: Any) -> None:
        if len(queue) == queue.maxlen:
            self._dropped_oldest(self._kind(queue), len(queue))
        queue.append(item)

    def _put_back(self, queue: deque[Any], item: Any) -> None:
        """`item`, taken from the head of `queue` and not made, back at its head; unless
        the queue filled meanwhile (new ones kept while it was asked): it is the oldest
        then, and the one dropped and said (put back, the full queue dropped its newest,
        unsaid)."""
        if len(queue) == queue.maxlen:
            self._dropped_oldest(self._kind(queue), len(queue))
            return
        queue.appendleft(item)

    def _kind(self, queue: deque[Any]) -> str:
        """What `queue` keeps, as `_DROPPED` names it."""
        if queue is self._pending:
            return "settle"
        if queue is self._slots_back:
            return "slot"
        return "take" if queue is self._takes_back else "tokens"

    def _dropped_oldest(self, kind: str, kept: int) -> None:
        """A queue of `kind` full (`kept`) dropped its oldest: said at most once a
        minute a kind (one a request while Redis is down would flood the log), with
        how many were dropped since it was last said."""
        self._dropped[kind] = self._dropped.get(kind, 0) + 1
        now = self._monotonic()
        if now - self._dropped_said.get(kind, -LOG_EVERY_S) < LOG_EVERY_S:
            return
        self._dropped_said[kind] = now
        what, cost = _DROPPED[kind]
        log.warning(
            "limits: %d %s are waiting for redis %s (it failed, or was taken for down), "
            "the most kept: the oldest is dropped for each new one (%d dropped since this "
            "was last said); %s. The rest are made, oldest first, once redis answers again",
            kept,
            what,
            self.url,
            self._dropped.pop(kind),
            cost,
        )

    async def _give_back_pending(self, most: int = 100) -> bool:
        """Make the give-backs Redis did not take before (the `most` oldest of each
        kind); False when it still does not answer, or refused one for now a moment ago
        (`_refused`). Free when there are none."""
        if (self._slots_back or self._tokens_back or self._takes_back) and (
            self._monotonic() < self._writes_after
        ):
            return False
        kinds: tuple[tuple[deque[Any], Callable[..., Coroutine[Any, Any, bool]], bool], ...] = (
            (self._slots_back, self._gave_slot, True),
            (self._tokens_back, self._released_tokens, False),
            (self._takes_back, self._taken_back, False),
        )
        for queue, give, again in kinds:
            for _ in range(min(len(queue), most)):
                if not queue:  # another caller made the rest meanwhile
                    break
                item = queue.popleft()  # taken first: no two callers make it
                if not await self._kept_unless_made(queue, item, give(*item), again=again):
                    return False
        return True

    async def _kept_unless_made(
        self, queue: deque[Any], item: Any, give: Coroutine[Any, Any, bool], *, again: bool
    ) -> bool:
        """`give` awaited; `item` back at the head of `queue` unless it was made
        (`_put_back`: the one dropped if the queue filled meanwhile). When the
        caller is cancelled once the command was sent (its client hung up) it may have
        reached Redis all the same: it goes back only when making it `again` is
        harmless (a slot's ZREM; a budget settle, by its tombstone); a token hold's
        DECRBY twice would give another request's tokens back, so it is dropped (its
        tokens count until their minute passes), and so is a take's (as is one whose
        answer was lost: `_released`). One cancelled before it was sent (connecting,
        waiting for a connection) was not made: it goes back."""
        made = False
        try:
            made = await give
        except asyncio.CancelledError as exc:
            if again or not sent(exc):
                self._put_back(queue, item)
            raise
        if not made:
            self._put_back(queue, item)
        return made

    def _failed(self, exc: StoreUnavailable) -> None:
        note_failure(self._outage, exc, "limits unavailable, letting requests through: %s", exc)

    def _refused(self, exc: StoreUnavailable, *, settle: bool = False) -> bool:
        """Note a give-back's or a (budget) `settle`'s failure; whether it is done with
        all the same: an error reply that refuses for good (``WRONGTYPE`` from a foreign
        key...) comes again each time, so kept, it stayed at the head of its queue and
        every later count was let through uncounted. Dropped, its count lapses as a dead
        process's does. One refused for now (``READONLY`` until a failover ends,
        ``OOM``...: `StoreUnavailable.transient`, nothing of it made) is kept and asked
        again after a pause, as one Redis did not answer: dropped, a settle's call's
        cost was never counted and its hold counted until its lease lapsed, a slot stayed
        taken for its lease (10 min), a token hold counted for its minute."""
        if not exc.replied:
            self._failed(exc)
            return False
        if exc.transient:
            self._writes_after = self._monotonic() + RETRY_AFTER_S
            note_failure(
                self._outage,
                exc,
                "limits: a %s refused for now, kept and tried again in %g s (until then %s): %s",
                "budget settle" if settle else "give-back",
                RETRY_AFTER_S,
                "budget reads let calls through" if settle else "counts let requests through",
                exc,
            )
            return False
        note_failure(
            self._outage,
            exc,
            "limits: dropped a %s redis refused (asked again, it would fail again): %s; %s",
            "budget settle" if settle else "give-back",
            exc,
            "that call's hold counts until its lease lapses, its cost is not counted"
            if settle
            else "what it held counts until its minute passes or its lease lapses",
        )
        return True

    async def aclose(self, within_s: float = CLOSE_S) -> None:
        """Make the settles and give-backs Redis did not take before closing, tried
        again as it is asked again after a failure (`Outage`) for at most `within_s`:
        closing while Redis was taken for down (a hiccup in the last second) dropped
        them unsaid, with the process (a slot taken until its lease lapsed, a token
        hold counted for its minute, a hard budget's hold until its lease lapsed, and
        that call's cost never counted). What is still left is said in a WARNING. No
        try starts after `within_s` (one under way ends within the store's timeout),
        except the first: with no time left (a shutdown's deadline passed), a Redis not
        taken for down is still asked once, which costs one round trip. Where another
        of this process's limits counts in the same Redis and namespace (the registry
        version that replaced this one), what Redis does not take now (taken for down,
        or failing that try) is handed to it instead, made before its next count:
        dropped, a reload while Redis was down left the retired version's slots taken
        for their leases (10 min) while the process went on. Handed over while Redis
        answered, they waited for a count of their kind the next version may never
        make."""
        with _OPEN_LOCK:
            _OPEN.get(self._counts, weakref.WeakSet()).discard(self)  # none hands it more
        deadline = time.monotonic() + within_s
        first = True
        while any(self._left()):
            if time.monotonic() >= deadline and not first:
                break
            first = False
            if not self._outage.down() and await self._make_pending():
                break
            if self._handed_over():
                break
            refused_s = self._writes_after - self._monotonic()
            wait = max(self._outage.left_s(), refused_s, _CLOSE_POLL_S)
            if time.monotonic() + wait > deadline:
                break
            await asyncio.sleep(wait)
        if any(self._left()):
            log.warning(
                "limits: closing with %d budget settle(s), %d in-flight slot(s), %d "
                "token hold(s) and %d request count(s) redis %s did not take within %g s: "
                "the slots stay taken until their leases lapse, the token holds and "
                "requests count until their minute passes, and the budget holds until "
                "their leases lapse (those calls' cost is not counted)",
                *self._left(),
                self.url,
                round(within_s, 2),
            )
        await self._redis.aclose()

    def disown(self) -> None:
        """No longer one of this process's open limits (`_OPEN`): for one whose owner
        failed to build, which nothing will use or close. Left there (until the
        collector found it), it could be the heir of a retired version's give-backs,
        which nothing then made. Nothing was connected yet."""
        with _OPEN_LOCK:
            _OPEN.get(self._counts, weakref.WeakSet()).discard(self)

    def _handed_over(self) -> bool:
        """What Redis did not take yet, moved to another open limits on the same counts
        (its queues' bounds hold), if there is one. Under the lock: one closing on
        another thread (an SDK router's) is either still open, and makes them in its own
        close, or not chosen; handed over once it had looked, they were lost."""
        with _OPEN_LOCK:
            heir = next(iter(_OPEN.get(self._counts, ())), None)
            if heir is None:
                return False
            for mine, theirs in (
                (self._pending, heir._pending),
                (self._slots_back, heir._slots_back),
                (self._tokens_back, heir._tokens_back),
                (self._takes_back, heir._takes_back),
            ):
                while mine:
                    heir._later(theirs, mine.popleft())
        return True

    async def _make_pending(self) -> bool:
        """Every settle and give-back Redis did not take before, made now; False when
        it still does not answer."""
        if not await self._settle_pending(len(self._pending)):
            return False
        return await self._give_back_pending(max(self._left()[1:]))

    def _left(self) -> tuple[int, int, int, int]:
        """The settles, slots, token holds and takes Redis did not take yet (all 0: none)."""
        return (
            len(self._pending),
            len(self._slots_back),
            len(self._tokens_back),
            len(self._takes_back),
        )


def open_limits(
    url: str, timeout_s: float, namespace: str, on_error: Callable[[], None] | None = None
) -> RateLimits:
    """``memory`` (this process's shared counts) or a Redis URL. Opening Redis does not
    connect: a Redis that is down lets requests through rather than stopping startup;
    `on_error` is told of each Redis call that failed."""
    if url == "memory":
        return process_limits()
    return RedisLimits(url, timeout_s, namespace, on_error=on_error)
