"""The self-consistency gate against a real fake upstream: samples that disagree
escalate, samples that agree accept; ``n`` in one request where the provider takes it,
parallel requests where it returns fewer choices; sampling temperature."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from fake_upstream import FakeUpstream, fake_upstream

from llmroute.decision import Decision
from llmroute.dispatch import Dispatcher, Plan, Served, cascade_header
from llmroute.gates.consistency import MIN_TEMPERATURE, sample_body
from llmroute.providers import build_providers
from llmroute.registry import parse_registry
from llmroute.registry.schema import Registry

ANSWER = quote("Adding them up, the answer is 42")
GUESS = quote("Maybe 42")  # with vary=1: "Maybe 42 #1", "#2"...: final answers 1, 2, 3

REGISTRY = """
encoder: builtin:static
providers:
  up: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: up, model: '%(small)s', price: {input: 1, output: 1}}
  large: {provider: up, model: large}
routes:
  - name: r
    examples: [hello]
    target: small
    cascade:
      tiers: [small, large]
      gates: [heuristic, {kind: self_consistency, samples: 3, agreement: 0.6}]
default: {target: large}
dispatch:
  retries: {attempts: 0}
"""


@pytest.fixture(scope="module")
def shared() -> Iterator[FakeUpstream]:
    with fake_upstream() as upstream:
        yield upstream


@pytest.fixture
def upstream(shared: FakeUpstream) -> FakeUpstream:
    shared.requests.clear()
    shared.counts.clear()
    shared.answers.clear()
    return shared


def serve(upstream: FakeUpstream, small: str, **extra: Any) -> Served:
    reg: Registry = parse_registry(REGISTRY % {"url": upstream.url, "small": small}).registry
    decision = Decision("d", "r", "small", "test", 1.0, None, "test", "v", (), 0.0, 0.0)
    plan = Plan(decision, ("small",), None, reg.route("r").cascade)

    async def main() -> Served:
        dispatcher = Dispatcher(reg, build_providers(reg))
        try:
            body = {"messages": [{"role": "user", "content": "6 times 7?"}], **extra}
            return await dispatcher.complete(plan, body)
        finally:
            await dispatcher.aclose()

    return asyncio.run(main())


def test_agreeing_samples_accept(upstream: FakeUpstream) -> None:
    served = serve(upstream, f"small?reply={ANSWER}")
    assert served.model == "small"
    verdict = served.cascade[0].verdicts[-1]
    assert verdict.gate == "self_consistency" and verdict.accept and verdict.score == 1.0
    # n=2 asked in one request; the fake returned one choice, so one more was asked for
    sampled = [r.body for r in upstream.requests[1:]]
    assert [b.get("n") for b in sampled] == [2, None]
    assert all(b["temperature"] == MIN_TEMPERATURE for b in sampled)
    # the samples' cost counts in the tier's usage
    step = served.cascade[0]
    assert step.usage is not None and step.usage.prompt_tokens == 9


def test_disagreeing_samples_escalate(upstream: FakeUpstream) -> None:
    served = serve(upstream, f"small?reply={GUESS}&vary=1&multi=1")
    assert served.model == "large"
    verdict = served.cascade[0].verdicts[-1]
    assert not verdict.accept and verdict.score == pytest.approx(1 / 3)
    assert served.attempts == ("small escalated: self_consistency (agreement 0.33<0.60)",)
    header = "small:escalate(self_consistency:agreement=0.33),large:accept"
    assert cascade_header(served.cascade) == header
    # multi=1: both samples came back from one request with n=2
    assert [r.body.get("n") for r in upstream.requests[1:3]] == [2, None]
    assert upstream.requests[2].body["model"] == "large"


def test_sample_body_keeps_a_higher_temperature_and_drops_streaming() -> None:
    request = {"messages": [], "stream": True, "temperature": 1.0, "logprobs": True}
    assert sample_body(request, 3) == {"messages": [], "temperature": 1.0, "n": 3}
    assert sample_body({"temperature": 0}, 1) == {"temperature": MIN_TEMPERATURE}
