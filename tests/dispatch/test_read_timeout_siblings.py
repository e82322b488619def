"""A deployment that took the request and then said nothing within its timeout hands the
request to its model's other deployment (another server, which may be healthy) before
the fallback model, as a refused connection or a 503 does: it went to the fallback at
once, passing over a healthy sibling. Against real fake upstreams on 127.0.0.1: one
that sleeps past the timeout, one healthy sibling.

Only before anything of the answer reached the client: a stream that timed out after
its first words ends broken, its sibling not called. A try that timed out is not
retried on its model (timeouts never are): a sibling's 503 after the timeout goes to
the fallback, not back to the deployment that timed out after a backoff."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from fake_upstream import FakeUpstream, fake_upstream
from plans import plan_for

from llmroute.dispatch import Dispatcher
from llmroute.dispatch.dispatcher import Attempt
from llmroute.errors import AllFallbacksFailed, ProviderError, ProviderTimeout
from llmroute.providers import build_providers
from llmroute.registry import parse_registry
from llmroute.registry.schema import Registry

T = TypeVar("T")

REGISTRY = """
encoder: builtin:static
providers:
  up: {kind: openai, base_url: "%(url)s", timeout_s: 5}
  up2: {kind: openai, base_url: "%(url2)s", timeout_s: 5}
models:
  a:
    model: m
    %(limits)s
    deployments:
      - {provider: up, model: '%(slow)s', weight: 1000000}
      - {provider: up2, model: '%(sibling)s', weight: 1}
  b: {provider: up2, model: 'b-%(tag)s'}
routes:
  - {name: r, examples: [hello], target: a}
default: {target: a}
dispatch:
  stream_hold_s: %(hold)s
  retries: {attempts: 2, backoff_s: 0.5, max_backoff_s: 4}
  breaker: {failures: 3, cooldown_s: 30, window_s: 60, min_requests: 100}
"""


@dataclass
class Told:
    """Each call as the observer heard it: model, deployment, outcome, what failed; and
    the base URL each was sent to."""

    calls: list[tuple[str, str, str, str]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    fallbacks: list[tuple[str, str]] = field(default_factory=list)
    retries: list[str] = field(default_factory=list)

    def on_attempt(self, attempt: Attempt) -> None:
        error = attempt.error
        said = error.message if isinstance(error, ProviderError) else ""
        self.calls.append((attempt.model, attempt.provider, attempt.outcome, said))
        self.urls.append(attempt.base_url)

    def on_retry(self, model: str, delay_s: float) -> None:
        self.retries.append(model)

    def on_fallback(self, route: str, model: str, next_model: str) -> None:
        self.fallbacks.append((model, next_model))


class Clock:
    """The breakers' clock, standing still: no cooldown ends during a test."""

    def __call__(self) -> float:
        return 1000.0


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    with fake_upstream() as one, fake_upstream() as two:
        yield one, two


@dataclass
class Case:
    upstreams: tuple[FakeUpstream, FakeUpstream]
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    sleeps: list[float] = field(default_factory=list)

    def registry(self, slow: str, sibling: str = "", *, limits: str, hold: float = 5) -> Registry:
        one, two = self.upstreams
        text = REGISTRY % {
            "url": one.url,
            "url2": two.url,
            "slow": f"m-{self.tag}?{slow}",
            "sibling": f"m-{self.tag}{'?' + sibling if sibling else ''}",
            "tag": self.tag,
            "limits": limits,
            "hold": hold,
        }
        return parse_registry(text).registry

    def calls(self, upstream: int) -> list[str]:
        """The upstream models this test's requests asked `upstream` (0 or 1) for."""
        asked = self.upstreams[upstream].models_called()
        return [m.split("?")[0].removesuffix(f"-{self.tag}") for m in asked if self.tag in m]

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def run(self, registry: Registry, job: Callable[[Dispatcher], Awaitable[T]], told: Told) -> T:
        async def main() -> T:
            dispatcher = Dispatcher(
                registry,
                build_providers(registry),
                rng=random.Random(7),
                clock=Clock(),
                sleep=self._sleep,
                observer=told,
            )
            try:
                return await job(dispatcher)
            finally:
                await dispatcher.aclose()

        try:
            return asyncio.run(main())
        finally:
            self._recorded(told)

    def _recorded(self, told: Told) -> None:
        """Wait until each upstream has recorded as many of this test's requests as the
        dispatcher made calls to it. The server records a request in its own thread once
        it reads it, and a call the client gave up on (its timeout) has no answer to
        wait for: under load the test read `calls` before that thread came to it (a
        0.2 s timeout, ``calls(0) == []``)."""
        deadline = time.monotonic() + 10
        for index, upstream in enumerate(self.upstreams):
            made = sum(url.rstrip("/") == upstream.url.rstrip("/") for url in told.urls)
            while len(self.calls(index)) < made and time.monotonic() < deadline:
                time.sleep(0.01)


@pytest.fixture
def case(upstreams: tuple[FakeUpstream, FakeUpstream]) -> Case:
    return Case(upstreams)


def _body(stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}
    return {**body, "stream": True} if stream else body


def _text(events: list[bytes]) -> str:
    chunks = [json.loads(e[6:]) for e in events if e.startswith(b"data: {")]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def test_a_read_timeout_goes_to_the_sibling_deployment_before_the_fallback(case: Case) -> None:
    registry = case.registry("delay=3", limits="timeout_s: 0.3")
    told = Told()
    served = case.run(registry, lambda d: d.complete(plan_for("a", "b"), _body()), told)
    assert served.model == "a" and served.deployment == "up2"
    assert served.data["choices"][0]["message"]["content"] == "echo: hi"
    assert served.attempts == ()  # the model answered: no failure to list
    assert told.calls == [
        ("a", "up", "timeout", "no answer within 0.3s"),
        ("a", "up2", "ok", ""),
    ]
    assert told.fallbacks == [] and told.retries == [] and case.sleeps == []  # at once
    assert case.calls(0) == ["m"] and case.calls(1) == ["m"]  # b never called


def test_a_stream_whose_first_token_times_out_within_the_hold_goes_to_the_sibling(
    case: Case,
) -> None:
    """Nothing was sent to the client yet (the stream is held until its first words)."""
    registry = case.registry("ttft=3", limits="first_token_timeout_s: 0.3")
    told = Told()

    async def job(d: Dispatcher) -> tuple[Any, list[bytes]]:
        opened = await d.open_stream(plan_for("a", "b"), _body(stream=True))
        return opened, [e async for e in opened.events]

    opened, events = case.run(registry, job, told)
    assert opened.model == "a" and opened.deployment == "up2" and opened.attempts == ()
    assert _text(events) == "echo: hi " and events[-1] == b"data: [DONE]\n\n"
    assert told.calls == [
        ("a", "up", "timeout", "no first token within 0.3s"),
        ("a", "up2", "ok", ""),
    ]
    assert told.fallbacks == [] and case.calls(1) == ["m"]


def test_a_stream_silent_after_its_opening_within_the_hold_goes_to_the_sibling(
    case: Case,
) -> None:
    """Its role-only opening came, then nothing within `timeout_s`: held, the opening
    had not gone out, so the sibling's answer (its own opening first) is the stream."""
    registry = case.registry("pause=3", limits="timeout_s: 0.3")
    told = Told()

    async def job(d: Dispatcher) -> tuple[Any, list[bytes]]:
        opened = await d.open_stream(plan_for("a", "b"), _body(stream=True))
        return opened, [e async for e in opened.events]

    opened, events = case.run(registry, job, told)
    assert opened.model == "a" and opened.deployment == "up2" and opened.attempts == ()
    assert _text(events) == "echo: hi " and events[-1] == b"data: [DONE]\n\n"
    assert [c[:3] for c in told.calls] == [("a", "up", "timeout"), ("a", "up2", "ok")]


def test_a_stream_handed_over_silent_whose_first_token_times_out_goes_to_the_sibling(
    case: Case,
) -> None:
    """Handed over before its first event (the client has the status line and keep-alives,
    nothing of an answer): the sibling answers in the same stream, as within the hold.
    (It went to the next model, passing over the healthy sibling.)"""
    # The model's first-token limit is the healthy sibling's too: it must run out on the
    # slow deployment after the hand-over (0.05 s) and before its first token (3 s), and
    # not on the sibling. At 0.4 s the sibling's first token came at 0.48 s under load
    # (3 CPU burners), timing it out too: the fallback answered (model b).
    registry = case.registry("ttft=3", limits="first_token_timeout_s: 1", hold=0.05)
    told = Told()

    async def job(d: Dispatcher) -> tuple[Any, list[bytes]]:
        opened = await d.open_stream(plan_for("a", "b"), _body(stream=True))
        assert opened.deployment == "up"  # handed over before its limit ran out
        return opened, [e async for e in opened.events]

    opened, events = case.run(registry, job, told)
    assert opened.model == "a" and opened.deployment == "up2" and opened.attempts == ()
    assert _text(events) == "echo: hi " and events[-1] == b"data: [DONE]\n\n"
    assert [c[:3] for c in told.calls] == [("a", "up", "timeout"), ("a", "up2", "ok")]
    assert told.fallbacks == [] and case.sleeps == [] and case.calls(1) == ["m"]


def test_a_stream_that_times_out_after_its_first_words_does_not_go_to_the_sibling(
    case: Case,
) -> None:
    """Words reached the client: the stream ends with the timeout, as before."""
    registry = case.registry("stall=3", limits="timeout_s: 0.3")
    told = Told()

    async def job(d: Dispatcher) -> tuple[list[bytes], ProviderError]:
        opened = await d.open_stream(plan_for("a", "b"), _body(stream=True))
        got: list[bytes] = []
        with pytest.raises(ProviderError) as caught:
            async for event in opened.events:
                got.append(event)
        return got, caught.value

    got, error = case.run(registry, job, told)
    assert _text(got).startswith("echo:") and isinstance(error, ProviderTimeout)
    assert case.calls(0) == ["m"] and case.calls(1) == []  # neither sibling nor fallback


def test_a_try_that_timed_out_is_not_retried_when_the_sibling_fails_too(case: Case) -> None:
    """The sibling's 503 would have the model retried after a backoff, calling the
    deployment that timed out again: the timeout ends the try (timeouts are not
    retried), and the fallback answers at once."""
    registry = case.registry("delay=3", "status=503", limits="timeout_s: 0.3")
    told = Told()
    served = case.run(registry, lambda d: d.complete(plan_for("a", "b"), _body()), told)
    assert served.model == "b"
    assert served.attempts == ("a via up (no answer within 0.3s)",)
    assert [c[:3] for c in told.calls] == [
        ("a", "up", "timeout"),
        ("a", "up2", "error"),
        ("b", "up2", "ok"),
    ]
    assert told.retries == [] and case.sleeps == []
    assert case.calls(0) == ["m"] and case.calls(1) == ["m", "b"]


def test_every_deployment_timing_out_is_a_504_naming_the_timeout(case: Case) -> None:
    registry = case.registry("delay=3", "delay=3", limits="timeout_s: 0.2")
    told = Told()
    with pytest.raises(AllFallbacksFailed) as caught:
        case.run(registry, lambda d: d.complete(plan_for("a"), _body()), told)
    assert caught.value.status == 504
    assert [c[1:3] for c in told.calls] == [("up", "timeout"), ("up2", "timeout")]
    assert case.calls(0) == ["m"] and case.calls(1) == ["m"]  # each once, no retry


def test_a_deployment_whose_breaker_opened_on_timeouts_is_not_called(case: Case) -> None:
    """Its breaker counts each timeout; once open (three failures), requests go to the
    sibling without waiting on it."""
    registry = case.registry("delay=3", limits="timeout_s: 0.2")
    told = Told()

    async def job(d: Dispatcher) -> list[str]:
        return [(await d.complete(plan_for("a"), _body())).deployment for _ in range(4)]

    assert case.run(registry, job, told) == ["up2"] * 4
    assert case.calls(0) == ["m"] * 3 and case.calls(1) == ["m"] * 4


THREE = """
encoder: builtin:static
providers:
  up: {kind: openai, base_url: "%(url)s", timeout_s: 5}
  up2: {kind: openai, base_url: "%(url2)s", timeout_s: 5}
  up3: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  a:
    model: m
    %(limits)s
    deployments:
      - {provider: up, model: 'm-%(tag)s?%(slow)s', weight: 1000000}
      - {provider: up2, model: 'm-%(tag)s?%(slow)s', weight: 1000}
      - {provider: up3, model: 'm-%(tag)s', weight: 1}
  b: {provider: up2, model: 'b-%(tag)s'}
routes:
  - {name: r, examples: [hello], target: a}
default: {target: a}
dispatch:
  stream_hold_s: %(hold)s
  retries: {attempts: 2, backoff_s: 0.5, max_backoff_s: 4}
  breaker: {failures: 3, cooldown_s: 30, window_s: 60, min_requests: 100}
"""


def _three(case: Case, slow: str, limits: str, hold: float = 5) -> Registry:
    one, two = case.upstreams
    values = {"url": one.url, "url2": two.url, "tag": case.tag, "slow": slow}
    return parse_registry(THREE % {**values, "limits": limits, "hold": hold}).registry


def test_a_second_read_timeout_in_a_try_goes_to_the_fallback(case: Case) -> None:
    """Two servers slow on one request say the model is slow (or the request is): the
    fallback answers, not a third deployment after a third wait (a model of N stalled
    deployments held the request N times its timeout)."""
    registry = _three(case, "delay=3", "timeout_s: 0.3")
    told = Told()
    served = case.run(registry, lambda d: d.complete(plan_for("a", "b"), _body()), told)
    assert served.model == "b"
    assert [c[:3] for c in told.calls] == [
        ("a", "up", "timeout"),
        ("a", "up2", "timeout"),
        ("b", "up2", "ok"),
    ]
    assert told.retries == [] and case.sleeps == []


def test_a_stream_handed_over_after_a_timeout_timing_out_goes_to_the_fallback(
    case: Case,
) -> None:
    """The same when the second timeout comes after a silent stream's hand-over."""
    registry = _three(case, "ttft=3", "first_token_timeout_s: 0.4", hold=0.05)
    told = Told()

    async def job(d: Dispatcher) -> tuple[Any, list[bytes]]:
        opened = await d.open_stream(plan_for("a", "b"), _body(stream=True))
        return opened, [e async for e in opened.events]

    opened, events = case.run(registry, job, told)
    assert opened.model == "b" and _text(events) == "echo: hi "
    assert [c[:3] for c in told.calls] == [
        ("a", "up", "timeout"),
        ("a", "up2", "timeout"),
        ("b", "up2", "ok"),
    ]


UNEVEN = """
encoder: builtin:static
providers:
  up: {kind: openai, base_url: "%(url)s", first_token_timeout_s: 0.2}
  up2: {kind: openai, base_url: "%(url2)s", first_token_timeout_s: 1}
  up3: {kind: openai, base_url: "%(url)s", first_token_timeout_s: 1}
  up4: {kind: openai, base_url: "%(url2)s", first_token_timeout_s: 1}
models:
  a:
    model: m
    deployments:
%(deployments)s
  b: {provider: up2, model: 'b-%(tag)s'}
routes:
  - {name: r, examples: [hello], target: a}
default: {target: a}
dispatch:
  stream_hold_s: 0.5
  retries: {attempts: 2, backoff_s: 0.5, max_backoff_s: 4}
  breaker: {failures: 3, cooldown_s: 30, window_s: 60, min_requests: 100}
"""


def _uneven(case: Case, *faults: str) -> Registry:
    """`a`'s first deployment times out within the hold (0.2 s of 0.5 s); the others
    (`faults` each, in order; the last ones the test leaves out answer) wait longer
    (1 s), so that the second is handed over silent before its own wait ends."""
    one, two = case.upstreams
    lines = []
    for index, fault in enumerate(("ttft=3", *faults)):
        name = "up" if index == 0 else f"up{index + 1}"
        query = f"?{fault}" if fault else ""
        weight = 1000 ** (len(faults) - index)  # tried in this order
        model = f"m-{case.tag}{query}"
        lines.append(f"      - {{provider: {name}, model: '{model}', weight: {weight}}}")
    values = {"url": one.url, "url2": two.url, "tag": case.tag, "deployments": "\n".join(lines)}
    return parse_registry(UNEVEN % values).registry


def _streamed(case: Case, registry: Registry, told: Told) -> tuple[Any, list[bytes]]:
    async def job(d: Dispatcher) -> tuple[Any, list[bytes]]:
        opened = await d.open_stream(plan_for("a", "b"), _body(stream=True))
        assert opened.deployment == "up2"  # handed over before its wait ran out
        return opened, [e async for e in opened.events]

    return case.run(registry, job, told)


def test_a_timeout_within_the_hold_then_one_after_the_hand_over_ends_the_try(
    case: Case,
) -> None:
    """The first deployment timed out within the hold, the second after the stream was
    handed over: two timeouts in one try, so the fallback answers, not the third
    deployment after a third wait (the timeout within the hold was forgotten at the
    hand-over, and the third was called)."""
    opened, events = _streamed(case, _uneven(case, "ttft=3", ""), told := Told())
    assert opened.model == "b" and _text(events) == "echo: hi "
    assert [c[:3] for c in told.calls] == [
        ("a", "up", "timeout"),
        ("a", "up2", "timeout"),
        ("b", "up2", "ok"),
    ]
    assert told.retries == [] and case.sleeps == []


def test_a_timeout_then_a_503_after_the_hand_over_then_a_timeout_ends_the_try(
    case: Case,
) -> None:
    """A 503 between the two timeouts (the second deployment's, after the hand-over)
    does not make the try forget the first: the third deployment's timeout ends it, and
    the fallback answers, not the fourth (nor the model again: a try that timed out is
    not retried)."""
    registry = _uneven(case, "delay=0.8&status=503", "ttft=3", "")
    opened, events = _streamed(case, registry, told := Told())
    assert opened.model == "b" and _text(events) == "echo: hi "
    assert [c[:3] for c in told.calls] == [
        ("a", "up", "timeout"),
        ("a", "up2", "error"),
        ("a", "up3", "timeout"),
        ("b", "up2", "ok"),
    ]
    assert told.retries == [] and case.sleeps == []


def test_a_timeout_within_the_hold_then_a_503_after_the_hand_over_is_not_retried(
    case: Case,
) -> None:
    """Both of the model's deployments failed in the try, the first by timing out: the
    try ends with that timeout, which is not retried on the model (the 503 was: after a
    backoff the deployment that timed out was waited on again), and the fallback
    answers at once, as when both failed within the hold."""
    registry = _uneven(case, "delay=0.8&status=503")
    opened, events = _streamed(case, registry, told := Told())
    assert opened.model == "b" and _text(events) == "echo: hi "
    assert [c[:3] for c in told.calls] == [
        ("a", "up", "timeout"),
        ("a", "up2", "error"),
        ("b", "up2", "ok"),
    ]
    assert told.retries == [] and case.sleeps == []
