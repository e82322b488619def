"""``least_in_flight`` balancing counts a stream in flight until it ends, not until it
opens: against real fake upstreams on 127.0.0.1, every way a stream ends (whole,
broken, closed by its reader, never read, silent then failing, falling back within the
stream, a cascade's tiers) takes it off its deployment's count exactly once."""

from __future__ import annotations

import asyncio
import gc
import random
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from fake_upstream import FakeUpstream, fake_upstream
from plans import plan_for

from llmroute.dispatch import Dispatcher, Opened
from llmroute.dispatch.balance import Balancer
from llmroute.dispatch.deployments import InFlight
from llmroute.errors import ProviderError, ProviderTimeout
from llmroute.providers import build_providers
from llmroute.registry import parse_registry
from llmroute.registry.schema import Registry

T = TypeVar("T")

BASE = """
encoder: builtin:static
providers:
  up: {kind: openai, base_url: "%(url)s", timeout_s: 5}
  up2: {kind: openai, base_url: "%(url2)s", timeout_s: 5}
models:
%(models)s
routes:
  - {name: r, examples: [hello], target: a%(cascade)s}
default: {target: a}
dispatch:
  balance: least_in_flight
  stream_hold_s: 0.05
  retries: {attempts: 0}
  breaker: {failures: 3, cooldown_s: 30, window_s: 60, min_requests: 100}
"""


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    with fake_upstream() as one, fake_upstream() as two:
        yield one, two


def _registry(
    upstreams: tuple[FakeUpstream, FakeUpstream], models: str, cascade: str = ""
) -> Registry:
    one, two = upstreams
    cascade = f", cascade: {cascade}" if cascade else ""
    text = BASE % {"url": one.url, "url2": two.url, "models": models, "cascade": cascade}
    return parse_registry(text).registry


def _run(registry: Registry, job: Callable[[Dispatcher], Awaitable[T]]) -> T:
    async def main() -> T:
        dispatcher = Dispatcher(registry, build_providers(registry))
        try:
            return await job(dispatcher)
        finally:
            await dispatcher.aclose()

    return asyncio.run(main())


def _counts(d: Dispatcher, model: str = "a") -> list[int]:
    """The in-flight count of each of `model`'s deployments, as the balancer orders by."""
    pool = d.deployments.pool(model)
    return [pool._balancer.in_flight(i) for i in range(len(pool.deployments))]


def _body(**extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "hi"}], "stream": True, **extra}


def _two(tag: str, query: str = "") -> str:
    return (
        "  a:\n    model: m\n    deployments:\n"
        f"      - {{provider: up, model: 'm-{tag}{query}'}}\n"
        f"      - {{provider: up2, model: 'm-{tag}{query}'}}"
    )


def test_an_open_stream_counts_in_flight_so_the_next_goes_to_the_other_deployment(
    upstreams: tuple[FakeUpstream, FakeUpstream],
) -> None:
    """Streams opened and left running (not yet read) stay counted on their deployment:
    each next one goes to the deployment with fewer, so six spread three and three; it
    was counted off as the stream opened, leaving least_in_flight a random pick."""
    registry = _registry(upstreams, _two(uuid.uuid4().hex[:8]))

    async def job(d: Dispatcher) -> tuple[list[list[int]], list[str], list[int]]:
        seen, opened = [], []
        for _ in range(6):
            opened.append(await d.open_stream(plan_for("a"), _body()))
            seen.append(_counts(d))
        for stream in opened:
            assert [e async for e in stream.events][-1] == b"data: [DONE]\n\n"
        return seen, [o.deployment for o in opened], _counts(d)

    seen, served, after = _run(registry, job)
    assert [sum(counts) for counts in seen] == [1, 2, 3, 4, 5, 6]
    assert all(abs(one - two) <= 1 for one, two in seen)
    assert served.count("up") == served.count("up2") == 3
    assert after == [0, 0]  # each counted off once, when it ended


def test_every_end_of_a_stream_counts_it_off_once(
    upstreams: tuple[FakeUpstream, FakeUpstream],
) -> None:
    """A stream read whole, one its reader closes midway, one closed unread, and one the
    upstream breaks after its first event: each is counted until it ends, then off once
    (another stream held open on the deployment meanwhile keeps its own count of 1)."""
    tag = uuid.uuid4().hex[:8]
    models = (
        f"  a: {{provider: up, model: 'a-{tag}'}}\n"
        f"  broken: {{provider: up, model: 'a-{tag}?mid=1'}}\n"
        f"  slow: {{provider: up, model: 'a-{tag}?gap=0.05'}}"
    )
    registry = _registry(upstreams, models)

    async def job(d: Dispatcher) -> list[tuple[str, list[int], list[int]]]:
        held = await d.open_stream(plan_for("a"), _body())  # open throughout
        seen = []

        async def whole(opened: Opened) -> None:
            _ = [e async for e in opened.events]

        async def closed_midway(opened: Opened) -> None:
            async for _ in opened.events:
                break
            await opened.aclose()

        async def unread(opened: Opened) -> None:
            await opened.aclose()

        async def broken(opened: Opened) -> None:
            with pytest.raises(ProviderError):
                _ = [e async for e in opened.events]

        ends = [("whole", "a", whole), ("closed midway", "slow", closed_midway)]
        ends += [("closed unread", "a", unread), ("broken", "broken", broken)]
        for name, model, end in ends:
            opened = await d.open_stream(plan_for(model), _body())
            during = _counts(d, model)
            await end(opened)
            seen.append((name, during, _counts(d, model)))
        seen.append(("held", _counts(d, "a"), []))
        await held.aclose()
        seen.append(("held closed", _counts(d, "a"), []))
        return seen

    seen = _run(registry, job)
    assert seen == [
        ("whole", [2], [1]),
        ("closed midway", [1], [0]),
        ("closed unread", [2], [1]),
        ("broken", [1], [0]),
        ("held", [1], []),
        ("held closed", [0], []),
    ]


def test_a_silent_stream_counts_until_it_ends_and_one_whose_first_read_fails_at_once(
    upstreams: tuple[FakeUpstream, FakeUpstream],
) -> None:
    """Handed over before its first event (``stream_hold_s``), a stream still counts in
    flight until it ends (it was counted off at the hand-over); one whose first read
    then fails (its first-token limit) is counted off then, even unread, and not again
    when it is closed."""
    tag = uuid.uuid4().hex[:8]
    models = (
        f"  a: {{provider: up, model: 'a-{tag}?ttft=0.3'}}\n"
        f"  late: {{provider: up, model: 'a-{tag}?ttft=30', first_token_timeout_s: 0.3}}"
    )
    registry = _registry(upstreams, models)

    async def job(d: Dispatcher) -> list[list[int]]:
        opened = await d.open_stream(plan_for("a"), _body())
        assert opened.deployment == "up"
        silent = _counts(d)
        events = [e async for e in opened.events]
        assert events[-1] == b"data: [DONE]\n\n"
        whole = _counts(d)
        timing_out = await d.open_stream(plan_for("late"), _body())
        waiting = _counts(d, "late")
        await asyncio.sleep(0.6)  # past its first-token limit, unread
        failed = _counts(d, "late")
        with pytest.raises(ProviderTimeout):
            _ = [e async for e in timing_out.events]
        return [silent, whole, waiting, failed, _counts(d, "late")]

    assert _run(registry, job) == [[1], [0], [1], [0], [0]]


def test_a_stream_that_goes_on_elsewhere_counts_only_where_it_is(
    upstreams: tuple[FakeUpstream, FakeUpstream],
) -> None:
    """A stream handed over silent whose deployment fails before its first event goes on
    from the model's other deployment, and one failing before its first words from the
    next model: the one that failed is counted off as it fails, the one that answers
    counted until the stream ends."""
    tag = uuid.uuid4().hex[:8]
    models = (
        "  a:\n    model: m\n    balance: weighted\n    deployments:\n"
        f"      - {{provider: up, model: 'm-{tag}?delay=0.3&status=503', weight: 1000}}\n"
        f"      - {{provider: up2, model: 'm-{tag}?gap=0.05', weight: 1}}\n"
        f"  e: {{provider: up, model: 'e-{tag}?early=1&inbody=server_error'}}\n"
        f"  b: {{provider: up2, model: 'b-{tag}?gap=0.05'}}"
    )
    registry = _registry(upstreams, models)

    async def job(d: Dispatcher) -> list[Any]:
        seen: list[Any] = []
        opened = await d.open_stream(plan_for("a"), _body())
        seen.append((opened.deployment, _counts(d)))
        events = aiter(opened.events)
        await anext(events)  # from the other deployment, the first one failed
        seen.append((opened.deployment, _counts(d)))
        _ = [e async for e in events]
        seen.append(_counts(d))
        fell = await d.open_stream(plan_for("e", "b"), _body())
        events = aiter(fell.events)
        await anext(events)
        seen.append((fell.model, _counts(d, "e"), _counts(d, "b")))
        await fell.aclose()
        seen.append((_counts(d, "e"), _counts(d, "b")))
        return seen

    assert _run(registry, job) == [
        ("up", [1, 0]),
        ("up2", [0, 1]),
        [0, 0],
        ("b", [0], [1]),
        ([0], [0]),
    ]


def test_a_cascades_tiers_each_count_off_once(
    upstreams: tuple[FakeUpstream, FakeUpstream],
) -> None:
    """A buffered cascade: the first tier's stream, read whole and rejected, is counted
    off as its buffer closes; the last, streamed live, until its reader closes it."""
    tag = uuid.uuid4().hex[:8]
    refusal = "I%27m%20sorry%2C%20but%20I%20can%27t%20help%20with%20that."
    models = (
        f"  a: {{provider: up, model: 'a-{tag}?reply={refusal}'}}\n"
        f"  b: {{provider: up2, model: 'b-{tag}?gap=0.05'}}"
    )
    registry = _registry(upstreams, models, cascade="[a, b]")
    route = registry.route("r")

    async def job(d: Dispatcher) -> list[Any]:
        plan = plan_for("a", policy=route.policy, cascade=route.cascade)
        opened = await d.open_stream(plan, _body())
        events = aiter(opened.events)
        await anext(events)
        during = (opened.model, _counts(d, "a"), _counts(d, "b"))
        await opened.aclose()
        return [during, (_counts(d, "a"), _counts(d, "b"))]

    assert _run(registry, job) == [("b", [0], [1]), ([0], [0])]


def test_a_streams_count_is_taken_off_once_however_often_its_end_is_told() -> None:
    """Its end may be told by the failed first read and again by the stream's close:
    only the first counts it off, so another call's count is not taken with it."""
    balancer = Balancer([1.0], "least_in_flight", rng=random.Random(0))
    balancer.start(0)
    balancer.start(0)
    counted = InFlight(balancer, 0)
    counted.end()
    counted.end()
    assert balancer.in_flight(0) == 1


def test_a_stream_dropped_unread_and_collected_is_counted_off(
    upstreams: tuple[FakeUpstream, FakeUpstream],
) -> None:
    """An `Opened` its caller drops without reading or closing it (code using the
    dispatcher itself; the SDK's streams close theirs) is counted off once the garbage
    collector finds it, as is one handed over silent once its first event came: each
    stayed counted in flight for good, so ``least_in_flight`` sent every later request
    to the other deployment. A half-open breaker's probe it was gets its slot back."""
    tag = uuid.uuid4().hex[:8]
    models = _two(tag) + f"\n  s: {{provider: up, model: 's-{tag}?ttft=0.2'}}"
    registry = _registry(upstreams, models)

    async def job(d: Dispatcher) -> list[Any]:
        seen: list[Any] = []
        # unread, then dropped together (held till then: a collection the opening of
        # the second ran would count the first off early)
        dropped = [await d.open_stream(plan_for("a"), _body()) for _ in range(2)]
        seen.append(sorted(_counts(d)))
        dropped.clear()
        gc.collect()
        seen.append(_counts(d))
        breaker = d.deployments.pool("s").deployments[0].breaker
        breaker.open_elsewhere(0.01)
        await asyncio.sleep(0.02)  # half-open: one probe goes out
        opened: Opened | None = await d.open_stream(plan_for("s"), _body())
        assert opened is not None and opened.deployment == "up"  # handed over silent
        seen.append((_counts(d, "s"), breaker.allow()))
        await asyncio.sleep(0.4)  # its first event came, unread
        opened = None
        gc.collect()
        seen.append((_counts(d, "s"), breaker.allow()))
        return seen

    assert _run(registry, job) == [[1, 1], [0, 0], ([1], False), ([0], True)]


def test_a_stream_dropped_midway_frees_its_half_open_breakers_probe_once(
    upstreams: tuple[FakeUpstream, FakeUpstream],
) -> None:
    """A probe's stream read in part, then dropped: its relay's own finaliser ends it
    (the breaker told as a stream cut short), so the count's finaliser, run in the same
    collection, leaves the breaker alone. It freed the probe too: one more was let
    through (two released, one of them another request's)."""
    tag = uuid.uuid4().hex[:8]
    models = f"  a: {{provider: up, model: a}}\n  s: {{provider: up, model: 's-{tag}?gap=0.1'}}"
    registry = _registry(upstreams, models)

    async def job(d: Dispatcher) -> list[bool]:
        breaker = d.deployments.pool("s").deployments[0].breaker
        breaker.open_elsewhere(0.01)
        await asyncio.sleep(0.02)  # half-open: one probe goes out
        opened: Opened | None = await d.open_stream(plan_for("s"), _body())
        assert opened is not None
        events = opened.events.__aiter__()
        await events.__anext__()  # read in part
        del events
        opened = None
        gc.collect()  # the relay's finaliser closes it on the loop, soon
        allowed = [breaker.allow()]  # another request, before the stream's end is told
        await asyncio.sleep(0.3)
        allowed += [breaker.allow(), breaker.allow()]
        return allowed

    assert sum(_run(registry, job)) == 1
