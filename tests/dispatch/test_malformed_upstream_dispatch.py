"""A malformed upstream answer (a 200 without choices, a stream event that is not JSON)
is a failure dispatch retries, falls back from and counts against the breaker, and
never charges or passes on. Against a real fake upstream on 127.0.0.1; sleeps and the
breaker clock are injected."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from fake_upstream import FakeUpstream, fake_upstream
from plans import plan_for

from llmroute.dispatch import Dispatcher
from llmroute.dispatch.spend import Spend, tracked
from llmroute.errors import AllFallbacksFailed, ProviderError
from llmroute.providers import build_providers
from llmroute.registry import parse_registry
from llmroute.registry.schema import Registry, RoutePolicy

T = TypeVar("T")

REGISTRY = """
encoder: builtin:static
providers:
  up: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  a: {provider: up, model: "%(a)s", price: {input: 1, output: 2}}
  b: {provider: up, model: b, price: {input: 1, output: 2}}
routes:
  - {name: r, examples: [hello], target: a}
default: {target: a}
dispatch:
  retries: {attempts: 1, backoff_s: 0.01, max_backoff_s: 0.02}
  breaker: {failures: 3, cooldown_s: 30, window_s: 60, min_requests: 100}
"""
BODY = {"messages": [{"role": "user", "content": "hi"}]}
STREAM = {**BODY, "stream": True}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as served:
        yield served


@pytest.fixture
def fresh(upstream: FakeUpstream) -> FakeUpstream:
    upstream.requests.clear()
    upstream.counts.clear()
    return upstream


def _registry(upstream: FakeUpstream, a: str) -> Registry:
    return parse_registry(REGISTRY % {"url": upstream.url, "a": a}).registry


def _run(registry: Registry, job: Callable[[Dispatcher], Awaitable[T]]) -> T:
    async def main() -> T:
        async def sleep(_: float) -> None:
            pass

        dispatcher = Dispatcher(
            registry,
            build_providers(registry),
            rng=random.Random(7),
            clock=lambda: 1000.0,
            sleep=sleep,
        )
        try:
            return await job(dispatcher)
        finally:
            await dispatcher.aclose()

    return asyncio.run(main())


@pytest.mark.parametrize("shape", ["none", "empty", "bare"])
def test_an_answer_without_choices_is_retried_then_the_fallback_answers_it(
    fresh: FakeUpstream, shape: str
) -> None:
    a = f"a?shape={shape}"

    async def job(d: Dispatcher) -> tuple[Any, Spend]:
        with tracked(Spend()) as spend:
            return await d.complete(plan_for("a", "b"), BODY), spend

    served, spend = _run(_registry(fresh, a), job)
    assert served.model == "b" and served.data["choices"][0]["message"]["content"] == "echo: hi"
    assert fresh.models_called() == [a, a, "b"]  # retried once, then fallen back from
    assert len(served.attempts) == 1 and "without choices" in served.attempts[0]
    assert len(spend.answered) == 1  # b's answer alone is charged


def test_an_answer_without_choices_and_no_fallback_is_a_502_never_charged(
    fresh: FakeUpstream,
) -> None:
    async def job(d: Dispatcher) -> tuple[AllFallbacksFailed, Spend]:
        with tracked(Spend()) as spend, pytest.raises(AllFallbacksFailed) as caught:
            await d.complete(plan_for("a"), BODY)
        return caught.value, spend

    failed, spend = _run(_registry(fresh, "a?shape=none"), job)
    assert failed.status == 502 and "without choices" in str(failed)
    assert spend.answered == []


def test_answers_without_choices_open_the_breaker(fresh: FakeUpstream) -> None:
    plan = plan_for("a", "b", policy=RoutePolicy(retries=0))

    async def job(d: Dispatcher) -> list[str]:
        return [(await d.complete(plan, BODY)).model for _ in range(5)]

    assert _run(_registry(fresh, "a?shape=bare"), job) == ["b"] * 5
    assert len(fresh.calls_to("a?shape=bare")) == 3  # then its breaker opened


def test_a_stream_opening_with_an_event_that_is_not_json_falls_back(
    fresh: FakeUpstream,
) -> None:
    async def job(d: Dispatcher) -> tuple[str, tuple[str, ...], list[bytes]]:
        opened = await d.open_stream(plan_for("a", "b"), STREAM)
        return opened.model, opened.attempts, [e async for e in opened.events]

    model, attempts, events = _run(_registry(fresh, "a?garbage=first"), job)
    assert model == "b" and events[-1] == b"data: [DONE]\n\n"
    assert not any(b"not json" in e for e in events)
    assert "not JSON" in attempts[0]
    assert fresh.models_called() == ["a?garbage=first", "a?garbage=first", "b"]


def test_a_stream_opening_with_an_event_that_is_not_json_alone_is_a_502(
    fresh: FakeUpstream,
) -> None:
    async def job(d: Dispatcher) -> AllFallbacksFailed:
        with pytest.raises(AllFallbacksFailed) as caught:
            await d.open_stream(plan_for("a"), STREAM)
        return caught.value

    failed = _run(_registry(fresh, "a?garbage=first"), job)
    assert failed.status == 502 and "not JSON" in str(failed)


def test_an_event_that_is_not_json_after_the_first_words_ends_the_stream_without_it(
    fresh: FakeUpstream,
) -> None:
    async def job(d: Dispatcher) -> tuple[list[bytes], ProviderError]:
        opened = await d.open_stream(plan_for("a", "b"), STREAM)
        got: list[bytes] = []
        with pytest.raises(ProviderError) as caught:
            async for event in opened.events:
                got.append(event)
        return got, caught.value

    got, failed = _run(_registry(fresh, "a?garbage=late"), job)
    assert len(got) == 2 and b"partial" in got[1] and "not JSON" in str(failed)
    assert not any(b"not json" in e for e in got)
    assert fresh.models_called() == ["a?garbage=late"]  # words went out: nothing retried
