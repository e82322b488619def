"""A deployment's ``max_in_flight``: its slots counted in memory and in a real Redis
(shared by two counters, leased, let through when Redis is not there), and dispatch
honouring them against a real fake upstream: requests past the cap spill over to the
next deployment or the fallback model, a stream holds its slot until its last event, and
nothing left is a 503."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from fake_upstream import FakeUpstream, fake_upstream
from plans import plan_for
from redis_service import REDIS_URL
from stall_proxy import StallProxy, stall_proxy
from test_limits import REGISTRY, STALLED_TIMEOUT_S, Clock, _two_views

from llmroute.dispatch import Dispatcher
from llmroute.errors import ProviderError
from llmroute.providers import build_providers
from llmroute.registry import parse_registry
from llmroute.state import RedisLimits
from llmroute.state.limits import NOT_HELD, SLOT_LEASE_S, UNCOUNTED_SLOT
from llmroute.telemetry.metrics import GatewayMetrics


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_slots_up_to_the_cap_given_back_and_leased(backend: str, redis_namespace: str) -> None:
    clock = Clock(1_800_000_000.0)

    async def go() -> list[object]:
        async with _two_views(backend, redis_namespace, clock) as (one, two):
            first, second = await one.take_slot("d", 2), await two.take_slot("d", 2)
            seen: list[object] = [first is not None, second is not None]
            seen.append(await one.take_slot("d", 2))  # full
            seen.append(await two.take_slot("other", 2) is not None)  # keys apart
            assert first is not None
            await two.give_slot("d", first)
            third = await one.take_slot("d", 2)
            seen.append(third is not None)
            seen.append(await two.take_slot("d", 2))  # full again
            clock.now += SLOT_LEASE_S + 1  # nobody gave them back: the leases lapse
            seen.append(await two.take_slot("d", 2) is not None)
            return seen

    assert asyncio.run(go()) == [True, True, None, True, True, None, True]


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_lease_is_renewed_while_held_and_never_brought_back(
    backend: str, redis_namespace: str
) -> None:
    """A slot renewed before it lapses stays taken past its first lease; one given back
    (or lapsed and taken over) is not brought back by a late renewal; a longer lease
    outlasts the shortest one."""
    clock = Clock(1_800_000_000.0)

    async def go() -> list[object]:
        async with _two_views(backend, redis_namespace, clock) as (one, two):
            slot = await one.take_slot("d", 1)
            assert slot is not None
            clock.now += SLOT_LEASE_S - 1
            seen: list[object] = [await one.renew_slot("d", slot)]
            clock.now += SLOT_LEASE_S - 1  # past the first lease, inside the renewed one
            seen.append(await two.take_slot("d", 1))
            await two.give_slot("d", slot)
            seen.append(await one.renew_slot("d", slot))  # given back: stays free
            taken = await two.take_slot("d", 1)
            seen.append(taken is not None)
            clock.now += SLOT_LEASE_S + 1  # lapsed, then taken over by another caller
            other = await two.take_slot("d", 1)
            seen.append(other is not None and await one.renew_slot("d", taken or ""))
            long = await one.take_slot("long", 1, lease_s=3 * SLOT_LEASE_S)
            clock.now += 2 * SLOT_LEASE_S
            seen.append(long is not None and await two.take_slot("long", 1) is None)
            return seen

    assert asyncio.run(go()) == [True, None, False, True, False, True]


def test_a_short_lease_taken_later_keeps_a_long_lease_in_redis(redis_namespace: str) -> None:
    """The slots' set in Redis expires after its longest lease, not its latest."""
    from redis.asyncio import Redis

    async def go() -> int:
        limits = RedisLimits(REDIS_URL, 2.0, redis_namespace)
        client = Redis.from_url(REDIS_URL)
        try:
            await limits.take_slot("d", 3, lease_s=4 * SLOT_LEASE_S)
            await limits.take_slot("d", 3)
            await limits.renew_slot("d", "not-a-slot")
            return int(await client.ttl(f"{redis_namespace}:inflight:d"))
        finally:
            await limits.aclose()
            await client.aclose()

    assert asyncio.run(go()) > 3 * SLOT_LEASE_S


def test_a_redis_that_is_not_there_lets_every_request_through(closed_port: int) -> None:
    async def go() -> list[str | None]:
        limits = RedisLimits(f"redis://127.0.0.1:{closed_port}/0", 0.5, "ns")
        try:
            slots = [await limits.take_slot("d", 1) for _ in range(3)]
            await limits.give_slot("d", UNCOUNTED_SLOT)
            assert await limits.renew_slot("d", "a-slot")  # nothing counted, nothing lapses
            return slots
        finally:
            await limits.aclose()

    assert asyncio.run(go()) == [UNCOUNTED_SLOT] * 3


def test_give_backs_redis_did_not_take_are_made_before_the_next_count(
    redis_namespace: str,
) -> None:
    """Redis not answering for longer than the timeout: the slots and the token hold
    given back meanwhile were dropped, so a model with ``max_in_flight: 2`` stayed full
    for the slots' whole lease (10 min) and the key's tpm counted the hold. They are kept
    and made before the next count once Redis answers again. Its replies are held by a
    proxy of this test's own, not by making the shared Redis busy (which timed out the
    calls of tests beside it)."""
    raw = redis.Redis.from_url(REDIS_URL)
    slots_key = f"{redis_namespace}:inflight:d"

    async def go(proxy: StallProxy, url: str) -> list[object]:
        limits = RedisLimits(url, STALLED_TIMEOUT_S, redis_namespace)
        try:
            one, two = await limits.take_slot("d", 2), await limits.take_slot("d", 2)
            minute = await limits.hold_tokens("k", 40, 50)
            assert one and two and isinstance(minute, int) and minute >= 0
            proxy.stall_replies()
            try:
                await limits.give_slot("d", one)  # made, but its reply never came: down
                await limits.give_slot("d", two)  # not even tried: kept
                await limits.release_tokens("k", minute, 40)
            finally:
                proxy.resume()
            # the timed-out one was made; the other is still taken
            seen: list[object] = [raw.zcard(slots_key), limits.answering]
            await asyncio.sleep(1.1)  # the outage's pause is over
            again = await limits.take_slot("d", 2)
            seen += [again not in (None, UNCOUNTED_SLOT), raw.zcard(slots_key)]
            seen.append(await limits.hold_tokens("k", 40, 50) not in (None, NOT_HELD))
            return seen
        finally:
            await limits.aclose()

    try:
        with stall_proxy(REDIS_URL) as (proxy, url):
            assert asyncio.run(go(proxy, url)) == [1, False, True, 1, True]
    finally:
        raw.close()


def test_a_give_back_is_not_lost_with_a_caller_cancelled_while_making_it(
    redis_namespace: str,
) -> None:
    """The give-back was taken off the queue, then its caller (whose client hung up) was
    cancelled in the middle of it: gone, the slot stayed taken for its lease."""

    async def go(proxy: StallProxy, url: str) -> int:
        limits = RedisLimits(url, 2.0, redis_namespace)
        try:
            slot = await limits.take_slot("d", 1)
            assert slot is not None and slot != UNCOUNTED_SLOT
            limits._slots_back.append(("d", slot))  # as a give-back Redis did not take
            proxy.stall_replies()  # this test's own: the shared Redis stays free
            try:
                caller = asyncio.create_task(limits.take_slot("d", 1))
                await asyncio.sleep(0.1)  # inside the queued ZREM, which waits on Redis
                caller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await caller
            finally:
                proxy.resume()
            return len(limits._slots_back)
        finally:
            await limits.aclose()

    with stall_proxy(REDIS_URL) as (proxy, url):
        assert asyncio.run(go(proxy, url)) == 1  # still queued, made later


def test_a_token_give_back_cut_by_its_callers_cancel_is_not_made_twice(
    redis_namespace: str,
) -> None:
    """A queued token release that reached Redis as its caller was cancelled went back
    on the queue and was made again: another request's tokens were given back too, and
    the key passed its tpm (the count went negative)."""
    raw = redis.Redis.from_url(REDIS_URL)

    async def go(proxy: StallProxy, url: str) -> tuple[int, float]:
        limits = RedisLimits(url, 2.0, redis_namespace)
        try:
            minute = await limits.hold_tokens("k", 1000, 10_000)  # request A
            assert isinstance(minute, int) and minute >= 0
            assert await limits.hold_tokens("k", 500, 10_000) is not None  # request B
            limits._tokens_back.append(("k", minute, 1000))  # A's release, not taken
            proxy.stall_replies()  # this test's own: the shared Redis stays free
            try:
                caller = asyncio.create_task(limits.hold_tokens("k", 1, 10_000))
                await asyncio.sleep(0.1)  # inside the queued release, sent, waiting
                caller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await caller
            finally:
                proxy.resume()
            queued = len(limits._tokens_back)
            return queued, await limits.tokens("k")
        finally:
            await limits.aclose()

    try:
        with stall_proxy(REDIS_URL) as (proxy, url):
            queued, used = asyncio.run(go(proxy, url))
    finally:
        raw.close()
    assert queued == 0  # not queued again: Redis made it once
    assert 0 < used <= 500  # B's hold alone (less only if the minute turned meanwhile)


# -- dispatch ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as server:
        yield server


def _dispatcher(upstream: FakeUpstream, models: str, first: str, limits: str = "") -> Dispatcher:
    text = REGISTRY % {"url": upstream.url, "models": models, "first": first, "limits": limits}
    registry = parse_registry(text).registry
    return Dispatcher(registry, build_providers(registry), rng=random.Random(1))


def _body() -> dict[str, object]:
    return {"messages": [{"role": "user", "content": "hello"}]}


def test_requests_past_the_cap_spill_over_to_the_fallback(upstream: FakeUpstream) -> None:
    """Four at once on a local model that takes two: two there, two on the hosted one;
    once they are done, the local model takes requests again."""
    tag = uuid.uuid4().hex[:8]
    models = f"""
  local: {{provider: up, model: 'local-{tag}?delay=0.3', max_in_flight: 2}}
  hosted: {{provider: up, model: hosted-{tag}}}
"""

    async def go() -> tuple[list[str], str]:
        dispatcher = _dispatcher(upstream, models, "local")
        try:
            plan = plan_for("local", "hosted")
            served = await asyncio.gather(*(dispatcher.complete(plan, _body()) for _ in range(4)))
            after = await dispatcher.complete(plan, _body())
            return sorted(s.model for s in served), after.model
        finally:
            await dispatcher.aclose()

    assert asyncio.run(go()) == (["hosted", "hosted", "local", "local"], "local")
    assert len(upstream.calls_to(f"local-{tag}?delay=0.3")) == 3


def test_a_stream_holds_its_slot_until_its_last_event(upstream: FakeUpstream) -> None:
    tag = uuid.uuid4().hex[:8]
    models = f"""
  local: {{provider: up, model: local-{tag}, max_in_flight: 1}}
  hosted: {{provider: up, model: hosted-{tag}}}
"""

    async def go() -> list[str]:
        dispatcher = _dispatcher(upstream, models, "local")
        plan = plan_for("local", "hosted")
        body = {**_body(), "stream": True}
        try:
            opened = await dispatcher.open_stream(plan, body)  # its first event has come
            seen = [opened.model, (await dispatcher.complete(plan, _body())).model]
            events = [e async for e in opened.events]  # read to the end
            assert events[-1] == b"data: [DONE]\n\n"
            seen.append((await dispatcher.complete(plan, _body())).model)
            cut = await dispatcher.open_stream(plan, body)
            seen.append((await dispatcher.complete(plan, _body())).model)
            await anext(aiter(cut.events))
            await cut.events.aclose()  # a client that left: the slot comes back too
            seen.append((await dispatcher.complete(plan, _body())).model)
            return seen
        finally:
            await dispatcher.aclose()

    assert asyncio.run(go()) == ["local", "hosted", "local", "hosted", "local"]


def test_busy_deployments_then_nothing_left_is_a_503(upstream: FakeUpstream) -> None:
    """A model's deployments each take one; a third request at once finds both busy and
    no fallback: 503 saying so, counted as limited by ``in_flight``."""
    tag = uuid.uuid4().hex[:8]
    models = f"""
  m:
    model: 'm-{tag}?delay=0.3'
    deployments: [{{provider: up, max_in_flight: 1}}, {{provider: up2, max_in_flight: 1}}]
"""
    metrics = GatewayMetrics()

    async def go() -> list[str]:
        dispatcher = _dispatcher(upstream, models, "m")
        dispatcher.observer = metrics
        try:
            results = await asyncio.gather(
                *(dispatcher.complete(plan_for("m"), _body()) for _ in range(3)),
                return_exceptions=True,
            )
        finally:
            await dispatcher.aclose()
        out = []
        for r in results:
            if isinstance(r, ProviderError):
                assert r.status == 503 and "max_in_flight requests running; not called" in str(r)
                assert r.retry_after_s == 1.0  # a hint: calls end at their own pace
                out.append("busy")
            else:
                out.append(f"{r.model}@{r.deployment}")  # type: ignore[union-attr]
        return sorted(out)

    assert asyncio.run(go()) == ["busy", "m@up", "m@up2"]
    limited = metrics.registry.get_sample_value(
        "llmroute_limited_total", {"model": "m", "limit": "in_flight"}
    )
    assert limited == 1.0


def test_slots_counted_in_redis_are_shared_by_dispatchers(
    upstream: FakeUpstream, redis_namespace: str
) -> None:
    """Another gateway's stream holds the one slot: this one falls back."""
    tag = uuid.uuid4().hex[:8]
    models = f"""
  a: {{provider: up, model: a-{tag}, max_in_flight: 1}}
  b: {{provider: up, model: b-{tag}}}
"""
    limits = f"  limits: {{url: '{REDIS_URL}', namespace: {redis_namespace}, timeout_s: 2}}"

    async def go() -> list[str]:
        one = _dispatcher(upstream, models, "a", limits)
        two = _dispatcher(upstream, models, "a", limits)
        plan = plan_for("a", "b")
        try:
            opened = await one.open_stream(plan, {**_body(), "stream": True})
            seen = [(await two.complete(plan, _body())).model]
            async for _ in opened.events:
                pass
            seen.append((await two.complete(plan, _body())).model)
            return seen
        finally:
            await one.aclose()
            await two.aclose()

    assert asyncio.run(go()) == ["b", "a"]


def test_cancelled_callers_give_every_redis_slot_back(
    upstream: FakeUpstream, redis_namespace: str
) -> None:
    """Callers that give up at any moment (a client hanging up cancels its request
    task) while slots are taken and given back over the network: afterwards every slot
    is free, not held until its 10-minute lease lapses."""
    tag = uuid.uuid4().hex[:8]
    models = f"""
  a: {{provider: up, model: 'a-{tag}?delay=0.05', max_in_flight: 3}}
  b: {{provider: up, model: b-{tag}}}
"""
    limits = f"  limits: {{url: '{REDIS_URL}', namespace: {redis_namespace}, timeout_s: 2}}"
    rng = random.Random(3)

    async def go() -> list[str]:
        dispatcher = _dispatcher(upstream, models, "a", limits)
        plan = plan_for("a", "b")

        async def one(i: int) -> None:
            if i % 2:
                await dispatcher.complete(plan, _body())
                return
            opened = await dispatcher.open_stream(plan, {**_body(), "stream": True})
            try:  # as the gateway's relay and the SDK's streams read one
                async for _ in opened.events:
                    await asyncio.sleep(0)
            finally:
                await opened.aclose()

        try:
            for _ in range(8):
                tasks = [asyncio.create_task(one(i)) for i in range(12)]
                await asyncio.sleep(rng.uniform(0.0, 0.08))
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0.3)  # what was still giving slots back finishes
            served = await asyncio.gather(*(dispatcher.complete(plan, _body()) for _ in range(3)))
            return [s.model for s in served]
        finally:
            await dispatcher.aclose()

    assert asyncio.run(go()) == ["a", "a", "a"]


def _leases(namespace: str, key_part: str) -> list[float]:
    """The lapse times of the slots held in Redis on the deployment named by `key_part`."""
    from redis import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        keys = [k for k in client.scan_iter(f"{namespace}:inflight:*") if key_part in k.decode()]
        return [score for key in keys for _, score in client.zrange(key, 0, -1, withscores=True)]
    finally:
        client.close()


def test_a_slow_models_slot_is_leased_past_its_time_limit(
    upstream: FakeUpstream, redis_namespace: str
) -> None:
    """A model allowed 30 minutes per call holds its slot for that long (and a minute),
    not the 10-minute lease that would let a second call in beside a slow one."""
    tag = uuid.uuid4().hex[:8]
    models = f"""
  slow: {{provider: up, model: slow-{tag}, max_in_flight: 1, timeout_s: 1800}}
  quick: {{provider: up, model: quick-{tag}, max_in_flight: 1}}
"""
    limits = f"  limits: {{url: '{REDIS_URL}', namespace: {redis_namespace}, timeout_s: 2}}"

    async def go() -> list[float]:
        dispatcher = _dispatcher(upstream, models, "slow", limits)
        body = {**_body(), "stream": True}
        try:
            slow = await dispatcher.open_stream(plan_for("slow"), body)
            quick = await dispatcher.open_stream(plan_for("quick"), body)
            now = time.time()
            held = [_leases(redis_namespace, f"slow-{tag}")[0] - now]
            held.append(_leases(redis_namespace, f"quick-{tag}")[0] - now)
            for opened in (slow, quick):
                async for _ in opened.events:
                    pass
            return held
        finally:
            await dispatcher.aclose()

    slow_s, quick_s = asyncio.run(go())
    assert 1800 + 50 < slow_s <= 1800 + 60 and SLOT_LEASE_S - 10 < quick_s <= SLOT_LEASE_S
    assert _leases(redis_namespace, tag) == []  # both given back at their last event


def test_a_long_stream_renews_its_slot_and_says_when_it_lapsed(
    upstream: FakeUpstream,
    redis_namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stream still answering renews its slot's lease (here at every event instead of
    every few minutes); a slot that lapsed meanwhile and went to another caller is
    named in a warning and is not given back on that caller's behalf. The stream stays
    counted in flight by the balancer until it ends all the same, then is counted off
    (once: it was left counted when its lapsed slot was dropped)."""
    from redis import Redis

    from llmroute.dispatch import dispatcher as dispatcher_module

    monkeypatch.setattr(dispatcher_module, "SLOT_RENEW_S", 0.0)
    tag = uuid.uuid4().hex[:8]
    models = f"  m: {{provider: up, model: 'm-{tag}?gap=0.05', max_in_flight: 1}}"
    limits = f"  limits: {{url: '{REDIS_URL}', namespace: {redis_namespace}, timeout_s: 2}}"
    words = {"messages": [{"role": "user", "content": "one two three four five six"}]}

    async def go() -> tuple[list[float], list[float], list[int]]:
        dispatcher = _dispatcher(upstream, models, "m", limits)
        balancer = dispatcher.deployments.pool("m")._balancer
        try:
            opened = await dispatcher.open_stream(plan_for("m"), {**words, "stream": True})
            events = aiter(opened.events)
            await anext(events)
            leases = [_leases(redis_namespace, tag)[0]]
            for _ in range(3):
                await anext(events)
            leases.append(_leases(redis_namespace, tag)[0])
            client = Redis.from_url(REDIS_URL)
            try:  # as if it lapsed and another caller took the deployment's slot
                (key,) = [k for k in client.scan_iter(f"{redis_namespace}:inflight:*")]
                client.delete(key)
                client.zadd(key, {"another-caller": time.time() + SLOT_LEASE_S})
            finally:
                client.close()
            await anext(events)  # its renewal finds the slot lapsed
            counted = [balancer.in_flight(0)]
            async for _ in events:
                pass
            counted.append(balancer.in_flight(0))
            return leases, _leases(redis_namespace, tag), counted
        finally:
            await dispatcher.aclose()

    with caplog.at_level(logging.WARNING, logger="llmroute.dispatch"):
        (first, later), left, counted = asyncio.run(go())
    assert counted == [1, 0]  # in flight past its slot's lapse, until its end
    assert later > first  # renewed as the events came
    assert len(left) == 1  # the other caller's slot: not given back by this stream
    lapsed = [r.getMessage() for r in caplog.records if "lapsed" in r.getMessage()]
    assert len(lapsed) == 1 and "the in-flight slot of up lapsed" in lapsed[0]


@pytest.mark.parametrize("read", [0, 1])
def test_a_stream_closed_unread_or_left_midway_gives_its_slot_back_at_once(
    upstream: FakeUpstream, redis_namespace: str, read: int
) -> None:
    """`Opened.aclose` ends a stream wherever its reader left it, before any event was
    read (a client gone as the headers went out: closing a generator never started runs
    none of its cleanup) or after some: its Redis slot is free for the next call at
    once, its upstream connection closed and its usage charged, while the abandoned
    stream is still referenced (nothing left to the garbage collector)."""
    tag = uuid.uuid4().hex[:8]
    models = f"""
  a: {{provider: up, model: 'a-{tag}', max_in_flight: 1}}
  b: {{provider: up, model: b-{tag}}}
"""
    limits = f"  limits: {{url: '{REDIS_URL}', namespace: {redis_namespace}, timeout_s: 2}}"

    async def go() -> tuple[list[str], object]:
        dispatcher = _dispatcher(upstream, models, "a", limits)
        plan = plan_for("a", "b")
        try:
            opened = await dispatcher.open_stream(plan, {**_body(), "stream": True})
            events = opened.events
            for _ in range(read):
                await anext(events)
            held = (await dispatcher.complete(plan, _body())).model
            await opened.aclose()
            await opened.aclose()  # twice: nothing more
            freed = (await dispatcher.complete(plan, _body())).model
            return [held, freed], (events, opened.usage)
        finally:
            await dispatcher.aclose()

    models_seen, (_, usage) = asyncio.run(go())
    assert models_seen == ["b", "a"]
    assert usage is not None and usage.prompt_tokens > 0  # charged, if only estimated


def test_a_cancelled_admissions_rpm_count_is_given_back(
    upstream: FakeUpstream, redis_namespace: str
) -> None:
    """A deployment with a ``max_in_flight`` (or ``tpm``) counted in Redis is admitted
    whole, shielded from its caller: a request cancelled meanwhile (its client hung up)
    had its slot and tpm hold given back once the admission ended, but its rpm count
    stayed, a request never sent upstream held against the deployment's rpm for up to
    two minutes. It is given back too, as a cancelled rpm take is."""
    tag = uuid.uuid4().hex[:8]
    models = f"  a: {{provider: up, model: a-{tag}, rpm: 50, max_in_flight: 2}}\n"
    raw = redis.Redis.from_url(REDIS_URL)

    def counted() -> list[int]:
        """The deployment's rpm count (all minutes) and its slots taken."""
        rpm = [int(raw.get(k) or 0) for k in raw.scan_iter(f"{redis_namespace}:rpm:*")]
        slots = [raw.zcard(k) for k in raw.scan_iter(f"{redis_namespace}:inflight:*")]
        return [sum(rpm), sum(slots)]

    async def go(url: str, proxy: StallProxy) -> list[int]:
        limits = f"  limits: {{url: '{url}', namespace: {redis_namespace}, timeout_s: 2}}"
        dispatcher = _dispatcher(upstream, models, "a", limits)
        try:
            await dispatcher.complete(plan_for("a"), _body())  # its scripts loaded
            assert counted() == [1, 0]
            proxy.stall_replies(on=b":rpm:")  # the rpm take is made; its answer held
            asking = asyncio.ensure_future(dispatcher.complete(plan_for("a"), _body()))
            for _ in range(200):  # until Redis counted it (bounded: 2 s)
                if counted()[0] == 2:
                    break
                await asyncio.sleep(0.01)
            asking.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asking
            proxy.resume()
            for _ in range(200):  # the admission ends, then is undone (bounded: 2 s)
                if counted() == [1, 0]:
                    break
                await asyncio.sleep(0.01)
            return counted()
        finally:
            await dispatcher.aclose()

    try:
        with stall_proxy(REDIS_URL) as (proxy, url):
            assert asyncio.run(go(url, proxy)) == [1, 0]
    finally:
        raw.close()
