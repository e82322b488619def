"""A deployment's ``max_in_flight``: its slots counted in memory and in a real Redis
(shared by two counters, leased, let through when Redis is not there), and dispatch
honouring them against a real fake upstream: requests past the cap spill over to the
next deployment or the fallback model, a stream holds its slot until its last event, and
nothing left is a 503."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator

import pytest
from fake_upstream import FakeUpstream, fake_upstream
from plans import plan_for
from redis_service import REDIS_URL
from test_limits import REGISTRY, Clock, _two_views

from llmroute.dispatch import Dispatcher
from llmroute.errors import ProviderError
from llmroute.providers import build_providers
from llmroute.registry import parse_registry
from llmroute.state import RedisLimits
from llmroute.state.limits import SLOT_LEASE_S, UNCOUNTED_SLOT
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


def test_a_redis_that_is_not_there_lets_every_request_through(closed_port: int) -> None:
    async def go() -> list[str | None]:
        limits = RedisLimits(f"redis://127.0.0.1:{closed_port}/0", 0.5, "ns")
        try:
            slots = [await limits.take_slot("d", 1) for _ in range(3)]
            await limits.give_slot("d", UNCOUNTED_SLOT)
            return slots
        finally:
            await limits.aclose()

    assert asyncio.run(go()) == [UNCOUNTED_SLOT] * 3


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
            async for _ in opened.events:
                await asyncio.sleep(0)

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
