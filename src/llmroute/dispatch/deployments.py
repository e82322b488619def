"""The innermost stages of dispatch: pick a deployment of a model (balancing), skip the
ones whose circuit breaker is open, that are at their requests- or tokens-per-minute
limit or that have their ``max_in_flight`` requests running, and call it with its time
limit (transport).

A deployment is one (provider, upstream model) pair. Its breaker and its request limit
are shared by every pool model served there, since they fail (and are metered) together.
With ``dispatch.breaker.url`` in Redis, a `BreakerLink` also shares its breaker's
openings with other processes (`llmroute.state.breakers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

from llmroute.deadline import NEVER, Deadline
from llmroute.dispatch.balance import Balancer
from llmroute.dispatch.breaker import CircuitBreaker
from llmroute.dispatch.stream_start import first_read
from llmroute.errors import (
    CircuitOpen,
    ConnectTimeout,
    LimitReached,
    ProviderError,
    ProviderTimeout,
)
from llmroute.providers.base import ChatProvider, RenamesModels, Timeouts
from llmroute.registry.schema import Registry
from llmroute.state.breakers import RedisBreakers
from llmroute.state.limits import NOT_HELD, SLOT_LEASE_S, UNCOUNTED_SLOT, RateLimits

__all__ = [
    "BreakerLink",
    "Deployment",
    "DeploymentPool",
    "Deployments",
    "InFlight",
    "Observe",
    "Slot",
    "TryFailed",
    "deployment_key",
    "give_back",
    "leased",
    "relayed",
    "renew",
    "settled",
    "settling",
    "slot_lease",
    "try_failure",
    "waited_out",
]

T = TypeVar("T")

log = logging.getLogger("llmroute.dispatch")

SLOT_GRACE_S = 60.0  # a slot's lease outlasts the longest wait its call may make by this
SLOT_RENEW_S = SLOT_LEASE_S / 3  # a stream still answering renews its slot this often
_BUSY_RETRY_S = 1.0  # the Retry-After hint for a deployment whose slots are all taken


def slot_lease(timeouts: Timeouts) -> float:
    """How long a call's in-flight slot is leased: past the longest wait the call may
    make (the whole answer; a stream's first event), so that a slow call's slot does not
    lapse while it runs (which would let one call too many through), and never less
    than `SLOT_LEASE_S`. A stream's later events each renew it (`renew`)."""
    longest = max(timeouts.total_s, timeouts.first_token_s or 0.0)
    return max(SLOT_LEASE_S, longest + SLOT_GRACE_S)


class BreakerLink:
    """One deployment's breaker tied to the openings other processes share: `sync`
    reads them (at most every ``sync_s``, so a request rarely waits on Redis) and
    `opened` announces this breaker's, in the background."""

    def __init__(
        self,
        breaker: CircuitBreaker,
        shared: RedisBreakers,
        key: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.breaker = breaker
        self._shared = shared
        self._key = key
        self._clock = clock
        self._checked_at = -math.inf
        self._tasks: set[asyncio.Task[None]] = set()

    async def sync(self) -> None:
        now = self._clock()
        if now - self._checked_at < self.breaker.settings.sync_s:
            return
        self._checked_at = now  # before the await: concurrent requests do not pile up
        remaining = await self._shared.open_for(self._key)
        if remaining is not None:
            self.breaker.open_elsewhere(remaining)

    def opened(self) -> None:
        task = asyncio.get_running_loop().create_task(
            self._shared.opened(self._key, self.breaker.settings.cooldown_s)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self, by: Deadline = NEVER) -> None:
        """Let announcements still in flight finish (each is bounded by the timeout), by
        `by` at the latest: one still running then is cancelled, and said."""
        if not self._tasks:
            return
        done, late = await asyncio.wait(set(self._tasks), timeout=by.timeout())
        for task in done:  # retrieved (each says its own failure), as gather did
            if not task.cancelled():
                task.exception()
        if late:
            log.warning(
                "closing with the opening of %s's breaker not yet announced to the other "
                "gateways (its shared store did not answer in time): they find it open "
                "only as their own breakers open",
                self._key,
            )
            for task in late:
                task.cancel()


@dataclass(frozen=True, slots=True)
class Deployment:
    provider_name: str
    provider: ChatProvider
    upstream: str  # the provider's name for the model
    breaker: CircuitBreaker
    rpm: int | None = None  # requests per minute it may be sent
    limits: RateLimits | None = None  # where `rpm` and `tpm` are counted
    link: BreakerLink | None = None  # the breaker's shared openings, when shared
    key: str = ""  # where its limit and shared breaker are counted (`deployment_key`)
    tpm: int | None = None  # tokens per minute it may answer
    max_in_flight: int | None = None  # requests it may have running at once
    # the model its answers name, where that is not `upstream` (a GGUF's stem, not its path)
    answers_as: str | None = None

    @property
    def answer_model(self) -> str:
        """The ``model`` a client is told answered: the upstream model's id, or what an
        in-process provider calls it (`RenamesModels`)."""
        return self.upstream if self.answers_as is None else self.answers_as

    @property
    def remote(self) -> bool:
        """Whether it holds something (a tpm hold, an in-flight slot) that is given back
        over the network (Redis), where a cancellation can cut the call giving it back."""
        holds = self.tpm is not None or self.max_in_flight is not None
        return holds and self.limits is not None and self.limits.remote

    async def take_slot(self, lease_s: float = SLOT_LEASE_S) -> str | None:
        """One of its `max_in_flight` slots, leased for `lease_s` (`UNCOUNTED_SLOT` when
        it has no such limit), or None when every slot is taken."""
        if self.max_in_flight is None or self.limits is None:
            return UNCOUNTED_SLOT
        return await self.limits.take_slot(self.key, self.max_in_flight, lease_s)

    async def renew_slot(self, slot: str, lease_s: float) -> bool:
        """Whether `slot` was still held; its lease then runs `lease_s` from now."""
        if slot == UNCOUNTED_SLOT or self.limits is None:
            return True
        return await self.limits.renew_slot(self.key, slot, lease_s)

    async def give_slot(self, slot: str) -> None:
        if slot != UNCOUNTED_SLOT and self.limits is not None:
            await self.limits.give_slot(self.key, slot)

    async def acquire(self, tokens: int = 0) -> tuple[int, int] | None:
        """Take one request from the deployment's limits, holding its estimated prompt
        `tokens` against its `tpm` until `release`: the minutes they and the request
        went into (each `NOT_HELD` when not counted), or None when it is at either
        limit (nothing is taken then)."""
        if self.limits is None:
            return NOT_HELD, NOT_HELD
        held = NOT_HELD
        if self.tpm is not None:
            if tokens > 0:
                held_in = await self.limits.hold_tokens(self.key, tokens, self.tpm)
                if held_in is None:
                    return None
                held = held_in
            elif await self.limits.tokens(self.key) >= self.tpm:
                return None
        if self.rpm is None:
            return held, NOT_HELD
        if (counted := await self.limits.acquire(self.key, self.rpm)) is not None:
            return held, counted
        await self.release(held, tokens)
        return None

    async def release(self, held: int, tokens: int) -> None:
        """Give back what `acquire` held (the answer's real tokens are counted apart)."""
        if held != NOT_HELD and self.limits is not None:
            await self.limits.release_tokens(self.key, held, tokens)

    async def uncount(self, counted: int) -> None:
        """Give back the request `acquire` counted in minute `counted` (it went no
        further)."""
        if counted != NOT_HELD and self.limits is not None:
            await self.limits.release_request(self.key, counted)

    async def used(self, tokens: int) -> None:
        """Count an answer's tokens against the deployment's `tpm`."""
        if self.tpm is not None and self.limits is not None and tokens > 0:
            await self.limits.add_tokens(self.key, tokens)


def _answers_as(provider: ChatProvider, upstream: str) -> str | None:
    """What `provider` calls `upstream` in its answers, when not `upstream` itself."""
    if isinstance(provider, RenamesModels):
        return provider.answer_model(upstream)
    return None


def deployment_key(provider: str, upstream: str, base_url: str | None) -> str:
    """A deployment's name in shared counts: provider and upstream model, and a short
    hash of the provider's base URL, so that two registries that give one provider name
    to different endpoints (two SDK routers in a process, say) never share a count."""
    where = hashlib.sha256((base_url or "").encode()).hexdigest()[:8]
    return f"{provider}@{where}:{upstream}"


# Told of one call: the deployment, its seconds, and its error (None when it answered).
Observe = Callable[["Deployment", float, BaseException | None], None]


class InFlight:
    """A stream counted in flight on its deployment by the balancer (for
    ``least_in_flight``) from its call until it ends, however it ends: `end` takes it
    off the count once, whoever calls it first (the stream's end, its first read
    failing), so that no path counts it off twice or leaves it counted.

    One collected before its end (a stream dropped unread and unclosed, which no
    cleanup of its own ends) is counted off then, and frees its `breaker`'s half-open
    probe, on `loop` (the balancer and the breaker are its alone): else it would stay
    counted for good, and a probe's breaker half-open with no probe left to send. Once
    its stream's relay has begun (`relayed`), the relay's end tells the breaker, even
    when its finaliser closes it: the count's then frees no probe (a second release,
    in the same collection, would free another call's)."""

    __slots__ = ("_balancer", "_breaker", "_index", "_loop")

    def __init__(
        self,
        balancer: Balancer,
        index: int,
        breaker: CircuitBreaker | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._balancer: Balancer | None = balancer
        self._index = index
        self._breaker = breaker
        self._loop = loop

    def end(self) -> None:
        balancer, self._balancer = self._balancer, None
        if balancer is not None:
            balancer.release(self._index)

    def relayed(self) -> None:
        """Its stream's relay has begun: the breaker is told as it ends (`stream_ended`)."""
        self._breaker = None

    def __del__(self) -> None:
        balancer, self._balancer = self._balancer, None
        if balancer is None:
            return
        loop = self._loop
        if loop is not None and not loop.is_closed() and _running_loop() is not loop:
            with contextlib.suppress(RuntimeError):  # closed meanwhile: nothing runs there
                loop.call_soon_threadsafe(_dropped, balancer, self._index, self._breaker)
                return
        _dropped(balancer, self._index, self._breaker)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _dropped(balancer: Balancer, index: int, breaker: CircuitBreaker | None) -> None:
    """The end of a stream collected before it ended: as a cancelled call's."""
    balancer.release(index)
    if breaker is not None:
        breaker.release()


class Slot(NamedTuple):
    """What a stream holds past its call until its last event: its deployment's
    ``max_in_flight`` slot (`UNCOUNTED_SLOT` when it has none, or it lapsed) with the
    length of its lease, and its place in the balancer's in-flight count."""

    deployment: Deployment
    slot: str
    lease_s: float
    counted: InFlight | None = None


def relayed(slots: list[Slot]) -> None:
    """The relay of the stream holding `slots` has begun (`InFlight.relayed`)."""
    for held in slots:
        if held.counted is not None:
            held.counted.relayed()


def leased(slots: list[Slot] | None) -> bool:
    """Whether `slots` hold a ``max_in_flight`` slot, whose lease a stream renews."""
    return slots is not None and any(s.slot != UNCOUNTED_SLOT for s in slots)


async def give_back(slots: list[Slot]) -> None:
    """Give back what a stream held (`DeploymentPool.call`'s ``slots``): its balancer
    count at once, its slots to the end even when the caller is cancelled meanwhile
    (`settled`). `slots` is emptied first, so a second call gives nothing back."""
    held, slots[:] = list(slots), []
    for each in held:
        if each.counted is not None:
            each.counted.end()
    taken = [each for each in held if each.slot != UNCOUNTED_SLOT]
    if taken:
        # one call's slots, all on its dispatcher's store
        on = taken[0].deployment.limits
        await settled(_give_slots(taken), on, remote=any(s.deployment.remote for s in taken))


async def _give_slots(held: list[Slot]) -> None:
    for each in held:
        await each.deployment.give_slot(each.slot)


async def renew(slots: list[Slot]) -> None:
    """Renew the leases of the slots a stream holds, as it goes on answering: a stream
    may run for longer than any lease. A slot found lapsed (the stream went a whole
    lease without an event read) is no longer held (another call may hold it now); the
    stream stays counted in flight by the balancer until it ends."""
    for held in list(slots):
        if held.slot == UNCOUNTED_SLOT:
            continue
        if not await held.deployment.renew_slot(held.slot, held.lease_s):
            log.warning(
                "the in-flight slot of %s lapsed while its stream was still answering; "
                "it may run one request past its max_in_flight until the stream ends",
                held.deployment.provider_name,
            )
            with contextlib.suppress(ValueError):
                slots[slots.index(held)] = held._replace(slot=UNCOUNTED_SLOT)


# work that outlives its cancelled caller, by the limits' store it waits on: a closing
# dispatcher waits for its own store's, not another's (a reload's new dispatcher's)
_settling: dict[asyncio.Future[Any], RateLimits | None] = {}


def _kept(work: Awaitable[T], on: RateLimits | None) -> asyncio.Future[T]:
    """`work` as a task referenced until it is done (the loop holds tasks weakly)."""
    task = asyncio.ensure_future(work)
    _settling[task] = on
    task.add_done_callback(_settling.pop)
    return task


def settling(loop: asyncio.AbstractEventLoop, on: RateLimits | None) -> set[asyncio.Future[Any]]:
    """The `settled` work on the store `on` still running on `loop`, for the dispatcher
    closing that store to wait for."""
    return {task for task, store in _settling.items() if store is on and task.get_loop() is loop}


async def settled(work: Awaitable[T], on: RateLimits | None, *, remote: bool) -> T:
    """`work` (giving back a slot or a token hold, charging a call, on the store `on`)
    run to its end even when the calling task is cancelled meanwhile, as a client
    hanging up cancels its request: given back over the network, a cut call would leave
    the slot taken until its lease lapses (10 minutes of a deployment's capacity), and a
    cut charge was never counted. The caller still sees its cancellation. Counts in this
    process never wait (`remote` false), so they are awaited as they are."""
    if not remote:
        return await work
    return await asyncio.shield(_kept(work, on))


def _held_to_end(slots: list[Slot] | None, held: Slot, counted: InFlight) -> bool:
    """Whether what the call of a stream holds until the stream ends (its slot, its
    in-flight `counted`) went to `slots`, to be given back then; without `slots`
    nothing is kept and the count ends now."""
    if slots is None:
        counted.end()
        return False
    slots.append(held)
    return True


def _after_read(
    deployment: Deployment, held: int, tokens: int, slot: str | None, _: asyncio.Future[Any]
) -> None:
    """`_after_call` for a stream handed over silent, once the read of its first event
    has ended (in the background: a done callback cannot wait)."""
    _kept(_after_call(deployment, held, tokens, slot), deployment.limits)


async def _after_call(
    deployment: Deployment, held: int, tokens: int, slot: str | None, counted: int = NOT_HELD
) -> None:
    """Give back what admitting a call took: its token hold, (unless a stream keeps it)
    its slot, and the request's rpm count when it is `counted` (it was never sent)."""
    try:
        await deployment.release(held, tokens)
        await deployment.uncount(counted)
    finally:
        if slot is not None:
            await deployment.give_slot(slot)


@dataclass(slots=True)
class TryFailed:
    """What has failed so far in the try of a stream's model (`DeploymentPool.call`'s
    `failed`): the deployments that failed in it, and what the try raises if no other
    answers (`try_failure`: a timeout waiting for the answer once one came). A stream
    handed over silent that fails before its first event goes on as the try would have
    within the hold: those deployments passed over, and a second such timeout ending
    the try, wherever the first came (within the hold or after it)."""

    deployments: list[Deployment] = field(default_factory=list)
    failure: ProviderError | None = None


class DeploymentPool:
    """The deployments of one pool model and the balancer that orders them."""

    def __init__(self, model: str, deployments: list[Deployment], balancer: Balancer) -> None:
        self.model = model
        self.deployments = deployments
        self._balancer = balancer
        # whether a call's estimated prompt is worth computing (a deployment has a tpm)
        self.holds_tokens = any(d.tpm is not None and d.limits is not None for d in deployments)
        # whether a request's conversation is worth naming (sticky, several deployments)
        self.sticky = balancer.strategy == "sticky" and len(deployments) > 1
        self._indices = range(len(deployments))

    async def call(
        self,
        attempt: Callable[[Deployment], Awaitable[T]],
        clock: Callable[[], float] = time.perf_counter,
        observe: Observe | None = None,
        tokens: int = 0,
        slots: list[Slot] | None = None,
        key: str | None = None,
        lease: Callable[[Deployment], float] | None = None,
        stream: bool = False,
        passed: tuple[tuple[Deployment, ...], ProviderError] | None = None,
        failed: TryFailed | None = None,
    ) -> tuple[T, Deployment]:
        """`attempt` on the deployments in balancing order, skipping those whose breaker
        is open, whose request limit is reached or whose `max_in_flight` slots are all
        taken, until one answers. A failure another deployment could fix (no response,
        no connection in time, 5xx, 429, a timeout waiting for the answer) moves on to
        the next deployment at once; the request's own fault is raised, and so is a
        second timeout waiting for the answer in one call (slow on two servers, the
        model is slow: its fallback is next, not a third wait). When none
        answers, the last failure is raised (a timeout waiting for the answer, when one
        came: `try_failure`). Raises
        `LimitReached` when a limit stopped every call that a breaker allowed, else
        `CircuitOpen` when no breaker let a call through.

        `observe`, when given, is told of every call made: the deployment, its seconds
        and its error (None on success), after the breaker has counted it. `tokens`, the
        request's estimated prompt, is held against a deployment's ``tpm`` while the call
        runs (a stream: until its first event). The call holds a slot of the
        deployment's `max_in_flight` while it runs; with `slots` (a stream) the slot of
        the call that answered is put there instead, to be given back (`give_back`)
        when the stream ends. `lease` says how long a deployment's slot is leased for
        the call (`slot_lease` of its time limits; `SLOT_LEASE_S` without it). `key`
        names the request's conversation, for ``sticky`` balancing. With `stream`, a
        call that opened is not yet a success for the breaker: the caller tells it how
        the stream ended (`stream_ended`). `passed`: deployments that have failed this
        way already in this try, and the last failure (streams handed over silent that
        failed before their first event): skipped, the others tried as after them, that
        failure raised if none answers. `failed` (a stream's) gets each deployment that
        fails so here and the try's failure (`try_failure`): a stream handed over silent
        that fails before its first event goes on passing them over, and ends the try
        on a second timeout waiting for the answer."""
        failure: ProviderError | None = None if passed is None else passed[1]
        stopped: set[str] = set()  # why deployments were passed over: "busy", "limited"
        for index in self._balancer.order(self._indices, key):
            deployment = self.deployments[index]
            if passed is not None and any(deployment is d for d in passed[0]):
                continue
            lease_s = SLOT_LEASE_S
            if lease is not None and deployment.max_in_flight is not None:
                lease_s = lease(deployment)
            admitted = await _admitted(deployment, tokens, lease_s)
            if isinstance(admitted, str):
                stopped.add(admitted)
                continue
            slot, held, _ = admitted
            kept = False
            reading: asyncio.Future[Any] | None = None
            try:
                result, counted = await self._one(
                    index, deployment, attempt, clock, observe, stream
                )
                if counted is not None:  # a stream: held until it ends
                    kept = _held_to_end(slots, Slot(deployment, slot, lease_s, counted), counted)
                reading = first_read(result) if stream else None
                return result, deployment
            except ProviderError as exc:
                if not _next_may_answer(exc) or (waited_out(exc) and waited_out(failure)):
                    raise  # a second wait run out in a try: the model, not a server
                failure = try_failure(failure, exc)
                _noted(failed, deployment, failure)
            finally:
                given = None if kept else slot
                if reading is None:
                    cleanup = _after_call(deployment, held, tokens, given)
                    await settled(cleanup, deployment.limits, remote=deployment.remote)
                else:
                    # handed over silent: its prompt stays held against the tpm until its
                    # first event, as a stream that spoke within the hold holds it
                    reading.add_done_callback(
                        functools.partial(_after_read, deployment, held, tokens, given)
                    )
        if failure is not None:
            raise failure
        names = ", ".join(d.provider_name for d in self.deployments)
        limited, busy = "limited" in stopped, "busy" in stopped
        if limited or busy:
            reached = LimitReached(names, _limited_reason(limited, busy))
            reached.limit = "rpm" if limited else "in_flight"
            reached.retry_after_s = self._retry_in_s(limited, busy)
            raise reached
        opened = CircuitOpen(names, "circuit open after recent failures; not called")
        opened.retry_after_s = self._retry_in_s(False, False)
        raise opened

    def _first_came(
        self,
        index: int,
        deployment: Deployment,
        clock: Callable[[], float],
        started: float,
        observe: Observe | None,
        counted: InFlight,
        read: asyncio.Future[Any],
    ) -> None:
        """The end of the call of a stream handed over before its first event, once the
        read of that event has ended, told as `_one` tells any call's end, from the
        call's start: the balancer's sample (a failure as a deployment fails: the
        penalty), the breaker (such a failure counted; a cancelled read, its client
        gone, or the request's own fault frees it) and `observe`. A read that brought
        the event leaves the breaker, and the in-flight count, to the stream's end
        (`stream_ended`); one that failed ends the count now (the stream is over, even
        if nobody has read or closed it yet)."""
        elapsed = clock() - started
        error = asyncio.CancelledError() if read.cancelled() else read.exception()
        if error is not None:
            counted.end()
        if error is None:
            self._balancer.sample(index, latency_s=elapsed)
        elif isinstance(error, ProviderError) and error.retryable:
            self._balancer.sample(index, latency_s=None)
            if deployment.breaker.record_failure() and deployment.link is not None:
                deployment.link.opened()
        else:
            deployment.breaker.release()
        if observe is not None:
            observe(deployment, elapsed, error)

    def _retry_in_s(self, limited: bool, busy: bool) -> float | None:
        """When a call could next go out (a hint for the client's ``Retry-After``): the
        soonest of an open breaker's cooldown, the next minute of a per-minute limit and,
        for a deployment at its ``max_in_flight``, a second (calls end at their own pace)."""
        waits = [d.breaker.retry_in_s() for d in self.deployments if d.breaker.retry_in_s() > 0]
        if limited:
            waits.append(60.0 - time.time() % 60.0)  # limits count per calendar minute
        if busy:
            waits.append(_BUSY_RETRY_S)
        return min(waits) if waits else None

    async def _one(
        self,
        index: int,
        deployment: Deployment,
        attempt: Callable[[Deployment], Awaitable[T]],
        clock: Callable[[], float],
        observe: Observe | None = None,
        stream: bool = False,
    ) -> tuple[T, InFlight | None]:
        """One call, with its outcome told to the balancer and the breaker (a stream's
        success: when it ends, by `stream_ended`). The request's own fault (or a
        cancellation) says nothing about the deployment's health. A stream that opened
        is timed by its first event but stays counted in flight until it ends: the
        `InFlight` returned, for the caller to end."""
        self._balancer.start(index)
        started = clock()
        try:
            result = await attempt(deployment)
        except ProviderError as exc:
            if exc.retryable:
                self._balancer.finish(index, latency_s=None)
                if deployment.breaker.record_failure() and deployment.link is not None:
                    deployment.link.opened()
            else:
                self._balancer.release(index)
                deployment.breaker.release()
            if observe is not None:
                observe(deployment, clock() - started, exc)
            raise
        except BaseException as exc:
            self._balancer.release(index)
            deployment.breaker.release()
            if observe is not None:
                observe(deployment, clock() - started, exc)
            raise
        elapsed = clock() - started
        if not stream:
            self._balancer.finish(index, latency_s=elapsed)
            deployment.breaker.record_success()
            if observe is not None:
                observe(deployment, elapsed, None)
            return result, None
        counted = InFlight(self._balancer, index, deployment.breaker, asyncio.get_running_loop())
        reading = first_read(result)
        if reading is not None:
            # handed over silent (`stream_hold_s`): the call ends when its first event
            # comes (or its read fails), and is timed and told then
            told = functools.partial(
                self._first_came, index, deployment, clock, started, observe, counted
            )
            reading.add_done_callback(told)
            return result, counted
        self._balancer.sample(index, latency_s=elapsed)
        if observe is not None:
            observe(deployment, elapsed, None)
        return result, counted


def _noted(failed: TryFailed | None, deployment: Deployment, failure: ProviderError) -> None:
    if failed is not None:
        failed.deployments.append(deployment)
        failed.failure = failure


def stream_ended(deployment: Deployment, error: BaseException | None) -> None:
    """How a stream `deployment` opened has ended, told to its breaker: whole (a success;
    so is one broken only once its ``[DONE]`` was read, `Dispatcher._relayed`), broken
    the way a deployment fails (no more events, a 5xx or 429 error event: a failure,
    which may open it), or cut for another reason (the client left, the request's own
    fault: nothing, its probe freed). A stream that opens and then always
    breaks, or always gives up before its words, so trips the breaker."""
    breaker = deployment.breaker
    if error is None:
        breaker.record_success()
    elif isinstance(error, ProviderError) and error.retryable:
        if breaker.record_failure() and deployment.link is not None:
            deployment.link.opened()
    else:
        breaker.release()


# What an admitted call took (`_admit`): its slot, the minute its tokens were held in,
# the minute its request was counted in.
_Admitted = tuple[str, int, int]


async def _admitted(
    deployment: Deployment, tokens: int, lease_s: float = SLOT_LEASE_S
) -> _Admitted | str:
    """`_admit`, whose slot, token hold and rpm count are given back if the caller is
    cancelled while Redis answers (the admission finishes on its own, then is undone)."""
    if not deployment.remote:
        return await _admit(deployment, tokens, lease_s)
    task = _kept(_admit(deployment, tokens, lease_s), deployment.limits)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(lambda done: _undo(deployment, tokens, done))
        raise


def _undo(deployment: Deployment, tokens: int, done: asyncio.Future[_Admitted | str]) -> None:
    """Give back what an admission whose caller was cancelled took, its rpm count too:
    its request goes no further (as a cancelled rpm take is, `RedisLimits.take`)."""
    if done.cancelled() or done.exception() is not None:
        return
    admitted = done.result()
    if isinstance(admitted, str):
        return
    slot, held, counted = admitted
    deployment.breaker.release()
    _kept(_after_call(deployment, held, tokens, slot, counted), deployment.limits)


async def _admit(
    deployment: Deployment, tokens: int, lease_s: float = SLOT_LEASE_S
) -> _Admitted | str:
    """Whether a call may go to `deployment` now: what it took (its in-flight slot,
    leased for `lease_s`, its held tokens, its rpm count), or why not (``open``
    breaker, ``busy``: every slot taken, ``limited``: at its rpm or tpm). What was
    taken for a refused call is given back."""
    if deployment.link is not None:
        await deployment.link.sync()
    if not deployment.breaker.allow():
        return "open"
    slot = await deployment.take_slot(lease_s)
    if slot is None:
        deployment.breaker.release()
        return "busy"
    taken = await deployment.acquire(tokens)
    if taken is None:
        deployment.breaker.release()
        await deployment.give_slot(slot)
        return "limited"
    return slot, *taken


def _next_may_answer(exc: ProviderError) -> bool:
    """Whether a model's next deployment may answer what one of them failed: nothing was
    sent (no connection in time), the server failed (no response, a 5xx, a 429), or it
    said nothing within the timeout waiting for the answer: another deployment is
    another server, which may be healthy (the breaker of one that keeps timing out
    opens). Not the request's own fault."""
    return exc.retryable


def waited_out(exc: BaseException | None) -> bool:
    """Whether `exc` is a timeout waiting for the answer (the request was sent), not for
    a connection."""
    return isinstance(exc, ProviderTimeout) and not isinstance(exc, ConnectTimeout)


def try_failure(earlier: ProviderError | None, exc: ProviderError) -> ProviderError:
    """What a try in which `earlier`, then `exc`, failed raises if no deployment answers:
    the last failure, unless an earlier deployment timed out waiting for the answer and
    this one did not. The try then ends with that timeout, which is not retried on the
    model (`Dispatcher._retry`: the fallback is faster than waiting again), where a
    503 after it would have called the deployment that timed out again."""
    if earlier is not None and waited_out(earlier) and not waited_out(exc):
        return earlier
    return exc


def _limited_reason(limited: bool, busy: bool) -> str:
    if limited and busy:
        return "at its request, token or in-flight limits; not called"
    if busy:
        return "at its max_in_flight requests running; not called"
    return "at its requests-per-minute limit or tokens-per-minute limit; not called"


class Deployments:
    """Every pool model's `DeploymentPool`, built once per registry."""

    def __init__(
        self,
        registry: Registry,
        providers: Mapping[str, ChatProvider],
        *,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
        limits: RateLimits | None = None,
        shared: RedisBreakers | None = None,
        earlier: Mapping[str, tuple[CircuitBreaker, object]] | None = None,
    ) -> None:
        """`earlier`: the breakers of the registry this one replaces (a reload), by
        deployment, with the provider settings they counted under: one whose deployment
        (provider, base URL, upstream model), provider settings and breaker settings are
        all unchanged goes on as it was, open or counting failures, rather than closing
        on every edit of the registry (an edit of its provider, the fix of a failing one
        say, starts it afresh)."""
        breakers: dict[tuple[str, str], CircuitBreaker] = {}
        links: dict[tuple[str, str], BreakerLink] = {}
        by_deployment: dict[str, tuple[CircuitBreaker, object]] = {}
        settings = registry.dispatch
        self._pools: dict[str, DeploymentPool] = {}
        for name, model in registry.models.items():
            targets = model.targets()
            deployments = []
            for target in targets:
                upstream = target.model or model.model
                key = (target.provider, upstream)
                counted = deployment_key(
                    target.provider, upstream, registry.providers[target.provider].base_url
                )
                if key not in breakers:
                    spec = registry.providers[target.provider]
                    kept, kept_spec = (earlier or {}).get(counted, (None, None))
                    if kept is not None and kept.settings == settings.breaker and kept_spec == spec:
                        breakers[key] = kept
                    else:
                        breakers[key] = CircuitBreaker(settings.breaker, clock=clock)
                    by_deployment[counted] = (breakers[key], spec)
                    if shared is not None:
                        links[key] = BreakerLink(breakers[key], shared, counted, clock)
                provider = providers[target.provider]
                deployments.append(
                    Deployment(
                        target.provider,
                        provider,
                        upstream,
                        breakers[key],
                        target.rpm,
                        limits,
                        links.get(key),
                        counted,
                        target.tpm,
                        target.max_in_flight,
                        _answers_as(provider, upstream),
                    )
                )
            balancer = Balancer(
                [t.weight for t in targets], model.balance or settings.balance, rng=rng
            )
            self._pools[name] = DeploymentPool(name, deployments, balancer)
        self.breakers = breakers
        self.links = links
        self.by_deployment: Mapping[str, tuple[CircuitBreaker, object]] = by_deployment

    def pool(self, model: str) -> DeploymentPool:
        return self._pools[model]

    def pools(self) -> Mapping[str, DeploymentPool]:
        """Every pool model's `DeploymentPool`, by pool model name (read-only view)."""
        return MappingProxyType(self._pools)
