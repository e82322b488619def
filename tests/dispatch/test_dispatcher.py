"""The dispatcher against real fake upstreams on 127.0.0.1: retries, backoff and
Retry-After, fallback, circuit breakers, deployments, timeouts, context windows, usage.

Sleeps and the breaker clock are injected, so nothing here waits for real backoff."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import random
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any, TypeVar

import pytest
from fake_upstream import FakeUpstream, fake_upstream
from plans import plan_for

from llmroute.decision import SafetyOutcome
from llmroute.dispatch import Dispatcher
from llmroute.dispatch import dispatcher as dispatcher_module
from llmroute.dispatch.deployments import settled
from llmroute.dispatch.dispatcher import DispatchObserver, Opened
from llmroute.errors import (
    AllFallbacksFailed,
    BeyondModel,
    ContentRefused,
    ContextWindowExceeded,
    ProviderError,
    ProviderTimeout,
    UnsupportedRequest,
    UpstreamRejected,
)
from llmroute.providers import build_providers
from llmroute.registry import parse_registry
from llmroute.registry.schema import Registry, RoutePolicy
from llmroute.server.errors import gateway_error
from llmroute.telemetry.metrics import GatewayMetrics

T = TypeVar("T")

BASE = """
encoder: builtin:static
providers:
  up: {kind: openai, base_url: "%(url)s", timeout_s: 5}
  up2: {kind: openai, base_url: "%(url2)s", timeout_s: 5}
  an: {kind: anthropic, base_url: "http://127.0.0.1:9", timeout_s: 5}  # nothing listens
models:
%(models)s
routes:
  - {name: r, examples: [hello], target: %(first)s}
default: {target: %(first)s}
dispatch:
  retries: {attempts: 2, backoff_s: 0.5, max_backoff_s: 4, max_retry_after_s: 10}
  breaker: {failures: 3, cooldown_s: 30, window_s: 60, min_requests: 100}
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, upstream: FakeUpstream, upstream2: FakeUpstream) -> None:
        self.upstream = upstream
        self.upstream2 = upstream2
        self.clock = Clock()
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def registry(self, models: str, first: str) -> Registry:
        text = BASE % {
            "url": self.upstream.url,
            "url2": self.upstream2.url,
            "models": models,
            "first": first,
        }
        return parse_registry(text).registry

    def run(
        self,
        registry: Registry,
        job: Callable[[Dispatcher], Awaitable[T]],
        observer: DispatchObserver | None = None,
    ) -> T:
        async def main() -> T:
            dispatcher = Dispatcher(
                registry,
                build_providers(registry),
                rng=random.Random(7),
                clock=self.clock,
                sleep=self.sleep,
                observer=observer,
            )
            try:
                return await job(dispatcher)
            finally:
                await dispatcher.aclose()

        return asyncio.run(main())


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    with fake_upstream() as one, fake_upstream() as two:
        yield one, two


@pytest.fixture
def h(upstreams: tuple[FakeUpstream, FakeUpstream]) -> Harness:
    one, two = upstreams
    one.requests.clear()
    two.requests.clear()
    one.counts.clear()
    two.counts.clear()
    return Harness(one, two)


def _body(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


def _streamed(h: Harness, registry: Registry) -> tuple[str, list[bytes]]:
    """A stream on the chain a → b, read to its end: the model that answered, and its
    events."""

    async def job(d: Dispatcher) -> tuple[str, list[bytes]]:
        opened = await d.open_stream(plan_for("a", "b"), _body(stream=True))
        return opened.model, [e async for e in opened.events]

    return h.run(registry, job)


def test_a_5xx_is_retried_with_growing_jittered_backoff_then_succeeds(h: Harness) -> None:
    registry = h.registry("  a: {provider: up, model: 'a?status=500&times=2'}", "a")
    served = h.run(registry, lambda d: d.complete(plan_for("a"), _body()))
    assert served.model == "a" and served.data["choices"][0]["message"]["content"] == "echo: hi"
    assert len(h.upstream.calls_to("a?status=500&times=2")) == 3
    assert len(h.sleeps) == 2
    assert 0 <= h.sleeps[0] <= 0.5 and 0 <= h.sleeps[1] <= 1.0


def test_429_honours_retry_after(h: Harness) -> None:
    registry = h.registry("  a: {provider: up, model: 'a?status=429&times=1&retry_after=3'}", "a")
    h.run(registry, lambda d: d.complete(plan_for("a"), _body()))
    assert len(h.sleeps) == 1 and 3.0 <= h.sleeps[0] <= 3.3


def test_a_retry_after_too_long_goes_to_the_fallback_at_once(h: Harness) -> None:
    models = (
        "  a: {provider: up, model: 'a?status=429&retry_after=120'}\n  b: {provider: up, model: b}"
    )
    registry = h.registry(models, "a")
    served = h.run(registry, lambda d: d.complete(plan_for("a", "b"), _body()))
    assert served.model == "b" and h.sleeps == []
    assert len(served.attempts) == 1 and "429" in served.attempts[0]


def test_other_4xx_is_never_retried_nor_fallen_back(h: Harness) -> None:
    models = "  a: {provider: up, model: 'a?status=422'}\n  b: {provider: up, model: b}"
    registry = h.registry(models, "a")
    with pytest.raises(UpstreamRejected) as caught:
        h.run(registry, lambda d: d.complete(plan_for("a", "b"), _body()))
    assert caught.value.model == "a" and caught.value.status == 422
    assert h.upstream.models_called() == ["a?status=422"]


@pytest.mark.parametrize(
    ("status", "why", "said"),
    [(401, "refused the gateway's credentials", ""), (402, "out of credits", "bad request")],
)
def test_an_upstream_refusing_the_gateways_account_falls_back_at_once(
    h: Harness, status: int, why: str, said: str
) -> None:
    """401 from the upstream (the registry's key for it is wrong), or 402 (OpenRouter's
    "Insufficient credits", DeepSeek's "Insufficient Balance": the registry's account,
    as a 401 is): not the client's fault, so the fallback answers, without retrying the
    model that refused; alone, the model's refusal is a 502 naming it and saying why,
    never the upstream's 401 or 402 (a 402 was the request's own 4xx: never fallen back
    from, and the client took it for its own billing)."""
    failing = f"a?status={status}"
    models = f"  a: {{provider: up, model: '{failing}'}}\n  b: {{provider: up, model: b}}"
    registry = h.registry(models, "a")
    served = h.run(registry, lambda d: d.complete(plan_for("a", "b"), _body()))
    assert served.model == "b" and h.sleeps == []
    assert h.upstream.models_called() == [failing, "b"]
    assert why in served.attempts[0]
    with pytest.raises(AllFallbacksFailed) as caught:
        h.run(registry, lambda d: d.complete(plan_for("a"), _body()))
    assert caught.value.status == 502 and said in caught.value.message


def test_route_policy_retries_override_the_default(h: Harness) -> None:
    registry = h.registry("  a: {provider: up, model: 'a?status=503'}", "a")
    with pytest.raises(AllFallbacksFailed) as caught:
        h.run(registry, lambda d: d.complete(plan_for("a", policy=RoutePolicy(retries=0)), _body()))
    assert len(h.upstream.requests) == 1 and caught.value.status == 502


def test_breaker_opens_then_half_opens_then_closes(h: Harness) -> None:
    models = "  a: {provider: up, model: 'a?status=500&times=3'}\n  b: {provider: up, model: b}"
    registry = h.registry(models, "a")
    plan = plan_for("a", "b", policy=RoutePolicy(retries=0))

    async def job(d: Dispatcher) -> list[str]:
        served = [(await d.complete(plan, _body())).model for _ in range(5)]
        # three failures opened a's breaker: the next two went straight to b
        assert len(h.upstream.calls_to("a?status=500&times=3")) == 3
        h.clock.now += 31  # cooldown over: one probe goes through, succeeds, closes it
        served.append((await d.complete(plan, _body())).model)
        served.append((await d.complete(plan, _body())).model)
        return served

    assert h.run(registry, job) == ["b", "b", "b", "b", "b", "a", "a"]


def test_an_open_breaker_on_the_only_model_is_503(h: Harness) -> None:
    registry = h.registry("  a: {provider: up, model: 'a?status=500'}", "a")
    plan = plan_for("a", policy=RoutePolicy(retries=0))

    async def job(d: Dispatcher) -> AllFallbacksFailed:
        for _ in range(3):
            with pytest.raises(AllFallbacksFailed):
                await d.complete(plan, _body())
        with pytest.raises(AllFallbacksFailed) as caught:
            await d.complete(plan, _body())
        return caught.value

    error = h.run(registry, job)
    assert error.status == 503 and "circuit open" in error.message
    assert len(h.upstream.requests) == 3  # the fourth call sent nothing
    assert error.retry_after_s == 30.0  # the breaker's cooldown (the clock stood still)
    answer = gateway_error(error).response()
    assert answer.status_code == 503 and answer.headers["retry-after"] == "30"


def test_every_model_rate_limited_upstream_is_a_429_with_the_soonest_retry_after(
    h: Harness,
) -> None:
    """Every model answered 429 (each try): the client's 429 ``upstream_rate_limited``,
    an OpenAI client's `RateLimitError`, with the soonest of their waits; it was a 503
    ``upstream_error``, an outage to the client and to LiteLLM."""
    models = (
        "  a: {provider: up, model: 'a?status=429&retry_after=3'}\n"
        "  b: {provider: up, model: 'b?status=429&retry_after=2'}"
    )
    registry = h.registry(models, "a")
    with pytest.raises(AllFallbacksFailed) as caught:
        h.run(registry, lambda d: d.complete(plan_for("a", "b"), _body()))
    error = caught.value
    assert error.status == 429 and error.retry_after_s == 2.0
    assert len(error.attempts) == 2 and all("429" in a for a in error.attempts)
    answer = gateway_error(error)
    assert answer.status == 429 and answer.code == "upstream_rate_limited"
    assert answer.headers["retry-after"] == "2" and answer.attempts == error.attempts
    body = json.loads(bytes(answer.response().body))["error"]
    assert body["code"] == "upstream_rate_limited" and len(body["attempts"]) == 2


def test_a_429_without_a_wait_is_a_429_without_retry_after(h: Harness) -> None:
    models = (
        "  a: {provider: up, model: 'a?status=429&retry_after=3'}\n"
        "  b: {provider: up, model: 'b?status=429'}"
    )
    registry = h.registry(models, "a")
    with pytest.raises(AllFallbacksFailed) as caught:
        h.run(registry, lambda d: d.complete(plan_for("a", "b"), _body()))
    answer = gateway_error(caught.value)
    assert answer.status == 429 and "retry-after" not in answer.headers


def test_every_model_503_with_a_wait_too_long_to_retry_is_a_503_with_the_soonest(
    h: Harness,
) -> None:
    """Each model's upstream answered 503 asking for a wait past ``max_retry_after_s``
    (so not retried, the fallback tried at once): every model unavailable, the client's
    503 with the soonest ``Retry-After``, which its client waits out, as for a chain of
    429s. It was a 502 with ``x-should-retry: false``: the waits were dropped and the
    client told not to try again at all."""
    models = (
        "  a: {provider: up, model: 'a?status=503&retry_after=90'}\n"
        "  b: {provider: up, model: 'b?status=503&retry_after=60'}"
    )
    registry = h.registry(models, "a")
    with pytest.raises(AllFallbacksFailed) as caught:
        h.run(registry, lambda d: d.complete(plan_for("a", "b"), _body()))
    error = caught.value
    assert error.status == 503 and error.retry_after_s == 60.0
    assert h.upstream.models_called() == [
        "a?status=503&retry_after=90",
        "b?status=503&retry_after=60",
    ]
    answer = gateway_error(error).response()
    assert answer.status_code == 503 and answer.headers["retry-after"] == "60"
    assert "x-should-retry" not in answer.headers
    body = json.loads(bytes(answer.body))["error"]
    assert body["code"] == "upstream_error" and len(body["attempts"]) == 2


def test_a_503_with_a_wait_beside_a_500_or_a_bare_503_stays_a_502(h: Harness) -> None:
    """A 503 that said when to come back counts as unavailable only beside others that
    are: with a 500 the chain failed in different ways (502), and a 503 that said no
    wait is a failure like a 500."""
    models = (
        "  a: {provider: up, model: 'a?status=503&retry_after=90'}\n"
        "  b: {provider: up, model: 'b?status=500'}\n"
        "  c: {provider: up, model: 'c?status=503'}"
    )
    registry = h.registry(models, "a")
    plan = plan_for("a", "b", policy=RoutePolicy(retries=0))
    bare = plan_for("a", "c", policy=RoutePolicy(retries=0))

    async def job(d: Dispatcher) -> list[AllFallbacksFailed]:
        caught = []
        for each in (plan, bare):
            with pytest.raises(AllFallbacksFailed) as failed:
                await d.complete(each, _body())
            caught.append(failed.value)
        return caught

    for error in h.run(registry, job):
        answer = gateway_error(error).response()
        assert error.status == 502 and answer.status_code == 502
        assert answer.headers["x-should-retry"] == "false" and "retry-after" not in answer.headers


def test_429s_beside_other_failures_keep_502_and_503(h: Harness) -> None:
    """A 429 and a 5xx: 502, as any mix; a 429 and an open breaker: both unavailable, 503."""
    models = (
        "  a: {provider: up, model: 'a?status=429&retry_after=3'}\n"
        "  b: {provider: up, model: 'b?status=500'}"
    )
    registry = h.registry(models, "a")
    plan = plan_for("a", "b", policy=RoutePolicy(retries=0))

    async def job(d: Dispatcher) -> tuple[int | None, int | None]:
        with pytest.raises(AllFallbacksFailed) as mixed:
            await d.complete(plan, _body())
        for _ in range(3):  # b's breaker opens
            with pytest.raises(AllFallbacksFailed):
                await d.complete(plan_for("b", policy=RoutePolicy(retries=0)), _body())
        with pytest.raises(AllFallbacksFailed) as unavailable:
            await d.complete(plan, _body())
        return mixed.value.status, unavailable.value.status

    assert h.run(registry, job) == (502, 503)


@pytest.mark.parametrize("wait", ["inf", "1e309", "nan"])
def test_a_429_asking_to_wait_for_ever_is_a_429_not_a_crash(h: Harness, wait: str) -> None:
    """A ``Retry-After`` that is no number of seconds (``inf``, past a float's range) is
    read as none said: the client's 429 carries no ``Retry-After`` (making one of it
    raised OverflowError, the gateway's 500), and the model is retried as after a bare
    429."""
    upstream = f"a?status=429&retry_after={wait}"
    registry = h.registry(f"  a: {{provider: up, model: '{upstream}'}}", "a")

    async def job(d: Dispatcher) -> AllFallbacksFailed:
        with pytest.raises(AllFallbacksFailed) as caught:
            await d.complete(plan_for("a"), _body())
        return caught.value

    error = h.run(registry, job)
    assert error.status == 429 and error.retry_after_s is None
    assert len(h.upstream.calls_to(upstream)) == 3  # the first try and two retries
    answer = gateway_error(error).response()
    assert answer.status_code == 429 and "retry-after" not in answer.headers


@pytest.fixture
def unconnectable() -> Iterator[str]:
    """The base URL of a server whose listen backlog is full: a connect never completes
    (a host that drops packets, a dead VM behind its address)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fill = []
        for _ in range(8):
            client = socket.socket()
            client.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                client.connect(("127.0.0.1", port))
            fill.append(client)
        try:
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            for client in fill:
                client.close()


@pytest.mark.parametrize("stream", [False, True])
def test_a_deployment_that_cannot_be_connected_to_hands_over_to_the_next(
    h: Harness, unconnectable: str, stream: bool
) -> None:
    """A connect timeout sent nothing, as a refused connection: the model's next
    deployment takes the request at once. (It was raised as a slow model's timeout: the
    model's healthy deployment was passed over for the fallback, or a pinned request
    got a 504.)"""
    dead = f'  dead: {{kind: openai, base_url: "{unconnectable}", connect_timeout_s: 0.3}}\n'
    models = "  a:\n    model: m\n    deployments:\n"
    models += "      - {provider: dead, weight: 1000000}\n      - {provider: up, weight: 1}"
    text = BASE % {"url": h.upstream.url, "url2": h.upstream2.url, "first": "a", "models": models}
    text = text.replace("providers:\n", "providers:\n" + dead)
    registry = parse_registry(text).registry

    async def job(d: Dispatcher) -> str:
        if stream:
            opened = await d.open_stream(plan_for("a"), _body(stream=True))
            events = [e async for e in opened.events]
            assert events[-1] == b"data: [DONE]\n\n"
            return opened.deployment
        return (await d.complete(plan_for("a"), _body())).deployment

    assert h.run(registry, job) == "up"
    assert h.upstream.models_called() == ["m"]

    async def alone(d: Dispatcher) -> None:  # without it: the deployment that timed out
        dead_only = plan_for("dead")
        with pytest.raises(AllFallbacksFailed) as caught:
            if stream:
                await d.open_stream(dead_only, _body(stream=True))
            else:
                await d.complete(dead_only, _body())
        assert caught.value.status == 504
        assert list(caught.value.attempts) == ["dead via dead (could not connect within 0.3s)"]

    text = text.replace("models:\n", "models:\n  dead: {provider: dead, model: m}\n")
    h.run(parse_registry(text).registry, alone)


def test_a_stream_handed_over_before_its_connect_timed_out_goes_to_the_next_deployment(
    h: Harness, unconnectable: str
) -> None:
    """A stream held less long than the connect timeout is handed over silent before
    the connect fails: the model's next deployment still takes it, as within the hold
    (it went on to the chain's next model, passing over the healthy deployment)."""
    dead = f'  dead: {{kind: openai, base_url: "{unconnectable}", connect_timeout_s: 0.3}}\n'
    models = "  a:\n    model: m\n    deployments:\n"
    models += "      - {provider: dead, weight: 1000000}\n      - {provider: up, weight: 1}\n"
    models += "  b: {provider: up2, model: b}"
    text = BASE % {"url": h.upstream.url, "url2": h.upstream2.url, "first": "a", "models": models}
    text = text.replace("providers:\n", "providers:\n" + dead)
    registry = parse_registry(text).registry
    held = registry.dispatch.model_copy(update={"stream_hold_s": 0.05})
    registry = registry.model_copy(update={"dispatch": held})

    async def job(d: Dispatcher) -> tuple[str, str]:
        opened = await d.open_stream(plan_for("a", "b"), _body(stream=True))
        events = [e async for e in opened.events]
        assert events[-1] == b"data: [DONE]\n\n"
        return opened.model, opened.deployment

    assert h.run(registry, job) == ("a", "up")
    assert h.upstream.models_called() == ["m"] and h.upstream2.models_called() == []


def test_deployments_share_traffic_and_route_around_a_dead_one(h: Harness) -> None:
    models = """  a:
    model: m
    deployments:
      - {provider: up, weight: 1}
      - {provider: up2, model: 'm?status=500', weight: 1}"""
    registry = h.registry(models, "a")
    plan = plan_for("a")

    async def job(d: Dispatcher) -> None:
        for _ in range(20):
            assert (await d.complete(plan, _body())).model == "a"

    h.run(registry, job)
    assert len(h.upstream.requests) == 20
    # up2 failed until its breaker opened after three failures, then got nothing
    assert len(h.upstream2.requests) == 3


def test_weighted_deployments_split_by_weight(h: Harness) -> None:
    models = """  a:
    model: m
    deployments:
      - {provider: up, weight: 3}
      - {provider: up2, weight: 1}"""
    registry = h.registry(models, "a")

    async def job(d: Dispatcher) -> None:
        for _ in range(200):
            await d.complete(plan_for("a"), _body())

    h.run(registry, job)
    share = len(h.upstream.requests) / 200
    assert 0.62 < share < 0.88  # 0.75 expected


def test_total_timeout_falls_back(h: Harness) -> None:
    models = (
        "  a: {provider: up, model: 'a?delay=2', timeout_s: 0.3}\n  b: {provider: up, model: b}"
    )
    registry = h.registry(models, "a")
    served = h.run(registry, lambda d: d.complete(plan_for("a", "b"), _body()))
    assert served.model == "b" and "0.3s" in served.attempts[0]
    assert h.sleeps == []  # a timeout is not retried on the same model


def test_time_to_first_token_limit_falls_back_before_any_byte(h: Harness) -> None:
    models = (
        "  a: {provider: up, model: 'a?ttft=2', first_token_timeout_s: 0.3}\n"
        "  b: {provider: up, model: b}"
    )
    registry = h.registry(models, "a")

    model, events = _streamed(h, registry)
    assert model == "b" and events[-1] == b"data: [DONE]\n\n"


def test_a_stream_past_its_stream_timeout_ends_with_a_timeout_not_before(h: Harness) -> None:
    """`timeout_s` bounds each wait for more bytes, so a model dripping words never hit
    it; `stream_timeout_s` bounds the whole stream: past it the stream ends with a
    timeout (words went out: no fallback), and a stream within it is whole."""
    models = (
        "  a: {provider: up, model: 'a?gap=0.15', stream_timeout_s: 0.5}\n"
        "  b: {provider: up, model: b}\n"
        "  c: {provider: up, model: 'c?gap=0.02', stream_timeout_s: 5}"
    )
    registry = h.registry(models, "a")
    words = "one two three four five six seven eight nine ten"

    async def job(d: Dispatcher) -> tuple[list[bytes], ProviderError, list[bytes]]:
        opened = await d.open_stream(plan_for("a", "b"), _body(words, stream=True))
        got: list[bytes] = []
        with pytest.raises(ProviderError) as caught:
            async for event in opened.events:
                got.append(event)
        whole = await d.open_stream(plan_for("c"), _body(words, stream=True))
        return got, caught.value, [e async for e in whole.events]

    got, ended, whole = h.run(registry, job)
    assert isinstance(ended, ProviderTimeout) and "ran past 0.5s" in ended.message
    said = [json.loads(e[6:]) for e in got if e.startswith(b"data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in said)
    assert text.startswith("echo: one") and "ten" not in text, text
    assert h.upstream.models_called() == ["a?gap=0.15", "c?gap=0.02"]  # b never called
    assert whole[-1] == b"data: [DONE]\n\n" and b'"ten "' in b"".join(whole)


def test_a_stream_with_a_deadline_closed_before_its_second_read_closes_its_upstream() -> None:
    """The client left right after the first event: the deadline's wrapper had not been
    read, and a generator never started closes nothing; the upstream stream stayed open."""
    closed: list[str] = []

    async def upstream() -> AsyncIterator[bytes]:
        try:
            yield b"data: first\n\n"
            yield b"data: second\n\n"
        finally:
            closed.append("upstream")

    async def main() -> None:
        events = aiter(upstream())
        await anext(events)
        await dispatcher_module._close(dispatcher_module._Within(events, 0.0, 1e9, "p"))

    asyncio.run(main())
    assert closed == ["upstream"]


def test_all_timeouts_is_504(h: Harness) -> None:
    registry = h.registry("  a: {provider: up, model: 'a?delay=2', timeout_s: 0.2}", "a")
    with pytest.raises(AllFallbacksFailed) as caught:
        h.run(registry, lambda d: d.complete(plan_for("a"), _body()))
    assert caught.value.status == 504


def test_a_stream_failing_before_its_words_after_the_hold_goes_on_from_the_next_model(
    h: Harness,
) -> None:
    models = "  a: {provider: up, model: 'a?early=1&pause=0.3'}\n  b: {provider: up, model: b}"
    registry = h.registry(models, "a")
    held = registry.dispatch.model_copy(update={"stream_hold_s": 0.05})
    registry = registry.model_copy(update={"dispatch": held})
    body = _body(stream=True, stream_options={"include_usage": True})

    async def job(d: Dispatcher) -> tuple[Any, list[bytes]]:
        opened = await d.open_stream(plan_for("a", "b"), body)
        assert opened.model == "a"  # what the status line was sent with
        return opened, [e async for e in opened.events]

    opened, events = h.run(registry, job)
    assert opened.model == "b" and opened.deployment == "up"
    assert len(opened.attempts) == 1 and "502" in opened.attempts[0]
    chunks = [json.loads(e[6:]) for e in events if e.startswith(b"data: {")]
    assert [c["model"] for c in chunks[:2]] == ["a?early=1&pause=0.3", "b"]  # a's opening only
    roles = [c for c in chunks if c["choices"] and "role" in c["choices"][0]["delta"]]
    assert len(roles) == 1 and events[-1] == b"data: [DONE]\n\n"
    assert opened.usage is not None and opened.usage.estimated  # both calls' prompts
    assert opened.usage.prompt_tokens > chunks[-1]["usage"]["prompt_tokens"]
    assert h.upstream.models_called() == ["a?early=1&pause=0.3", "b"]


def test_a_stream_whose_later_models_fail_too_ends_broken_and_counted_once(
    h: Harness,
) -> None:
    models = "  a: {provider: up, model: 'a?early=1&pause=0.3'}\n"
    models += "  c: {provider: up, model: 'c?status=500'}"
    registry = h.registry(models, "a")
    held = registry.dispatch.model_copy(update={"stream_hold_s": 0.05})
    registry = registry.model_copy(update={"dispatch": held})

    def broken(*chain: str) -> tuple[Any, int]:
        async def job(d: Dispatcher) -> tuple[Any, int]:
            opened = await d.open_stream(plan_for(*chain), _body(stream=True))
            got = 0
            with pytest.raises(ProviderError):
                async for _ in opened.events:
                    got += 1
            return opened, got

        return h.run(registry, job)

    alone, seen_alone = broken("a")
    after_c, seen = broken("a", "c")
    assert seen == seen_alone == 1  # the opening, then the error
    assert after_c.model == "a" and after_c.usage == alone.usage  # a's call, once
    assert [attempt.split()[0] for attempt in after_c.attempts] == ["a", "c"]  # both failures


def test_a_held_stream_whose_later_models_fail_names_every_model_tried_in_order(
    h: Harness,
) -> None:
    """`x` fails within the hold, `a`'s stream opens, is handed over and fails before its
    words, `b` fails and `r` refuses: the error raised from the events lists every
    model tried, in order, as a request that was not streamed does (`attempts`, the
    message; a refusal's `passed_over`), with the status a request that was not
    streamed would get. They named only the models tried after `a` (and `a`'s
    failure, for a refusal), though `opened.attempts` listed them all."""
    models = "  x: {provider: up, model: 'x?status=503'}\n"
    models += "  a: {provider: up, model: 'a?early=1&pause=0.3'}\n"
    models += "  b: {provider: up, model: 'b?status=503'}\n"
    models += "  r: {provider: up, model: 'r?status=400'}"
    registry = _silent(h, models)

    async def job(d: Dispatcher) -> list[tuple[Any, ProviderError]]:
        seen = []
        for chain in (("x", "a", "b"), ("x", "a", "r")):
            opened = await d.open_stream(plan_for(*chain), _body(stream=True))
            assert opened.model == "a"  # handed over after x failed
            with pytest.raises(ProviderError) as caught:
                async for _ in opened.events:
                    pass
            seen.append((opened, caught.value))
        return seen

    (failed, every), (refused, refusal) = h.run(registry, job)
    assert isinstance(every, AllFallbacksFailed) and every.status == 502
    assert [attempt.split()[0] for attempt in every.attempts] == ["x", "a", "b"]
    assert every.attempts == failed.attempts
    assert all(attempt in every.message for attempt in every.attempts)
    assert refusal.status == 400 and refusal.model == "r"
    assert [attempt.split()[0] for attempt in refusal.passed_over] == ["x", "a", "r"]
    assert refusal.passed_over == refused.attempts


def test_a_held_stream_that_failed_beside_later_429s_is_a_502_not_a_429(h: Harness) -> None:
    """`a`'s stream is handed over and fails before its words (an error event, not a
    rate limit), then `b` answers 429: a mix, 502 as a request not streamed gets. It
    was a 429 ``upstream_rate_limited``: the status of the models after `a` alone."""
    models = "  a: {provider: up, model: 'a?early=1&pause=0.3'}\n"
    models += "  b: {provider: up, model: 'b?status=429&retry_after=2'}"
    error = _held_stream_error(h, models, "a", "b")
    assert isinstance(error, AllFallbacksFailed) and error.status == 502
    assert [attempt.split()[0] for attempt in error.attempts] == ["a", "b"]


def test_a_held_stream_whose_every_model_was_rate_limited_keeps_the_soonest_wait(
    h: Harness,
) -> None:
    """`x` answers 429 within the hold, `a` is handed over silent and answers 429 after
    it, then `b` 429: every model rate limited, the client's 429 with the soonest
    ``Retry-After`` the models after the hand-over said, as a 503's keeps it. It had
    none: the error listing every model dropped it."""
    models = "  x: {provider: up, model: 'x?status=429&retry_after=5'}\n"
    models += "  a: {provider: up, model: 'a?delay=0.3&status=429&retry_after=3'}\n"
    models += "  b: {provider: up, model: 'b?status=429&retry_after=2'}"
    error = _held_stream_error(h, models, "x", "a", "b")
    assert isinstance(error, AllFallbacksFailed) and error.status == 429
    assert [attempt.split()[0] for attempt in error.attempts] == ["x", "a", "b"]
    assert error.retry_after_s == 2.0


def test_a_held_stream_counts_the_failures_within_the_hold_for_its_status(h: Harness) -> None:
    """`x` answers 500 within the hold, then `a` (handed over silent) and `b` answer 429:
    a mix, 502 as a request not streamed gets. It was a 429 ``upstream_rate_limited``
    (the failures within the hold were known only by their words)."""
    models = "  x: {provider: up, model: 'x?status=500'}\n"
    models += "  a: {provider: up, model: 'a?delay=0.3&status=429&retry_after=3'}\n"
    models += "  b: {provider: up, model: 'b?status=429&retry_after=2'}"
    error = _held_stream_error(h, models, "x", "a", "b")
    assert isinstance(error, AllFallbacksFailed) and error.status == 502
    assert [attempt.split()[0] for attempt in error.attempts] == ["x", "a", "b"]
    assert error.retry_after_s is None


def test_a_held_stream_gives_no_retry_after_when_a_model_within_the_hold_said_none(
    h: Harness,
) -> None:
    """Every model rate limited, `x` (within the hold) without a ``Retry-After``: none,
    as a request not streamed gets (not each model said when it could answer)."""
    models = "  x: {provider: up, model: 'x?status=429'}\n"
    models += "  a: {provider: up, model: 'a?delay=0.3&status=429&retry_after=3'}\n"
    models += "  b: {provider: up, model: 'b?status=429&retry_after=2'}"
    error = _held_stream_error(h, models, "x", "a", "b", handed_to=None)
    assert isinstance(error, AllFallbacksFailed) and error.status == 429
    assert error.retry_after_s is None


def test_a_held_stream_a_fallback_refuses_names_the_refuser_after_the_failure(
    h: Harness,
) -> None:
    """The held stream of `a` fails before its words; `r`, next, refuses the request
    (a 400): the stream's record lists a's failure, then r's refusal, and names r, as a
    request that was not streamed does."""
    models = "  a: {provider: up, model: 'a?early=1&pause=0.3'}\n"
    models += "  r: {provider: up, model: 'r?status=400'}"
    registry = h.registry(models, "a")
    held = registry.dispatch.model_copy(update={"stream_hold_s": 0.05})
    registry = registry.model_copy(update={"dispatch": held})

    async def job(d: Dispatcher) -> tuple[Any, ProviderError]:
        opened = await d.open_stream(plan_for("a", "r"), _body(stream=True))
        with pytest.raises(ProviderError) as caught:
            async for _ in opened.events:
                pass
        return opened, caught.value

    opened, refusal = h.run(registry, job)
    assert refusal.status == 400 and refusal.model == "r"
    assert opened.model == "r" and opened.deployment == "up"
    assert [attempt.split()[0] for attempt in opened.attempts] == ["a", "r"]
    assert "502" in opened.attempts[0]
    assert refusal.passed_over == opened.attempts
    assert h.upstream.models_called() == ["a?early=1&pause=0.3", "r?status=400"]


class _Told:
    """The observer's view of a stream: each call as it opened, each stream's end."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, str]] = []
        self.elapsed: list[float] = []
        self.ends: list[tuple[str, str]] = []
        self.fallbacks: list[tuple[str, str]] = []

    def on_attempt(self, attempt: Any) -> None:
        self.attempts.append((attempt.model, attempt.outcome))
        self.elapsed.append(attempt.elapsed_s)

    def on_retry(self, model: str, delay_s: float) -> None:
        pass

    def on_fallback(self, route: str, model: str, next_model: str) -> None:
        self.fallbacks.append((model, next_model))

    def on_stream_end(self, attempt: Any, outcome: str, error: BaseException | None) -> None:
        self.ends.append((attempt.model, outcome))


def _silent(h: Harness, models: str, hold_s: float = 0.05) -> Registry:
    registry = h.registry(models, "a")
    held = registry.dispatch.model_copy(update={"stream_hold_s": hold_s})
    return registry.model_copy(update={"dispatch": held})


def _held_stream_error(
    h: Harness, models: str, *chain: str, handed_to: str | None = "a"
) -> ProviderError:
    """What the events of `chain`'s stream (no retries, held 0.05 s) raise once it was
    handed over silent to `handed_to` (None: any model)."""
    registry = _silent(h, models)
    plan = plan_for(*chain, policy=RoutePolicy(retries=0))

    async def job(d: Dispatcher) -> ProviderError:
        opened = await d.open_stream(plan, _body(stream=True))
        assert handed_to is None or opened.model == handed_to
        with pytest.raises(ProviderError) as caught:
            async for _ in opened.events:
                pass
        return caught.value

    return h.run(registry, job)


def test_a_silent_stream_is_handed_over_after_the_hold_before_its_first_event(
    h: Harness,
) -> None:
    """An upstream that sends nothing before its first token (OpenAI's API while a
    reasoning model thinks): the stream is handed over once `stream_hold_s` has passed,
    before its first event, so that the client hears the status line and keep-alives;
    the events, read then, are the whole answer, its opening first."""
    registry = _silent(h, "  a: {provider: up, model: 'a?ttft=0.8'}")

    async def job(d: Dispatcher) -> tuple[float, Any, list[bytes]]:
        started = time.monotonic()
        opened = await d.open_stream(plan_for("a"), _body(stream=True))
        handed_s = time.monotonic() - started
        return handed_s, opened, [e async for e in opened.events]

    handed_s, opened, events = h.run(registry, job)
    assert handed_s < 0.6  # the hold (0.05 s), not the first token (0.8 s)
    chunks = [json.loads(e[6:]) for e in events if e.startswith(b"data: {")]
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "echo: hi " and events[-1] == b"data: [DONE]\n\n"
    assert opened.model == "a" and opened.attempts == () and opened.usage is not None


def test_a_silent_stream_timing_out_after_the_hold_goes_on_from_the_next_model_opening_and_all(
    h: Harness,
) -> None:
    """The silent model's first-token limit runs out after the stream was handed over:
    the next model answers in the same stream, with its own opening (none went out
    before it); the breaker (once) and the observer hear the failure, the attempts name
    it. The observer hears a's call as a call timing out within the hold: ``timeout``,
    timed to it (0.4 s, not the hold), and no stream end (it never opened)."""
    models = "  a: {provider: up, model: 'a?ttft=30', first_token_timeout_s: 0.4}\n"
    models += "  b: {provider: up, model: b}"
    registry = _silent(h, models)
    told = _Told()

    async def job(d: Dispatcher) -> tuple[Any, list[bytes], dict[str, object]]:
        opened = await d.open_stream(plan_for("a", "b"), _body(stream=True))
        assert opened.model == "a"  # handed over before a's limit ran out
        events = [e async for e in opened.events]
        return opened, events, d.deployments.pool("a").deployments[0].breaker.snapshot()

    opened, events, breaker = h.run(registry, job, told)
    chunks = [json.loads(e[6:]) for e in events if e.startswith(b"data: {")]
    assert {c["model"] for c in chunks} == {"b"}
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant"  # b's opening
    assert events[-1] == b"data: [DONE]\n\n"
    assert opened.model == "b" and len(opened.attempts) == 1
    assert (
        opened.attempts[0].startswith("a via up")
        and "no first token within 0.4s" in (opened.attempts[0])
    )
    assert told.attempts == [("a", "timeout"), ("b", "ok")]
    assert told.elapsed[0] >= 0.4  # its first-token limit; the hand-over was at 0.05 s
    assert told.ends == [("b", "ok")] and told.fallbacks == [("a", "b")]
    assert breaker["window_failures"] == 1
    assert h.upstream.models_called() == ["a?ttft=30", "b"]


def test_a_silent_streams_call_is_told_when_its_first_event_comes_not_at_the_hand_over(
    h: Harness,
) -> None:
    """The observer (metrics, the attempt's span and its ``llmroute.ttft_s``) hears the
    call of a stream handed over silent when its first event comes, timed to it (0.6 s),
    not at the hand-over (the hold, 0.05 s); the stream's end follows as for any."""
    registry = _silent(h, "  a: {provider: up, model: 'a?ttft=0.6'}")
    told = _Told()

    async def job(d: Dispatcher) -> list[tuple[str, str]]:
        opened = await d.open_stream(plan_for("a"), _body(stream=True))
        at_hand_over = list(told.attempts)
        assert [e async for e in opened.events][-1] == b"data: [DONE]\n\n"
        return at_hand_over

    at_hand_over = h.run(registry, job, told)
    assert at_hand_over == []  # not yet: its first event had not come
    assert told.attempts == [("a", "ok")] and told.elapsed[0] >= 0.6
    assert told.ends == [("a", "ok")]


def test_a_silent_stream_its_client_leaves_before_its_first_event_is_a_cancelled_call(
    h: Harness,
) -> None:
    """Closed while still silent (its client left): the call is told ``cancelled``, as
    one cut within the hold, with no stream end, and its breaker counts nothing."""
    registry = _silent(h, "  a: {provider: up, model: 'a?ttft=30'}")
    told = _Told()

    async def job(d: Dispatcher) -> dict[str, object]:
        opened = await d.open_stream(plan_for("a"), _body(stream=True))
        await asyncio.sleep(0.1)
        await opened.aclose()
        return d.deployments.pool("a").deployments[0].breaker.snapshot()

    breaker = h.run(registry, job, told)
    assert told.attempts == [("a", "cancelled")] and told.ends == []
    assert breaker["window_failures"] == 0


def test_a_silent_stream_holds_its_prompt_against_the_deployments_tpm_until_its_first_event(
    h: Harness,
) -> None:
    """A deployment's ``tpm`` holds a stream's estimated prompt until its first event;
    one handed over silent holds it past the hand-over, until that event comes, then
    only the answer's real tokens are counted."""
    tag = uuid.uuid4().hex[:8]
    models = f"  a: {{model: 'a-{tag}?ttft=0.6', deployments: [{{provider: up, tpm: 100000}}]}}"
    registry = _silent(h, models)

    async def job(d: Dispatcher) -> tuple[float, float, int]:
        deployment = d.deployments.pool("a").deployments[0]
        assert deployment.limits is not None
        opened = await d.open_stream(plan_for("a"), _body("hi " * 200, stream=True))
        silent = await deployment.limits.tokens(deployment.key)
        assert [e async for e in opened.events][-1] == b"data: [DONE]\n\n"
        await asyncio.sleep(0.05)  # the hold's give-back, in the background
        assert opened.usage is not None
        return silent, await deployment.limits.tokens(deployment.key), opened.usage.total_tokens

    silent, after, used = h.run(registry, job)
    assert silent >= 150  # about 200 words held, not given back at the hand-over
    assert after == used


def test_a_silent_streams_deployment_is_timed_by_its_first_event_not_the_hand_over(
    h: Harness,
) -> None:
    """Least-latency balancing between two deployments silent past the hold: each is
    timed when its first event comes (0.6 s and 0.2 s), not when the stream was handed
    over (the hold, 0.05 s for both), so the faster one gets the traffic."""
    models = (
        "  a:\n    model: m\n    balance: latency\n    deployments:\n"
        "      - {provider: up, model: 'm?ttft=0.6'}\n"
        "      - {provider: up2, model: 'm?ttft=0.2'}"
    )
    registry = _silent(h, models)

    async def job(d: Dispatcher) -> tuple[list[str], list[float | None]]:
        served = []
        for _ in range(4):
            opened = await d.open_stream(plan_for("a"), _body(stream=True))
            assert [e async for e in opened.events][-1] == b"data: [DONE]\n\n"
            served.append(opened.deployment)
        balancer = d.deployments.pool("a")._balancer  # the moving averages it orders by
        return served, [balancer.latency(0), balancer.latency(1)]

    served, (slow, fast) = h.run(registry, job)
    assert slow is not None and fast is not None
    assert slow >= 0.55 and 0.15 <= fast < 0.5  # on the hand-over both read ~0.05
    assert sorted(served[:2]) == ["up", "up2"]  # each tried once (unmeasured first)
    assert served[2:] == ["up2", "up2"]  # then the one whose first event is sooner


def test_a_silent_stream_alone_timing_out_after_the_hold_ends_broken(h: Harness) -> None:
    registry = _silent(h, "  a: {provider: up, model: 'a?ttft=30', first_token_timeout_s: 0.4}")

    async def job(d: Dispatcher) -> tuple[Any, list[bytes], ProviderError]:
        opened = await d.open_stream(plan_for("a"), _body(stream=True))
        got: list[bytes] = []
        with pytest.raises(ProviderTimeout) as caught:
            async for event in opened.events:
                got.append(event)
        return opened, got, caught.value

    opened, got, error = h.run(registry, job)
    assert got == [] and "no first token within 0.4s" in error.message
    assert opened.model == "a" and opened.usage is None  # a failed call: nothing charged


def test_a_silent_stream_closed_unread_after_its_first_read_failed_logs_no_lost_exception(
    h: Harness,
) -> None:
    """Handed over silent and not read (an SDK caller who has not begun), its first read
    fails (its first-token limit) in the task carrying it; `Opened.aclose` then takes
    that failure: asyncio logged "Task exception was never retrieved" with the
    `ProviderTimeout`'s traceback once the task was collected."""
    registry = _silent(h, "  a: {provider: up, model: 'a?ttft=30', first_token_timeout_s: 0.2}")
    lost: list[str] = []

    async def job(d: Dispatcher) -> Any:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: lost.append(context["message"]))
        opened = await d.open_stream(plan_for("a"), _body(stream=True))
        await asyncio.sleep(0.5)  # past the first-token limit, unread
        await opened.aclose()
        gc.collect()
        await asyncio.sleep(0)
        return opened

    opened = h.run(registry, job)
    assert opened.usage is None and lost == []


def test_an_error_status_after_the_hold_is_retried_then_falls_back_in_the_stream_or_ends_it(
    h: Harness,
) -> None:
    """An upstream whose error status comes after the stream was handed over, before its
    first event: a 503 is retried on its model (twice, after the backoff), as within the
    hold, then goes on from the next model in the same stream; a 400 (the request's own
    fault) ends it, raised from the events, as after a role chunk."""
    tag = uuid.uuid4().hex[:8]
    failing = f"a-{tag}?delay=0.4&status=503"
    models = f"  a: {{provider: up, model: '{failing}'}}\n"
    models += "  r: {provider: up, model: 'r?delay=0.4&status=400'}\n  b: {provider: up, model: b}"
    registry = _silent(h, models)
    told = _Told()

    async def job(d: Dispatcher) -> tuple[Any, list[bytes], int | None]:
        opened = await d.open_stream(plan_for("a", "b"), _body(stream=True))
        assert opened.model == "a"
        events = [e async for e in opened.events]
        refused = await d.open_stream(plan_for("r", "b"), _body(stream=True))
        with pytest.raises(UpstreamRejected) as caught:
            async for _ in refused.events:
                pass
        return opened, events, caught.value.status

    opened, events, status = h.run(registry, job, told)
    chunks = [json.loads(e[6:]) for e in events if e.startswith(b"data: {")]
    assert {c["model"] for c in chunks} == {"b"} and "role" in chunks[0]["choices"][0]["delta"]
    assert opened.model == "b" and [a.split()[0] for a in opened.attempts] == ["a"]
    assert h.upstream.models_called()[:4] == [failing, failing, failing, "b"]
    assert len(h.sleeps) == 2  # its two retries' backoffs
    assert told.attempts[:4] == [("a", "error")] * 3 + [("b", "ok")]
    assert told.fallbacks == [("a", "b")]
    assert status == 400


def test_a_silent_stream_alone_failing_after_the_hold_ends_broken_after_its_retries(
    h: Harness,
) -> None:
    """No model after it: a 503 after the hand-over is retried on the model all the
    same; when every try fails the stream ends broken, the failure listed once."""
    tag = uuid.uuid4().hex[:8]
    failing = f"a-{tag}?delay=0.3&status=503"
    registry = _silent(h, f"  a: {{provider: up, model: '{failing}'}}")

    async def job(d: Dispatcher) -> tuple[Any, ProviderError]:
        opened = await d.open_stream(plan_for("a"), _body(stream=True))
        with pytest.raises(ProviderError) as caught:
            async for _ in opened.events:
                pass
        return opened, caught.value

    opened, error = h.run(registry, job)
    assert error.status == 502 and error.retryable
    assert h.upstream.models_called() == [failing] * 3 and len(h.sleeps) == 2
    assert opened.model == "a" and [a.split()[0] for a in opened.attempts] == ["a"]
    assert "503" in opened.attempts[0]
    assert opened.usage is None  # failed calls, charged nothing (as within the hold)


def test_an_error_status_after_the_hold_goes_to_the_models_next_deployment(
    h: Harness,
) -> None:
    """A 503 after the hand-over, before the first event, from one deployment of the
    model: its other deployment answers in the same stream, as within the hold; the
    next model is not called and no failure is listed (the model answered)."""
    tag = uuid.uuid4().hex[:8]
    models = (
        "  a:\n    model: m\n    deployments:\n"
        f"      - {{provider: up, model: 'm-{tag}?delay=0.4&status=503', weight: 1000}}\n"
        f"      - {{provider: up2, model: 'm-{tag}', weight: 1}}\n"
        "  b: {provider: up, model: b}"
    )
    registry = _silent(h, models)
    told = _Told()

    async def job(d: Dispatcher) -> tuple[Any, list[bytes]]:
        opened = await d.open_stream(plan_for("a", "b"), _body(stream=True))
        assert opened.deployment == "up"  # handed over before its 503
        return opened, [e async for e in opened.events]

    opened, events = h.run(registry, job, told)
    chunks = [json.loads(e[6:]) for e in events if e.startswith(b"data: {")]
    assert {c["model"] for c in chunks} == {f"m-{tag}"} and events[-1] == b"data: [DONE]\n\n"
    assert opened.model == "a" and opened.deployment == "up2" and opened.attempts == ()
    assert h.upstream.models_called() == [f"m-{tag}?delay=0.4&status=503"]
    assert h.upstream2.models_called() == [f"m-{tag}"]
    assert told.attempts == [("a", "error"), ("a", "ok")] and told.fallbacks == []
    assert h.sleeps == []  # the next deployment at once, no backoff
    assert opened.usage is not None and opened.usage.completion_tokens > 0


def _held_and_handed(
    h: Harness, models: str, plan: Any, body: dict[str, Any]
) -> tuple[tuple[Any, list[bytes], _Told], tuple[Any, list[bytes], _Told]]:
    """A stream on `plan` within the hold (`models` read with their ``delay=0.5``
    left out) and handed over silent (0.2 s) before the same failure: each `Opened`, its
    events read to the end, and what the observer was told."""

    async def job(d: Dispatcher) -> tuple[Any, list[bytes]]:
        opened = await d.open_stream(plan, dict(body))
        return opened, [e async for e in opened.events]

    runs = []
    for text in (models.replace("delay=0.5&", ""), models):
        told = _Told()
        opened, events = h.run(_silent(h, text, 0.2), job, told)
        runs.append((opened, events, told))
    return runs[0], runs[1]


def _unnumbered(attempts: tuple[str, ...]) -> list[str]:
    """`attempts` without the upstream's request ids, which differ from call to call."""
    return [re.sub(r"req_\w+", "req", a) for a in attempts]


def _text_of(events: list[bytes]) -> tuple[set[str], str]:
    chunks = [json.loads(e[6:]) for e in events if e.startswith(b"data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    return {c["model"] for c in chunks}, text


def test_a_context_length_error_after_the_hold_goes_to_the_larger_model_in_the_stream(
    h: Harness,
) -> None:
    """An upstream 400 context_length_exceeded that comes after the stream was handed
    over, before its first event: the request goes to the route's context fallback, as
    within the hold (not the chain's next model, too small as well), in the same
    stream; the served model, attempts and fallback told are those of the hold's case."""
    models = (
        "  a: {provider: up, model: 'a?delay=0.5&context=1', context_window: 8192}\n"
        "  mid: {provider: up, model: mid, context_window: 8192}\n"
        "  big: {provider: up2, model: big, context_window: 200000}"
    )
    plan = plan_for("a", "mid", policy=RoutePolicy(context_fallback="big"))
    held, handed = _held_and_handed(h, models, plan, _body(stream=True))
    for opened, events, told in (held, handed):
        assert _text_of(events) == ({"big"}, "echo: hi ") and events[-1] == b"data: [DONE]\n\n"
        assert opened.model == "big" and opened.deployment == "up2"
        assert len(opened.attempts) == 1 and "context window" in opened.attempts[0]
        assert told.attempts == [("a", "rejected"), ("big", "ok")]
        assert told.fallbacks == [("a", "big")] and told.ends == [("big", "ok")]
        assert opened.usage is not None and opened.usage.completion_tokens > 0
    assert _unnumbered(handed[0].attempts) == _unnumbered(held[0].attempts)
    assert "mid" not in h.upstream.models_called() and h.sleeps == []


def test_a_context_length_error_after_the_hold_with_no_larger_model_ends_the_stream(
    h: Harness,
) -> None:
    """No larger model in the chain: the refusal ends the stream, raised from its events
    as the client's 400, as within the hold; the chain's next model is not called."""
    models = (
        "  a: {provider: up, model: 'a?delay=0.5&context=1', context_window: 8192}\n"
        "  b: {provider: up, model: b, context_window: 8192}"
    )

    async def job(d: Dispatcher) -> ContextWindowExceeded:
        opened = await d.open_stream(plan_for("a", "b"), _body(stream=True))
        with pytest.raises(ContextWindowExceeded) as caught:
            async for _ in opened.events:
                pass
        return caught.value

    error = h.run(_silent(h, models, 0.2), job)
    assert error.status == 400 and error.code == "context_length_exceeded"
    assert h.upstream.models_called() == ["a?delay=0.5&context=1"]


def test_a_content_filter_refusal_after_the_hold_goes_to_the_content_fallback(
    h: Harness,
) -> None:
    """Azure's content filter refusing the prompt after the stream was handed over, before
    its first event: the route's content fallback answers in the same stream, at once,
    the chain's next model skipped, as within the hold."""
    models = (
        "  a: {provider: up, model: 'a?delay=0.5&filter=1'}\n"
        "  b: {provider: up, model: b}\n"
        "  guarded: {provider: up2, model: guarded}"
    )
    plan = plan_for("a", "b", policy=RoutePolicy(fallback=("b",), content_fallback="guarded"))
    held, handed = _held_and_handed(h, models, plan, _body(stream=True))
    for opened, events, told in (held, handed):
        assert _text_of(events) == ({"guarded"}, "echo: hi ")
        assert opened.model == "guarded" and len(opened.attempts) == 1
        assert "content filter" in opened.attempts[0]
        assert told.attempts == [("a", "rejected"), ("guarded", "ok")]
        assert told.fallbacks == [("a", "guarded")]
    assert _unnumbered(handed[0].attempts) == _unnumbered(held[0].attempts)
    assert "b" not in h.upstream.models_called() and h.sleeps == []


def test_a_refused_answer_limit_after_the_hold_is_sent_again_within_the_cap(
    h: Harness,
) -> None:
    """The model's 400 for a max_tokens above its cap, after the stream was handed over:
    the request goes to the model again within the cap (learned for later calls), as
    within the hold, and its answer is the stream; no failure is listed, nothing falls
    back."""
    models = "  a: {provider: up, model: 'a?delay=0.5&cap=100'}\n  b: {provider: up, model: b}"
    held, handed = _held_and_handed(
        h, models, plan_for("a", "b"), _body(stream=True, max_tokens=500)
    )
    for opened, events, told in (held, handed):
        assert _text_of(events)[1] == "echo: hi "
        assert opened.model == "a" and opened.attempts == () and told.fallbacks == []
    assert held[2].attempts == [("a", "ok")]
    assert handed[2].attempts == [("a", "rejected"), ("a", "ok")]  # the refusal came apart
    sent = [(r.body["model"], r.body["max_tokens"]) for r in h.upstream.requests]
    late = "a?delay=0.5&cap=100"
    assert sent == [("a?cap=100", 500), ("a?cap=100", 100), (late, 500), (late, 100)]
    assert "b" not in h.upstream.models_called() and h.sleeps == []


def test_refused_stream_options_after_the_hold_are_dropped_and_the_stream_sent_again(
    h: Harness,
) -> None:
    """A server refusing `stream_options` after the stream was handed over: the stream
    goes to the model again without them, its usage estimated, as within the hold."""
    models = "  a: {provider: up, model: 'a?delay=0.5&unsupported=stream_options'}"
    body = _body(stream=True, stream_options={"include_usage": True})
    held, handed = _held_and_handed(h, models, plan_for("a"), body)
    for opened, events, _ in (held, handed):
        assert _text_of(events)[1] == "echo: hi " and opened.attempts == ()
        assert json.loads(events[-2][6:])["usage"]["estimated"] is True
        assert opened.usage is not None and opened.usage.estimated
    assert ["stream_options" in r.body for r in h.upstream.requests] == [True, False] * 2


def test_a_stream_failing_after_the_hold_goes_on_down_the_chain_as_rearranged(
    h: Harness,
) -> None:
    """The chain as dispatch went down it: `a` too long for its window within the hold,
    the context fallback `big` (not in the chain) opened, then failed with a 503 after the
    hand-over. After its retries the chain's `mid` answers, as within the hold, not the
    end of the stream."""
    models = (
        "  a: {provider: up, model: 'a?context=1', context_window: 8192}\n"
        "  mid: {provider: up, model: mid, context_window: 16000}\n"
        "  big: {provider: up2, model: 'big?delay=0.5&status=503', context_window: 200000}"
    )
    plan = plan_for("a", "mid", policy=RoutePolicy(context_fallback="big"))

    async def job(d: Dispatcher) -> tuple[Any, list[bytes]]:
        opened = await d.open_stream(plan, _body(stream=True))
        assert opened.model == "big"
        return opened, [e async for e in opened.events]

    opened, events = h.run(_silent(h, models, 0.2), job)
    assert _text_of(events) == ({"mid"}, "echo: hi ") and opened.model == "mid"
    assert [a.split()[0] for a in opened.attempts] == ["a", "big"]
    assert h.upstream2.models_called() == ["big?delay=0.5&status=503"] * 3


def test_silent_503s_from_each_deployment_after_the_hold_end_the_try_as_within_it(
    h: Harness,
) -> None:
    """Both deployments of a model answer 503 after the stream was handed over, before
    its first event: as within the hold, each is called once in the try, then (no try
    left) the next model answers; the two deployments are not called in turn again and
    again within the one try (which, without a breaker, never ended)."""
    tag = uuid.uuid4().hex[:8]
    one, two = f"m-{tag}?delay=0.2&status=503", f"m-{tag}?delay=0.2&status=503&d=2"
    models = (
        "  a:\n    model: m\n    deployments:\n"
        f"      - {{provider: up, model: '{one}'}}\n"
        f"      - {{provider: up2, model: '{two}'}}\n"
        "  b: {provider: up, model: b}"
    )
    registry = _silent(h, models)
    told = _Told()

    async def job(d: Dispatcher) -> tuple[Any, list[bytes]]:
        opened = await d.open_stream(
            plan_for("a", "b", policy=RoutePolicy(retries=0)), _body(stream=True)
        )

        async def read() -> list[bytes]:
            return [e async for e in opened.events]

        return opened, await asyncio.wait_for(read(), 10)

    opened, events = h.run(registry, job, told)
    assert events[-1] == b"data: [DONE]\n\n"
    assert h.upstream.models_called().count(one) == 1
    assert h.upstream2.models_called() == [two]
    assert opened.model == "b" and [a.split()[0] for a in opened.attempts] == ["a"]
    assert told.attempts == [("a", "error"), ("a", "error"), ("b", "ok")]
    assert told.fallbacks == [("a", "b")] and h.sleeps == []


def test_a_fast_failure_of_a_held_stream_still_raises_before_anything_is_handed_over(
    h: Harness,
) -> None:
    """Within the hold nothing changes: a 400 at once is raised by `open_stream` (its
    status for the client), a 500 falls back before the stream is handed over."""
    models = "  a: {provider: up, model: 'a?status=400'}\n  b: {provider: up, model: b}\n"
    models += "  c: {provider: up, model: 'c?status=500'}"
    registry = _silent(h, models, hold_s=2.0)

    async def job(d: Dispatcher) -> tuple[int | None, Any]:
        with pytest.raises(UpstreamRejected) as caught:
            await d.open_stream(plan_for("a", "b"), _body(stream=True))
        opened = await d.open_stream(plan_for("c", "b"), _body(stream=True))
        await opened.aclose()
        return caught.value.status, opened

    status, opened = h.run(registry, job)
    assert status == 400
    assert opened.model == "b" and [a.split()[0] for a in opened.attempts] == ["c"]


def test_a_stream_never_held_waits_for_its_first_event(h: Harness) -> None:
    """``stream_hold_s: 0``: never held, so never handed over before its first event
    either; a first-token timeout then falls back before anything goes out."""
    models = "  a: {provider: up, model: 'a?ttft=30', first_token_timeout_s: 0.3}\n"
    models += "  b: {provider: up, model: b}"
    registry = _silent(h, models, hold_s=0.0)

    async def job(d: Dispatcher) -> Any:
        opened = await d.open_stream(plan_for("a", "b"), _body(stream=True))
        await opened.aclose()
        return opened

    opened = h.run(registry, job)
    assert opened.model == "b" and [a.split()[0] for a in opened.attempts] == ["a"]


def test_a_held_stream_a_fallback_is_refused_by_the_gateway_names_no_deployment_llmroute(
    h: Harness,
) -> None:
    """The held stream of `a` fails before its words; `r`, next, is too small for the
    request: the gateway's verdict, nothing sent. The record named r served by the
    deployment "llmroute" (the decision log's and request log's `deployment`, the trace's
    llmroute.deployment, and r's upstream seconds in the metrics) though no deployment of
    r was called: it keeps a, whose call it was, and lists r's verdict after a's failure."""
    models = "  a: {provider: up, model: 'a?early=1&pause=0.3'}\n"
    models += "  r: {provider: up, model: r, context_window: 10}"
    registry = h.registry(models, "a")
    held = registry.dispatch.model_copy(update={"stream_hold_s": 0.05})
    registry = registry.model_copy(update={"dispatch": held})

    async def job(d: Dispatcher) -> tuple[Any, ProviderError]:
        body = _body("a request longer than r's context window " * 5, stream=True)
        opened = await d.open_stream(plan_for("a", "r"), body)
        with pytest.raises(ProviderError) as caught:
            async for _ in opened.events:
                pass
        return opened, caught.value

    opened, refusal = h.run(registry, job)
    assert refusal.status == 400 and refusal.model == "r" and refusal.provider == "llmroute"
    assert (opened.model, opened.deployment) == ("a", "up")
    assert [attempt.split()[0] for attempt in opened.attempts] == ["a", "r"]
    assert "context window" in opened.attempts[1] and "via" not in opened.attempts[1]
    assert refusal.passed_over == opened.attempts
    assert h.upstream.models_called() == ["a?early=1&pause=0.3"]


def test_a_breaker_hears_how_streams_ended_not_only_that_they_opened(h: Harness) -> None:
    """Three streams that open and then break trip the breaker (3 failures in a row);
    a whole stream counts as a success when it ends, resetting the count; streams the
    client leaves count for nothing. The metrics hear how each stream ended."""
    models = "  a: {provider: up, model: 'a?mid=1'}\n  b: {provider: up, model: b}\n"
    models += "  c: {provider: up, model: 'c?mid=1&times=2'}"  # two broken, then whole
    registry = h.registry(models, "a")

    async def job(d: Dispatcher) -> list[str]:
        states = []

        def counted(model: str) -> dict[str, object]:
            return d.deployments.pool(model).deployments[0].breaker.snapshot()

        async def one(model: str, leave: bool = False) -> None:
            opened = await d.open_stream(plan_for(model), _body(stream=True))
            events = opened.events
            try:
                async for _ in events:
                    if leave:
                        break
            except ProviderError:
                pass
            finally:
                await events.aclose()  # type: ignore[attr-defined]
            states.append(d.deployments.pool(model).deployments[0].breaker.state.value)

        for _ in range(5):
            await one("b", leave=True)  # the client left: no failure, nothing opened
        assert counted("b")["window_requests"] == 0
        for _ in range(3):
            await one("c")
        assert counted("c")["consecutive_failures"] == 0  # reset by the whole stream
        assert counted("c")["window_failures"] == 2
        await one("a")
        await one("a")
        await one("b")  # another deployment: a's count stays
        await one("a")
        with pytest.raises(ProviderError):  # a is open now: not called
            await d.open_stream(plan_for("a"), _body(stream=True))
        return states

    metrics = GatewayMetrics()
    states = h.run(registry, job, metrics)
    assert states == ["closed"] * 8 + ["closed", "closed", "closed", "open"]
    assert h.upstream.models_called().count("a?mid=1") == 3

    def streams(model: str, outcome: str) -> float | None:
        labels = {"model": model, "deployment": "up", "outcome": outcome}
        return metrics.registry.get_sample_value("llmroute_upstream_streams_total", labels)

    assert streams("b", "cancelled") == 5 and streams("b", "ok") == 1
    assert streams("c", "error") == 2 and streams("c", "ok") == 1
    assert streams("a", "error") == 3 and streams("a", "ok") is None
    attempts = {"model": "a", "deployment": "up", "outcome": "ok"}
    assert metrics.registry.get_sample_value("llmroute_upstream_attempts_total", attempts) == 3


def test_a_mid_stream_failure_is_not_retried(h: Harness) -> None:
    models = "  a: {provider: up, model: 'a?mid=1'}\n  b: {provider: up, model: b}"
    registry = h.registry(models, "a")

    async def job(d: Dispatcher) -> list[bytes]:
        opened = await d.open_stream(plan_for("a", "b"), _body(stream=True))
        got: list[bytes] = []
        with pytest.raises(ProviderError):
            async for event in opened.events:
                got.append(event)
        return got

    assert len(h.run(registry, job)) == 2
    assert h.upstream.models_called() == ["a?mid=1"]


def test_an_error_sent_with_a_200_is_retried_then_falls_back(h: Harness) -> None:
    """OpenRouter answers 200 with an error object once the model has started (a stream:
    an error event first): a failure like a 502, retried, then handed to the fallback,
    not passed to the client as an answer."""
    models = "  a: {provider: up, model: 'a?inbody=502'}\n  b: {provider: up, model: b}"
    registry = h.registry(models, "a")
    served = h.run(registry, lambda d: d.complete(plan_for("a", "b"), _body()))
    assert served.model == "b" and served.data["choices"][0]["message"]["content"] == "echo: hi"
    assert len(h.upstream.calls_to("a?inbody=502")) == 3 and len(h.sleeps) == 2
    assert "upstream answered with error 502" in served.attempts[0]

    model, events = _streamed(h, registry)
    assert model == "b" and events[-1] == b"data: [DONE]\n\n"
    assert not any(b'"error"' in e for e in events)


@pytest.mark.parametrize(
    "fault",
    [
        "inbody=insufficient_quota",
        "inbody=type:insufficient_quota",  # the OpenAI API's type, without the code
        "inbody=insufficient_quota&early=1",  # after the role chunk, before any words
    ],
)
def test_a_stream_whose_account_is_out_of_credit_falls_back_saying_so(
    h: Harness, fault: str
) -> None:
    """A stream that opens with 200, then says ``insufficient_quota`` in an error event
    before its first words: the gateway's account out of credit, as the same refusal as
    a 429 that is not streamed (`ProviderMisconfigured`): not retried, the fallback
    answers, and the attempt says why. It was a plain 502, retried, its attempt saying
    only "answered with error 502"."""
    name = f"a?{fault}"
    models = f"  a: {{provider: up, model: '{name}'}}\n  b: {{provider: up, model: b}}"
    registry = h.registry(models, "a")

    async def job(d: Dispatcher) -> tuple[Opened, list[bytes]]:
        opened = await d.open_stream(plan_for("a", "b"), _body(stream=True))
        return opened, [e async for e in opened.events]

    opened, events = h.run(registry, job)
    assert opened.model == "b" and events[-1] == b"data: [DONE]\n\n"
    assert b'"error"' not in b"".join(events)
    assert h.upstream.models_called() == [name, "b"]  # not retried
    (attempt,) = opened.attempts
    assert attempt.startswith("a via up (") and "account with the provider is out of credits" in (
        attempt
    )


def test_a_keep_alive_comment_does_not_begin_a_stream(h: Harness) -> None:
    """OpenRouter's ``: OPENROUTER PROCESSING`` comes before the model answers: the
    error event after it still goes to the fallback, and a stream that does answer
    starts with its first chunk, not with the comment."""
    models = (
        "  a: {provider: up, model: 'a?ping=1&inbody=502'}\n  b: {provider: up, model: 'b?ping=1'}"
    )
    registry = h.registry(models, "a")

    model, events = _streamed(h, registry)
    assert model == "b" and events[0].startswith(b"data: {") and events[-1] == b"data: [DONE]\n\n"
    assert not any(e.startswith(b":") for e in events)


def test_an_error_right_after_the_role_chunk_still_falls_back(h: Harness) -> None:
    """The role-only chunk that opens a stream gives the client nothing: an error event
    right after it (before any words) hands the request to the fallback, which streams
    from its own first chunk."""
    models = "  a: {provider: up, model: 'a?inbody=503&early=1'}\n  b: {provider: up, model: b}"
    registry = h.registry(models, "a")

    model, events = _streamed(h, registry)
    assert model == "b" and sum(b'"role"' in e for e in events) == 1
    assert b'"content": "hi "' in b"".join(events) and b'"error"' not in b"".join(events)


def test_an_error_with_a_200_that_blames_the_request_is_the_clients(h: Harness) -> None:
    for fault in ("inbody=400", "inbody=old"):  # vLLM's error objects, new and old
        name = f"a?{fault}"
        registry = h.registry(
            f"  a: {{provider: up, model: '{name}'}}\n  b: {{provider: up, model: b}}", "a"
        )
        with pytest.raises(UpstreamRejected) as caught:
            h.run(registry, lambda d: d.complete(plan_for("a", "b"), _body()))
        assert caught.value.status == 400 and "bad" in str(caught.value)
        assert h.upstream.models_called()[-1] == name and "b" not in h.upstream.models_called()


def test_an_error_event_mid_stream_ends_it_as_a_broken_stream(h: Harness) -> None:
    """OpenRouter's mid-stream error chunk (``finish_reason: error``) after a word: the
    stream raises there, as a broken connection does, and nothing is retried."""
    models = "  a: {provider: up, model: 'a?inbody=502&late=1'}\n  b: {provider: up, model: b}"
    registry = h.registry(models, "a")

    async def job(d: Dispatcher) -> tuple[list[bytes], ProviderError]:
        opened = await d.open_stream(plan_for("a", "b"), _body(stream=True))
        got: list[bytes] = []
        with pytest.raises(ProviderError) as caught:
            async for event in opened.events:
                got.append(event)
        return got, caught.value

    got, error = h.run(registry, job)
    assert len(got) == 2 and b"partial" in got[1] and error.status == 502
    assert h.upstream.models_called() == ["a?inbody=502&late=1"]


def test_a_stream_closed_cleanly_midway_is_a_broken_stream(h: Harness) -> None:
    """No finish reason, no ``[DONE]``, then a clean end: the answer was cut short, so the
    stream raises at its end (dispatch ends the client's stream with an error event)
    instead of passing as whole; a whole stream does not."""
    models = "  a: {provider: up, model: 'a?truncate=1'}\n  b: {provider: up, model: b}"
    registry = h.registry(models, "a")

    async def job(d: Dispatcher) -> tuple[list[bytes], str, list[bytes]]:
        opened = await d.open_stream(plan_for("a", "b"), _body(stream=True))
        got: list[bytes] = []
        with pytest.raises(ProviderError) as caught:
            async for event in opened.events:
                got.append(event)
        whole = await d.open_stream(plan_for("b"), _body(stream=True))
        return got, str(caught.value), [e async for e in whole.events]

    got, error, whole = h.run(registry, job)
    assert len(got) == 2 and b"partial" in got[1] and "before its finish reason" in error
    assert whole[-1] == b"data: [DONE]\n\n"
    assert h.upstream.models_called() == ["a?truncate=1", "b"]


def test_a_stream_request_answered_with_json_is_a_failure(h: Harness) -> None:
    """A server that does not stream (a JSON completion) or sends its error as JSON with
    a 200: not passed on as if it were events; the fallback streams instead."""
    models = (
        "  a: {provider: up, model: 'a?nostream=1'}\n"
        "  c: {provider: up, model: 'c?inbody=429&nostream=1'}\n"
        "  b: {provider: up, model: b}"
    )
    registry = h.registry(models, "a")

    async def job(d: Dispatcher) -> tuple[str, list[str], ProviderError]:
        opened = await d.open_stream(plan_for("a", "b"), _body(stream=True))
        async for _ in opened.events:
            pass
        with pytest.raises(ProviderError) as caught:
            await d.open_stream(plan_for("c"), _body(stream=True))
        return opened.model, list(opened.attempts), caught.value

    model, attempts, limited = h.run(registry, job)
    assert model == "b"
    mislabelled = h.registry(
        "  a: {provider: up, model: 'a?jsonlabel=1'}\n  b: {provider: up, model: b}", "a"
    )
    model, events = _streamed(h, mislabelled)  # events labelled JSON: read as events
    assert model == "a" and b'"content": "hi "' in b"".join(events)
    assert events[-1] == b"data: [DONE]\n\n"
    assert "answered a stream request with JSON, not events" in attempts[0]
    assert "rate limited (429 in its answer)" in str(limited)  # its error, not "no events"


def test_a_context_length_error_goes_to_the_larger_model(h: Harness) -> None:
    models = (
        "  a: {provider: up, model: 'a?context=1', context_window: 8192}\n"
        "  mid: {provider: up, model: mid, context_window: 16000}\n"
        "  big: {provider: up, model: big, context_window: 200000}"
    )
    registry = h.registry(models, "a")
    policy = RoutePolicy(context_fallback="big")
    served = h.run(registry, lambda d: d.complete(plan_for("a", "mid", policy=policy), _body()))
    assert served.model == "big" and h.sleeps == []
    assert "context" in served.attempts[0]


def test_a_context_fallback_outside_the_plans_pool_is_not_tried(h: Harness) -> None:
    """A client key's pool bounds the context fallback too: the route's `big` is left
    out, the larger model still in the chain serves."""
    models = (
        "  a: {provider: up, model: 'a?context=1', context_window: 8192}\n"
        "  mid: {provider: up, model: mid, context_window: 16000}\n"
        "  big: {provider: up, model: big, context_window: 200000}"
    )
    registry = h.registry(models, "a")
    plan = replace(
        plan_for("a", "mid", policy=RoutePolicy(context_fallback="big")),
        pool=("a", "mid"),
    )
    served = h.run(registry, lambda d: d.complete(plan, _body()))
    assert served.model == "mid" and "big" not in h.upstream.models_called()


FILTERED = (
    "  a: {provider: up, model: 'a?filter=1'}\n"
    "  b: {provider: up, model: b}\n"
    "  guarded: {provider: up2, model: guarded}\n"
    "  strict: {provider: up2, model: 'strict?filter=1'}"
)


def test_a_content_filters_refusal_goes_to_the_content_fallback(h: Harness) -> None:
    """Azure's filter refused the prompt: the route's `content_fallback` (another
    provider) answers, at once and without a retry; the chain's own fallbacks are
    skipped (the same provider's filter would refuse them too)."""
    registry = h.registry(FILTERED, "a")
    plan = plan_for("a", "b", policy=RoutePolicy(fallback=("b",), content_fallback="guarded"))
    served = h.run(registry, lambda d: d.complete(plan, _body()))
    assert served.model == "guarded" and h.sleeps == []
    assert h.upstream.models_called() == ["a?filter=1"]
    assert h.upstream2.models_called() == ["guarded"]
    assert "content filter" in served.attempts[0]

    async def job(d: Dispatcher) -> str:
        opened = await d.open_stream(plan, _body(stream=True))
        assert [e async for e in opened.events][-1].strip() == b"data: [DONE]"
        return opened.model

    assert h.run(registry, job) == "guarded"


def test_without_a_content_fallback_the_refusal_is_the_clients_400(h: Harness) -> None:
    registry = h.registry(FILTERED, "a")
    plan = plan_for("a", "b", policy=RoutePolicy(fallback=("b",)))
    with pytest.raises(ContentRefused) as caught:
        h.run(registry, lambda d: d.complete(plan, _body()))
    assert caught.value.status == 400 and caught.value.code == "content_filter"
    assert caught.value.model == "a" and h.upstream.models_called() == ["a?filter=1"]


def test_a_content_fallback_that_refuses_too_or_is_outside_the_pool(h: Harness) -> None:
    registry = h.registry(FILTERED, "a")
    refusing = plan_for("a", policy=RoutePolicy(content_fallback="strict"))
    with pytest.raises(ContentRefused) as caught:
        h.run(registry, lambda d: d.complete(refusing, _body()))
    assert caught.value.model == "strict"  # tried once, then its own refusal stands
    assert h.upstream2.models_called() == ["strict?filter=1"]
    kept_out = replace(
        plan_for("a", "b", policy=RoutePolicy(content_fallback="guarded")), pool=("a", "b")
    )
    with pytest.raises(ContentRefused):
        h.run(registry, lambda d: d.complete(kept_out, _body()))
    assert "guarded" not in h.upstream2.models_called()


def test_an_answer_the_content_filter_withheld_goes_to_the_content_fallback(h: Harness) -> None:
    """Azure's output filter answers 200 with finish_reason content_filter: with a
    `content_fallback` (not tried yet) the request goes there, the withheld answer charged
    to its model's budget all the same; without one the answer is what the client gets."""
    models = (
        "  a: {provider: up, model: 'a?finish=content_filter',"
        " price: {input: 1, output: 1}, budget: {usd: 100, period: day}}\n"
        "  guarded: {provider: up2, model: guarded}"
    )
    registry = h.registry(models + "\n  down: {provider: up2, model: 'down?status=500'}", "a")
    plan = plan_for("a", policy=RoutePolicy(content_fallback="guarded"))

    async def job(d: Dispatcher) -> tuple[Any, float]:
        served = await d.complete(plan, _body())
        assert d._limits is not None
        return served, await d._limits.spent("budget:a", "day")

    served, spent = h.run(registry, job)
    assert served.model == "guarded" and "withheld" in served.attempts[0]
    assert h.upstream.models_called() == ["a?finish=content_filter"] and spent > 0
    plain = h.run(registry, lambda d: d.complete(plan_for("a"), _body()))
    assert plain.model == "a" and plain.data["choices"][0]["finish_reason"] == "content_filter"
    # the content fallback failed before: the filtered answer is the best there is
    tried = plan_for("down", "a", policy=RoutePolicy(content_fallback="down"))
    assert h.run(registry, lambda d: d.complete(tried, _body())).model == "a"


def test_an_over_long_request_skips_small_models_without_sending(h: Harness) -> None:
    models = (
        "  small: {provider: up, model: small, context_window: 100}\n"
        "  other: {provider: up, model: other, context_window: 100}\n"
        "  big: {provider: up, model: big, context_window: 200000}"
    )
    registry = h.registry(models, "small")
    served = h.run(
        registry, lambda d: d.complete(plan_for("small", "other", "big"), _body("x " * 400))
    )
    assert served.model == "big"
    assert h.upstream.models_called() == ["big"]


def test_a_chinese_prompt_too_long_for_the_small_model_goes_to_the_larger_one(
    h: Harness,
) -> None:
    """3,000 Chinese characters are about 3,000 tokens to hosted tokenizers; counted at
    four characters a token (750) they were sent to a 2,000-token model, which refuses
    them. They skip it unsent now, as English of that many tokens does."""
    models = (
        "  small: {provider: up, model: small, context_window: 2000}\n"
        "  big: {provider: up, model: big, context_window: 200000}"
    )
    registry = h.registry(models, "small")
    chinese = "季度报告显示大多数地区办事处都完成了目标。" * 150  # 3,150 characters
    served = h.run(registry, lambda d: d.complete(plan_for("small", "big"), _body(chinese)))
    assert served.model == "big" and h.upstream.models_called() == ["big"]

    async def job(d: Dispatcher) -> str:
        opened = await d.open_stream(plan_for("small", "big"), _body(chinese, stream=True))
        async for _ in opened.events:
            pass
        return opened.model

    assert h.run(registry, job) == "big" and "small" not in h.upstream.models_called()


def test_no_larger_model_is_a_context_error(h: Harness) -> None:
    registry = h.registry("  a: {provider: up, model: 'a?context=1', context_window: 8192}", "a")
    with pytest.raises(ContextWindowExceeded) as caught:
        h.run(registry, lambda d: d.complete(plan_for("a"), _body()))
    assert caught.value.code == "context_length_exceeded" and caught.value.model == "a"


def test_usage_is_priced_and_estimated_when_missing(h: Harness) -> None:
    models = (
        "  a: {provider: up, model: a, price: {input: 2, output: 8}}\n"
        "  n: {provider: up, model: 'n?nousage=1', price: {input: 2, output: 8}}"
    )
    registry = h.registry(models, "a")
    served = h.run(registry, lambda d: d.complete(plan_for("a"), _body()))
    usage = served.data["usage"]
    assert usage["prompt_tokens"] == 3 and usage["estimated"] is False
    assert usage["cost_usd"] == pytest.approx((3 * 2 + 3 * 8) / 1e6)
    served = h.run(registry, lambda d: d.complete(plan_for("n"), _body("hello there")))
    assert served.usage.estimated and served.data["usage"]["estimated"] is True
    assert served.usage.prompt_tokens > 0 and served.usage.completion_tokens > 0


def _stream_usage(h: Harness, model: str, include: bool) -> tuple[list[dict[str, Any]], Any]:
    models = f"  a: {{provider: up, model: '{model}', price: {{input: 2, output: 8}}}}"
    registry = h.registry(models, "a")
    body = _body(stream=True)
    if include:
        body["stream_options"] = {"include_usage": True}

    async def job(d: Dispatcher) -> tuple[list[dict[str, Any]], Any]:
        opened = await d.open_stream(plan_for("a"), body)
        events = [e async for e in opened.events]
        assert events[-1] == b"data: [DONE]\n\n"
        return [json.loads(e[6:]) for e in events[:-1]], opened.usage

    return h.run(registry, job)


def test_stream_usage_chunks_carry_the_cost(h: Harness) -> None:
    chunks, usage = _stream_usage(h, "a", include=True)
    assert chunks[-1]["usage"]["cost_usd"] == pytest.approx(30 / 1e6)
    assert usage.estimated is False


def test_stream_usage_is_estimated_and_added_when_asked_for(h: Harness) -> None:
    chunks, usage = _stream_usage(h, "a?nousage=1", include=True)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["estimated"] is True
    chunks, usage = _stream_usage(h, "a?nousage=1", include=False)
    assert all("usage" not in c for c in chunks)
    assert usage is not None and usage.estimated


def test_a_stream_is_charged_the_providers_count_when_the_client_asked_no_usage(
    h: Harness,
) -> None:
    """Most OpenAI SDK users never set `stream_options`: the gateway asks the upstream
    for the usage chunk anyway, prices the stream by it, and leaves it out for them."""
    chunks, usage = _stream_usage(h, "a", include=False)
    assert all("usage" not in c for c in chunks) and chunks[-1]["choices"]
    assert usage is not None and usage.estimated is False
    assert usage.cost_usd == pytest.approx(30 / 1e6)
    sent = h.upstream.requests[-1].body
    assert sent["stream_options"] == {"include_usage": True}


def test_a_server_refusing_the_usage_the_gateway_asked_for_gets_the_stream_as_sent(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Upgrading must not break a server that refuses `stream_options` (an older Azure
    API version): refused, the stream goes again without them, estimated, whoever asked
    (the gateway, a front, the client, who then gets an estimated usage chunk); later
    streams go without them at once, and the log says once which setting to give."""
    registry = h.registry("  a: {provider: up, model: 'a?unsupported=stream_options'}", "a")
    asked = {**_body(stream=True), "stream_options": {"include_usage": True}}

    async def job(d: Dispatcher) -> Any:
        out = []
        for body in (_body(stream=True), asked):
            opened = await d.open_stream(plan_for("a"), body)
            events = [e async for e in opened.events]
            assert events[-1] == b"data: [DONE]\n\n"
            out.append((opened.usage, events))
        return out

    with caplog.at_level("WARNING", logger="llmroute.dispatch"):
        (first, _), (second, events) = h.run(registry, job)
    assert first is not None and first.estimated and second is not None and second.estimated
    assert json.loads(events[-2][6:])["usage"]["estimated"] is True  # the client asked
    sent = [r.body for r in h.upstream.requests]
    assert ["stream_options" in b for b in sent] == [True, False, False]
    assert len([r for r in caplog.records if "drop_params" in r.getMessage()]) == 1


def test_a_model_refusing_stream_options_may_drop_them(h: Harness) -> None:
    models = "  a: {provider: up, model: a, drop_params: [stream_options]}"
    registry = h.registry(models, "a")

    async def job(d: Dispatcher) -> Any:
        opened = await d.open_stream(plan_for("a"), _body(stream=True))
        assert [e async for e in opened.events][-1] == b"data: [DONE]\n\n"
        return opened.usage

    usage = h.run(registry, job)
    assert "stream_options" not in h.upstream.requests[-1].body
    assert usage is not None and usage.estimated


IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


def _image_body(**extra: Any) -> dict[str, Any]:
    content = [{"type": "text", "text": "what is in this picture?"}, IMAGE]
    return {"messages": [{"role": "user", "content": content}], **extra}


VISION_MODELS = (
    "  text: {provider: up, model: text, vision: false}\n"
    "  seer: {provider: up, model: seer, vision: true}\n"
    "  other: {provider: up, model: other}\n"
    "  chat: {provider: up, model: chat, tools: false}"
)
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def test_images_skip_the_models_that_declare_no_vision(h: Harness) -> None:
    registry = h.registry(VISION_MODELS, "text")
    served = h.run(registry, lambda d: d.complete(plan_for("text", "seer"), _image_body()))
    assert served.model == "seer" and h.upstream.models_called() == ["seer"]
    assert len(served.attempts) == 1 and "vision: false" in served.attempts[0]
    assert h.sleeps == []


def test_a_text_request_is_served_by_a_model_without_vision(h: Harness) -> None:
    registry = h.registry(VISION_MODELS, "text")
    served = h.run(registry, lambda d: d.complete(plan_for("text", "seer"), _body()))
    assert served.model == "text" and served.attempts == ()


def test_an_image_stream_skips_them_too(h: Harness) -> None:
    registry = h.registry(VISION_MODELS, "text")

    async def job(d: Dispatcher) -> tuple[str, list[bytes]]:
        opened = await d.open_stream(plan_for("text", "other"), _image_body(stream=True))
        return opened.model, [event async for event in opened.events]

    model, events = h.run(registry, job)
    assert model == "other" and events[-1].strip() == b"data: [DONE]"
    assert h.upstream.models_called() == ["other"]


def test_no_model_taking_images_is_a_400_before_anything_is_sent(h: Harness) -> None:
    models = VISION_MODELS + "\n  text2: {provider: up, model: text2, vision: false}"
    registry = h.registry(models, "text")
    with pytest.raises(UnsupportedRequest) as caught:
        h.run(registry, lambda d: d.complete(plan_for("text", "text2"), _image_body()))
    assert caught.value.status == 400 and caught.value.code == "images_not_supported"
    message = caught.value.message
    assert "text: holds images" in message and "text2: holds images" in message
    assert h.upstream.models_called() == []


def test_tools_skip_the_models_that_declare_none(h: Harness) -> None:
    registry = h.registry(VISION_MODELS, "chat")
    served = h.run(registry, lambda d: d.complete(plan_for("chat", "other"), _body(tools=TOOLS)))
    assert served.model == "other" and h.upstream.models_called() == ["other"]
    assert "tools: false" in served.attempts[0]
    served = h.run(registry, lambda d: d.complete(plan_for("chat", "other"), _body()))
    assert served.model == "chat"


def test_a_model_taking_neither_images_nor_tools_says_both_at_once(h: Harness) -> None:
    """It said images_not_supported alone: the client fixed the image, then got another
    400 for its tools."""
    models = "  plain: {provider: up, model: plain, vision: false, tools: false}"
    registry = h.registry(models, "plain")
    with pytest.raises(UnsupportedRequest) as caught:
        h.run(registry, lambda d: d.complete(plan_for("plain"), _image_body(tools=TOOLS)))
    assert caught.value.code == "unsupported_request"
    assert "holds images and has tools" in caught.value.message
    assert h.upstream.models_called() == []


BEYOND_MODELS = (
    "  claude: {provider: an, model: claude-x}\n"
    "  claude2: {provider: an, model: claude-y}\n"
    "  other: {provider: up, model: other, vision: false}"
)


@pytest.mark.parametrize(
    "extra", [{"n": 2}, {"logprobs": True, "top_logprobs": 2}], ids=["n", "logprobs"]
)
def test_what_a_models_api_cannot_give_goes_to_the_next_model_unsent(
    h: Harness, extra: dict[str, Any]
) -> None:
    """Anthropic returns one choice and no logprobs: the router picked it, the client could
    not know, and the next model of the chain can answer, so it does (nothing reaches
    Anthropic; its base URL has no server)."""
    registry = h.registry(BEYOND_MODELS, "claude")
    served = h.run(registry, lambda d: d.complete(plan_for("claude", "other"), _body(**extra)))
    assert served.model == "other" and h.upstream.models_called() == ["other"]
    assert len(served.attempts) == 1 and served.attempts[0].startswith("claude via an (")

    async def job(d: Dispatcher) -> str:
        opened = await d.open_stream(plan_for("claude", "other"), _body(stream=True, **extra))
        assert [e async for e in opened.events][-1].strip() == b"data: [DONE]"
        return opened.model

    assert h.run(registry, job) == "other"


def test_a_model_alone_refuses_what_its_api_cannot_give_as_before(h: Harness) -> None:
    registry = h.registry(BEYOND_MODELS, "claude")
    with pytest.raises(BeyondModel, match="'n' = 2") as caught:
        h.run(registry, lambda d: d.complete(plan_for("claude"), _body(n=2)))
    assert isinstance(caught.value, UpstreamRejected) and caught.value.status == 400
    assert caught.value.model == "claude"
    error = gateway_error(caught.value, {"x-llmroute-model": "claude"})
    assert error.status == 400 and error.param == "n"  # the client hears which field


def test_a_chain_none_of_whose_models_can_take_it_is_one_400_unsent(h: Harness) -> None:
    registry = h.registry(BEYOND_MODELS, "claude")
    with pytest.raises(UnsupportedRequest) as caught:
        h.run(registry, lambda d: d.complete(plan_for("claude", "claude2"), _body(n=2)))
    assert caught.value.status == 400 and caught.value.code == "unsupported_parameter"
    assert caught.value.param == "n"
    assert "claude: 'n' = 2" in caught.value.message
    assert "claude2: 'n' = 2" in caught.value.message
    body = _image_body(n=2)
    with pytest.raises(UnsupportedRequest) as mixed:
        h.run(registry, lambda d: d.complete(plan_for("claude", "other"), body))
    assert mixed.value.code == "unsupported_request"
    assert h.upstream.models_called() == []


def test_a_malformed_request_is_not_handed_on(h: Harness) -> None:
    """A refusal any model would make is the client's 400 at once, not a tour of the
    chain."""
    registry = h.registry(BEYOND_MODELS, "claude")
    body = _body(tool_choice="sometimes", tools=TOOLS)
    with pytest.raises(UpstreamRejected, match="tool_choice") as caught:
        h.run(registry, lambda d: d.complete(plan_for("claude", "other"), body))
    assert not isinstance(caught.value, BeyondModel)
    assert h.upstream.models_called() == []


def test_a_chain_refusing_for_different_reasons_is_one_400(h: Harness) -> None:
    registry = h.registry(VISION_MODELS, "text")
    body = _image_body(tools=TOOLS)
    with pytest.raises(UnsupportedRequest) as caught:
        h.run(registry, lambda d: d.complete(plan_for("text", "chat"), body))
    assert caught.value.code == "unsupported_request"
    assert "text: holds images" in caught.value.message
    assert "chat: has tools" in caught.value.message


def test_a_models_params_fill_what_the_request_leaves_unset(h: Harness) -> None:
    models = (
        "  a: {provider: up, model: 'a?status=500', params: {temperature: 0.2}}\n"
        "  b: {provider: up, model: b, params: {temperature: 0.7, max_tokens: 100, top_k: 20,"
        " chat_template_kwargs: {enable_thinking: false, mode: x}}}"
    )
    registry = h.registry(models, "a")
    body = _body(temperature=0.9, chat_template_kwargs={"mode": "mine"})
    served = h.run(registry, lambda d: d.complete(plan_for("a", "b"), body))
    assert served.model == "b"
    sent_a = h.upstream.calls_to("a?status=500")[0].body
    assert sent_a["temperature"] == 0.9 and "max_tokens" not in sent_a  # a's own params only
    sent = h.upstream.calls_to("b")[0].body
    assert (sent["temperature"], sent["max_tokens"], sent["top_k"]) == (0.9, 100, 20)
    assert sent["chat_template_kwargs"] == {"enable_thinking": False, "mode": "mine"}
    assert body == _body(temperature=0.9, chat_template_kwargs={"mode": "mine"})  # untouched


def test_params_may_not_default_what_the_request_asks() -> None:
    from llmroute.errors import ConfigError

    text = BASE % {
        "url": "http://127.0.0.1:9",
        "url2": "http://127.0.0.1:9",
        "models": "  a: {provider: up, model: a, params: {messages: [], stream: true}}",
        "first": "a",
    }
    with pytest.raises(ConfigError) as caught:
        parse_registry(text, source="r.yaml")
    message = str(caught.value)
    assert "models.a.params.messages: 'messages' is the request's own" in message
    assert "models.a.params.stream" in message


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "2024-01-01", "{a: [1, .nan]}"])
def test_params_must_be_json_values(value: str) -> None:
    """Sent in every request: a value JSON cannot write would fail them all."""
    from llmroute.errors import ConfigError

    text = BASE % {
        "url": "http://127.0.0.1:9",
        "url2": "http://127.0.0.1:9",
        "models": f"  a: {{provider: up, model: a, params: {{seed: {value}}}}}",
        "first": "a",
    }
    with pytest.raises(ConfigError, match=r"models\.a\.params\.seed: not a JSON value"):
        parse_registry(text, source="r.yaml")


def test_params_may_have_number_keys() -> None:
    """``logit_bias`` maps token ids to biases: YAML reads the ids as numbers, which JSON
    writes as text."""
    text = BASE % {
        "url": "http://127.0.0.1:9",
        "url2": "http://127.0.0.1:9",
        "models": "  a: {provider: up, model: a, params: {logit_bias: {50256: -100}}}",
        "first": "a",
    }
    params = parse_registry(text, source="r.yaml").registry.models["a"].params
    assert json.dumps(params) == '{"logit_bias": {"50256": -100}}'


def test_a_routes_params_come_before_the_models(h: Harness) -> None:
    models = "  b: {provider: up, model: b, params: {temperature: 0.7, top_k: 20}}"
    registry = h.registry(models, "b")
    policy = RoutePolicy(params={"temperature": 0.0, "seed": 7})
    h.run(registry, lambda d: d.complete(plan_for("b", policy=policy), _body()))
    sent = h.upstream.calls_to("b")[-1].body
    assert (sent["temperature"], sent["seed"], sent["top_k"]) == (0.0, 7, 20)
    h.run(registry, lambda d: d.complete(plan_for("b", policy=policy), _body(temperature=1.2)))
    assert h.upstream.calls_to("b")[-1].body["temperature"] == 1.2  # the request's own wins


def test_a_max_tokens_past_the_models_cap_is_sent_as_the_cap(h: Harness) -> None:
    """The router picked `b`, whose API gives at most 100 tokens; the client asked 5000
    for whatever model it got: b is asked for 100 rather than refusing the request."""
    registry = h.registry("  b: {provider: up, model: b, max_output_tokens: 100}", "b")
    h.run(registry, lambda d: d.complete(plan_for("b"), _body(max_tokens=5000)))
    assert h.upstream.calls_to("b")[-1].body["max_tokens"] == 100


def test_an_embedding_models_params_fill_the_request(h: Harness) -> None:
    models = (
        "  a: {provider: up, model: a}\n"
        "  e: {provider: up, model: emb, kind: embedding, params: {dimensions: 8}}"
    )
    registry = h.registry(models, "a")
    h.run(registry, lambda d: d.embed("e", {"input": "hello"}))
    assert h.upstream.calls_to("emb")[-1].body["dimensions"] == 8
    h.run(registry, lambda d: d.embed("e", {"input": "hello", "dimensions": 4}))
    assert h.upstream.calls_to("emb")[-1].body["dimensions"] == 4


REASONER = "o4?unsupported=max_tokens,temperature"
FITTED = (
    f"  o: {{provider: up, model: '{REASONER}', params: {{max_tokens: 500}},"
    " rename_params: {max_tokens: max_completion_tokens}, drop_params: [temperature, top_p]}\n"
)


def test_a_parameter_a_routed_to_model_refuses_is_a_400_until_the_registry_fits_it(
    h: Harness,
) -> None:
    """The client cannot know the router will pick a reasoning model: its ``max_tokens``
    and ``temperature`` are that model's 400 (never fallen back) unless the model's
    `rename_params` / `drop_params` fit the body; the model after it still gets them."""
    bare = h.registry(
        f"  o: {{provider: up, model: '{REASONER}'}}\n  b: {{provider: up, model: b}}", "o"
    )
    body = _body(max_tokens=100, temperature=0.2)
    with pytest.raises(UpstreamRejected) as caught:
        h.run(bare, lambda d: d.complete(plan_for("o", "b"), body))
    assert "Unsupported parameter: 'max_tokens'" in caught.value.message
    assert h.upstream.calls_to("b") == []

    fitted = h.registry(FITTED + "  b: {provider: up, model: b}", "o")
    served = h.run(fitted, lambda d: d.complete(plan_for("o", "b"), body))
    assert served.model == "o"
    sent = h.upstream.calls_to(REASONER)[-1].body
    # the request's max_tokens renamed, and winning over the model's params under the old name
    assert sent["max_completion_tokens"] == 100
    assert "max_tokens" not in sent and "temperature" not in sent
    assert body == _body(max_tokens=100, temperature=0.2)  # untouched

    h.run(fitted, lambda d: d.complete(plan_for("o", "b"), _body()))
    assert h.upstream.calls_to(REASONER)[-1].body["max_completion_tokens"] == 500  # params


def test_a_fallback_gets_what_the_model_before_it_dropped(h: Harness) -> None:
    failing = FITTED.replace(REASONER, REASONER + "&status=500")
    registry = h.registry(failing + "  b: {provider: up, model: b}", "o")
    served = h.run(
        registry, lambda d: d.complete(plan_for("o", "b"), _body(temperature=0.2, top_p=0.9))
    )
    assert served.model == "b"
    sent = h.upstream.calls_to("b")[-1].body
    assert (sent["temperature"], sent["top_p"], sent.get("max_completion_tokens")) == (
        0.2,
        0.9,
        None,
    )


def test_a_stream_is_fitted_too(h: Harness) -> None:
    registry = h.registry(FITTED, "o")

    async def job(d: Dispatcher) -> list[bytes]:
        opened = await d.open_stream(
            plan_for("o"), _body(stream=True, max_tokens=20, temperature=0)
        )
        return [event async for event in opened.events]

    events = h.run(registry, job)
    assert events[-1] == b"data: [DONE]\n\n"
    sent = h.upstream.calls_to(REASONER)[-1].body
    assert sent["max_completion_tokens"] == 20 and "temperature" not in sent


def test_an_embedding_models_dropped_parameters(h: Harness) -> None:
    models = (
        "  a: {provider: up, model: a}\n"
        "  e: {provider: up, model: emb, kind: embedding, drop_params: [dimensions]}"
    )
    registry = h.registry(models, "a")
    h.run(registry, lambda d: d.embed("e", {"input": "hello", "dimensions": 4}))
    assert "dimensions" not in h.upstream.calls_to("emb")[-1].body


def _conversation(opening: str, *later: str) -> dict[str, Any]:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": opening}]
    for text in later:
        messages += [{"role": "assistant", "content": "ok"}, {"role": "user", "content": text}]
    return {"messages": messages}


def test_sticky_keeps_each_conversation_on_one_deployment(h: Harness) -> None:
    """Three turns of each of 12 conversations: every conversation on one deployment (its
    prefix cache), the conversations on both; a failing deployment hands its
    conversations over to the other."""
    models = (
        "  m:\n    model: m\n    balance: sticky\n"
        "    deployments: [{provider: up}, {provider: up2}]"
    )
    registry = h.registry(models, "m")

    async def job(d: Dispatcher) -> dict[int, set[str]]:
        where: dict[int, set[str]] = {}
        for n in range(12):
            for turn in range(3):
                body = _conversation(f"question {n}", *(f"more {t}" for t in range(turn)))
                served = await d.complete(plan_for("m"), body)
                where.setdefault(n, set()).add(served.deployment)
        return where

    where = h.run(registry, job)
    assert all(len(places) == 1 for places in where.values())
    assert {p for places in where.values() for p in places} == {"up", "up2"}
    failing = models.replace("{provider: up}", "{provider: up, model: 'm?status=500'}")
    where = h.run(h.registry(failing, "m"), job)
    assert all(places == {"up2"} for places in where.values())


def test_a_held_streams_record_says_the_gateways_verdict_on_the_later_models_as_is() -> None:
    """Every later model was over the key's budget: `_exhausted`'s verdict names no model,
    and the record said "None via llmroute (...)"."""
    from llmroute.errors import KeyBudgetReached

    async def nothing() -> AsyncIterator[bytes]:
        yield b""

    opened = dispatcher_module.Opened("a", "up", nothing())
    failure = ("a", ProviderError("up", "upstream answered with error 502", status=502))
    verdict = KeyBudgetReached("llmroute", "b: the key's budget is spent", status=429)
    dispatcher_module._ended_after(opened, failure, verdict)
    assert opened.attempts[-1] == "b: the key's budget is spent"
    assert opened.model == "a" and "None" not in " ".join(opened.attempts)


def test_a_reload_keeps_a_deployments_breaker_unless_it_or_its_settings_changed(
    h: Harness,
) -> None:
    """Every reload closed every breaker (each registry built its own): a dead upstream
    was called again after each edit, and the gauge said it was fine."""
    models = "  a: {provider: up, model: a}\n  b: {provider: up, model: b}"
    registry = h.registry(models, "a")
    first = Dispatcher(registry, build_providers(registry))
    breaker = first.deployments.pool("a").deployments[0].breaker
    for _ in range(3):
        breaker.record_failure()
    assert breaker.state.value == "open"
    edited = h.registry(models + "\n  c: {provider: up, model: c}", "b")  # an unrelated edit
    second = Dispatcher(edited, build_providers(edited), replacing=first)
    assert second.deployments.pool("a").deployments[0].breaker is breaker  # still open
    moved = h.registry("  a: {provider: up2, model: a}\n  b: {provider: up, model: b}", "a")
    third = Dispatcher(moved, build_providers(moved), replacing=second)
    assert third.deployments.pool("a").deployments[0].breaker.state.value == "closed"
    stricter = h.registry(models, "a")
    settings = stricter.dispatch.breaker.model_copy(update={"failures": 5})
    stricter = stricter.model_copy(
        update={"dispatch": stricter.dispatch.model_copy(update={"breaker": settings})}
    )
    fourth = Dispatcher(stricter, build_providers(stricter), replacing=second)
    assert fourth.deployments.pool("a").deployments[0].breaker is not breaker
    # its provider mended (a longer timeout, a new key variable): the breaker starts afresh
    provider = edited.providers["up"].model_copy(update={"timeout_s": 120.0})
    mended = edited.model_copy(update={"providers": {**edited.providers, "up": provider}})
    fifth = Dispatcher(mended, build_providers(mended), replacing=second)
    assert fifth.deployments.pool("a").deployments[0].breaker.state.value == "closed"


@pytest.mark.parametrize(("read", "fault"), [(0, "pause"), (1, "pause"), (0, "ttft")])
def test_a_thinking_stream_closed_before_its_words_stops_the_read_waiting_on_it(
    h: Harness, read: int, fault: str
) -> None:
    """A model that thinks past the stream's hold (`stream_hold_s`): the stream is
    handed over with a read still waiting on the upstream. `Opened.aclose` before its
    words were read (the client left as the headers went out, or after the role chunk)
    stops that read and closes the upstream connection then, not once the model says
    its first words, minutes later for a reasoning model. The same for one silent
    before its first event (``ttft``)."""
    tag = f"think-{random.Random().getrandbits(32):08x}?{fault}=1"
    registry = h.registry(f"  a: {{provider: up, model: '{tag}'}}", "a")
    held = registry.dispatch.model_copy(update={"stream_hold_s": 0.05})
    registry = registry.model_copy(update={"dispatch": held})

    async def job(d: Dispatcher) -> list[asyncio.Task[Any]]:
        opened = await d.open_stream(plan_for("a"), _body(stream=True))
        events = opened.events
        for _ in range(read):
            await anext(events)
        await opened.aclose()
        await asyncio.sleep(0.1)
        return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    assert h.run(registry, job) == []  # no read left waiting on the model
    for _ in range(60):  # the fake upstream notices as it writes, after its pause
        if any(model == tag for model, _ in h.upstream.cut):
            break
        time.sleep(0.05)
    assert any(model == tag for model, _ in h.upstream.cut)  # its connection closed


def test_closing_waits_for_the_give_backs_of_callers_that_left(h: Harness) -> None:
    """A caller cancelled twice leaves its give-back (a slot, a hold) running on its own;
    closing the dispatcher waits for it before closing the connections it goes over
    (which left the slot taken for its lease)."""
    registry = h.registry("  a: {provider: up, model: a}", "a")
    given_back: list[str] = []

    async def give_back() -> None:
        await asyncio.sleep(0.2)
        given_back.append("slot")

    async def job(dispatcher: Dispatcher) -> None:
        caller = asyncio.ensure_future(settled(give_back(), dispatcher.limits, remote=True))
        await asyncio.sleep(0)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller

    h.run(registry, job)
    assert given_back == ["slot"]


def test_a_context_fallback_refusing_after_the_hold_is_not_put_next_again(
    h: Harness,
) -> None:
    """The context fallback `cf` (no declared window), refusing the request as too long
    after the hand-over, hands it on to `b`, declared larger, which the gateway finds
    too small: the stream ends with that refusal, as within the hold, rather than `b`'s
    refusal putting `cf`, tried already, next again (over and over, never ending)."""
    models = (
        "  a: {provider: up, model: 'a?delay=0.5&context=1'}\n"
        "  b: {provider: up, model: b, context_window: 50}\n"
        "  cf: {provider: up2, model: 'cf?delay=0.5&context=1'}"
    )
    plan = plan_for("a", "b", policy=RoutePolicy(context_fallback="cf"))

    async def job(d: Dispatcher) -> ContextWindowExceeded:
        opened = await d.open_stream(plan, _body("word " * 300, stream=True))
        with pytest.raises(ContextWindowExceeded) as caught:
            async with asyncio.timeout(10):  # the old code never ended the stream
                async for _ in opened.events:
                    pass
        assert opened.model == "cf", opened.attempts  # the last model called
        assert [a.split()[0] for a in opened.attempts] == ["a", "cf", "b"]
        return caught.value

    error = h.run(_silent(h, models, 0.2), job)
    assert error.status == 400 and "context window of 50" in error.message
    assert h.upstream.models_called() == ["a?delay=0.5&context=1"]
    assert h.upstream2.models_called() == ["cf?delay=0.5&context=1"]


def test_a_deployment_failed_within_the_hold_stays_passed_over_after_the_hand_over(
    h: Harness,
) -> None:
    """The model's first deployment fails within the hold (a 503 at once), its second is
    handed over silent, then fails with a 503 before its first event: the try goes on to
    the third, passing over both, as within the hold (a try calls each deployment once).
    The old code passed over only the one that failed after the hand-over, so the first
    was called again in the same try."""
    tag = uuid.uuid4().hex[:8]
    fast, slow, fine = f"m-{tag}?status=503", f"m-{tag}?delay=0.4&status=503", f"m-{tag}"
    models = (
        "  a:\n    model: m\n    balance: weighted\n    deployments:\n"
        f"      - {{provider: up, model: '{fast}', weight: 1000000}}\n"
        f"      - {{provider: up2, model: '{slow}', weight: 1000}}\n"
        f"      - {{provider: up, model: '{fine}', weight: 1}}\n"
        "  b: {provider: up, model: b}"
    )
    registry = _silent(h, models)

    async def job(d: Dispatcher) -> tuple[Any, list[bytes]]:
        opened = await d.open_stream(plan_for("a", "b"), _body(stream=True))
        assert opened.deployment == "up2"  # handed over before its 503
        return opened, [e async for e in opened.events]

    opened, events = h.run(registry, job)
    assert _text_of(events) == ({fine}, "echo: hi ") and opened.model == "a"
    assert h.upstream.models_called() == [fast, fine]
    assert h.upstream2.models_called() == [slow]
    assert h.sleeps == [] and opened.attempts == ()


def test_deployments_failing_in_turn_after_the_hold_go_on_to_the_models_next_try(
    h: Harness,
) -> None:
    """Both deployments of `a` failing with a 503 after the hand-over, try after try (a
    breaker that does not open): each try passes over both, as within the hold, then
    backs off to the next; after the last, `b` answers in the same stream. The old code
    passed over only the last one, so the two took turns on the first try for ever."""
    tag = uuid.uuid4().hex[:8]
    models = (
        "  a:\n    model: m\n    deployments:\n"
        f"      - {{provider: up, model: 'm-{tag}?delay=0.4&status=503'}}\n"
        f"      - {{provider: up2, model: 'm-{tag}?delay=0.4&status=503'}}\n"
        "  b: {provider: up, model: b}"
    )
    registry = _silent(h, models)
    patient = registry.dispatch.breaker.model_copy(update={"failures": 1000})
    dispatch = registry.dispatch.model_copy(update={"breaker": patient})
    registry = registry.model_copy(update={"dispatch": dispatch})

    async def job(d: Dispatcher) -> tuple[Any, list[bytes]]:
        opened = await d.open_stream(plan_for("a", "b"), _body(stream=True))
        async with asyncio.timeout(10):  # the old code never ended the stream
            return opened, [e async for e in opened.events]

    opened, events = h.run(registry, job)
    assert _text_of(events) == ({"b"}, "echo: hi ") and opened.model == "b"
    failing = [f"m-{tag}?delay=0.4&status=503"] * 3  # each try of the model, once
    assert h.upstream.models_called() == [*failing, "b"]
    assert h.upstream2.models_called() == failing
    assert len(h.sleeps) == 2  # the backoffs between the tries


def test_a_held_stream_whose_models_were_at_a_limit_or_rate_limited_is_a_503(
    h: Harness,
) -> None:
    """`x` is at its rpm limit (passed over within the hold), `a` is handed over silent
    and answers 429, then `b` 429: every model unavailable, a 503 with the soonest
    wait, as a request not streamed gets. It was a 502: the later models' 429 was
    taken for the status of them all, and `x`'s limit is not a 429."""
    models = "  x: {provider: up, model: 'x', rpm: 1}\n"
    models += "  a: {provider: up, model: 'a?delay=0.3&status=429&retry_after=3'}\n"
    models += "  b: {provider: up, model: 'b?status=429&retry_after=2'}"
    registry = _silent(h, models)
    plan = plan_for("x", "a", "b", policy=RoutePolicy(retries=0))
    # x's wait is what is left of the wall clock's minute: within its last seconds it is
    # sooner than b's 2 s (a CI run read 0.13), so the test starts in a minute's first part
    if (into := time.time() % 60) > 50:
        time.sleep(60.2 - into)

    async def job(d: Dispatcher) -> tuple[ProviderError, ProviderError]:
        await d.complete(plan_for("x"), _body())  # x's one request this minute
        with pytest.raises(ProviderError) as unstreamed:
            await d.complete(plan_for("x", "b", policy=RoutePolicy(retries=0)), _body())
        opened = await d.open_stream(plan, _body(stream=True))
        assert opened.model == "a"  # handed over silent after x was passed over
        with pytest.raises(ProviderError) as caught:
            async for _ in opened.events:
                pass
        return unstreamed.value, caught.value

    unstreamed, error = h.run(registry, job)
    assert isinstance(unstreamed, AllFallbacksFailed) and unstreamed.status == 503
    assert isinstance(error, AllFallbacksFailed) and error.status == 503
    assert [attempt.split()[0] for attempt in error.attempts] == ["x", "a", "b"]
    assert error.retry_after_s == 2.0


def test_a_held_stream_whose_models_all_answered_503_with_a_wait_is_a_503(h: Harness) -> None:
    """`x` answers 503 within the hold, `a` is handed over silent and answers 503, then
    `b`: each asked for a wait, so every model was unavailable, the 503 with the soonest
    wait (`a`'s, after the hand-over) that a request not streamed gets (one rule for
    both, `status_of`)."""
    models = "  x: {provider: up, model: 'x?status=503&retry_after=90'}\n"
    models += "  a: {provider: up, model: 'a?delay=0.3&status=503&retry_after=30'}\n"
    models += "  b: {provider: up, model: 'b?status=503&retry_after=60'}"
    error = _held_stream_error(h, models, "x", "a", "b")
    assert isinstance(error, AllFallbacksFailed) and error.status == 503
    assert [attempt.split()[0] for attempt in error.attempts] == ["x", "a", "b"]
    assert error.retry_after_s == 30.0
    assert gateway_error(error).response().headers["retry-after"] == "30"


def test_a_breaker_its_own_retries_opened_says_what_they_got(h: Harness) -> None:
    """The request's own tries open the model's breaker (three 500s, the threshold): its
    attempt says the 500 they got before the breaker stopped the last try, not only that
    the breaker was open (which hides why)."""
    registry = h.registry("  a: {provider: up, model: 'a?status=500'}", "a")
    plan = plan_for("a", policy=RoutePolicy(retries=3))
    with pytest.raises(AllFallbacksFailed) as caught:
        h.run(registry, lambda d: d.complete(plan, _body()))
    assert len(h.upstream.calls_to("a?status=500")) == 3
    (attempt,) = caught.value.attempts
    assert attempt.startswith("a via up (") and "500" in attempt, attempt
    assert attempt.endswith("; then circuit open after recent failures; not called)"), attempt
    answer = gateway_error(caught.value)
    assert answer.status == 503 and "retry-after" in answer.headers  # as the breaker says
    assert json.loads(bytes(answer.response().body))["error"]["attempts"] == [attempt]


def test_a_request_safety_sent_to_a_guarded_model_goes_to_no_policy_fallback(
    h: Harness,
) -> None:
    """Safety rerouted it to a guarded model, which the plan keeps alone
    (docs/safety.md: no fallback, so its text never reaches an unguarded model): the
    route's (or the default's) `content_fallback` and `context_fallback` are not tried
    when the guarded model refuses it for content or length; its refusal stands."""
    models = (
        "  guard: {provider: up, model: 'guard?filter=1', context_window: 8192}\n"
        "  open: {provider: up2, model: open, context_window: 200000}\n"
        "  wide: {provider: up2, model: wide, context_window: 200000}\n"
        "  held: {provider: up, model: 'held?finish=content_filter'}"
    )
    registry = h.registry(models, "guard")
    routed = SafetyOutcome("standard", "route", fired=("pii:EMAIL",), model="guard")
    policy = RoutePolicy(content_fallback="open", context_fallback="wide")
    plan = plan_for("guard", policy=policy, safety=routed)
    with pytest.raises(ContentRefused):
        h.run(registry, lambda d: d.complete(plan, _body()))
    long = _body("word " * 40_000)
    with pytest.raises(ContextWindowExceeded):
        h.run(registry, lambda d: d.complete(plan, long))
    withheld = SafetyOutcome("standard", "route", fired=("pii:EMAIL",), model="held")
    held = plan_for("held", policy=policy, safety=withheld)
    served = h.run(registry, lambda d: d.complete(held, _body()))
    assert served.model == "held"  # the filtered answer stands
    assert served.data["choices"][0]["finish_reason"] == "content_filter"
    assert h.upstream2.models_called() == []
    # the same refusals of a request that is not guarded go to the policy's fallbacks
    unguarded = replace(plan, decision=replace(plan.decision, safety=None))
    assert h.run(registry, lambda d: d.complete(unguarded, _body())).model == "open"
    assert h.run(registry, lambda d: d.complete(unguarded, long)).model == "wide"


def test_a_large_request_body_is_sent_whole_on_each_retry_and_fallback(h: Harness) -> None:
    """A body past 1 MiB goes as a `BytesIO` (read once as it is sent): each try (the
    same model again after a 500, then a fallback, plain and streamed) sends all of it,
    not what an earlier try left unread."""
    models = (
        "  a: {provider: up, model: 'a?status=500&times=1'}\n"
        "  s: {provider: up, model: 's?status=500&times=1'}\n"
        "  down: {provider: up, model: 'down?status=500'}\n"
        "  b: {provider: up2, model: b}"
    )
    registry = h.registry(models, "a")
    text = "z" * (2 << 20)
    served = h.run(registry, lambda d: d.complete(plan_for("a"), _body(text)))
    assert served.model == "a"
    served = h.run(registry, lambda d: d.complete(plan_for("down", "b"), _body(text)))
    assert served.model == "b"

    async def job(d: Dispatcher) -> str:
        opened = await d.open_stream(plan_for("s"), _body(text, stream=True))
        assert [e async for e in opened.events][-1].strip() == b"data: [DONE]"
        return opened.model

    assert h.run(registry, job) == "s"
    sent = [*h.upstream.requests, *h.upstream2.requests]
    assert [r.body["model"] for r in sent] == [
        "a?status=500&times=1", "a?status=500&times=1", *["down?status=500"] * 3,
        "s?status=500&times=1", "s?status=500&times=1", "b",
    ]  # fmt: skip
    assert all(r.body["messages"][0]["content"] == text for r in sent)
