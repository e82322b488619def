"""A model's answer cap read from its upstream's refusal: the router sends a client's
``max_tokens`` (chosen for another model) to the model it picked; a refusal naming the
cap is answered by sending the request once more within it, and the deployment's later
calls go within it at once (real HTTP: the fake OpenAI-protocol and Anthropic servers
refuse with the providers' own words)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fake_anthropic import FakeAnthropic, fake_anthropic
from fake_upstream import FakeUpstream, fake_upstream
from plans import plan_for

from llmroute.dispatch import Dispatcher
from llmroute.dispatch.output_caps import refused_cap
from llmroute.providers import build_providers
from llmroute.registry import parse_registry

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
  claude: {kind: anthropic, base_url: "%(anthropic)s", timeout_s: 5}
models:
  gpt: {provider: fake, model: "up-4o?cap=16384"}
  opus: {provider: claude, model: "claude-opus-4-1?cap=32000"}
  set: {provider: fake, model: "up-set?cap=16384", max_output_tokens: 8000}
routes:
  - {name: r, examples: [hello there], target: gpt}
default: {target: gpt}
"""


@pytest.fixture
def servers() -> Iterator[tuple[FakeUpstream, FakeAnthropic]]:
    with fake_upstream() as up, fake_anthropic() as claude:
        yield up, claude


def _run(
    servers: tuple[FakeUpstream, FakeAnthropic], model: str, bodies: list[dict[str, Any]]
) -> None:
    up, claude = servers
    registry = parse_registry(REGISTRY % {"url": up.url, "anthropic": claude.url}).registry

    async def main() -> None:
        dispatcher = Dispatcher(registry, build_providers(registry))
        try:
            for body in bodies:
                if body.get("stream"):
                    opened = await dispatcher.open_stream(plan_for(model), body)
                    events = [e async for e in opened.events]
                    assert events[-1].startswith(b"data: [DONE]")
                else:
                    served = await dispatcher.complete(plan_for(model), body)
                    assert served.data["choices"][0]["message"]["content"]
        finally:
            await dispatcher.aclose()

    asyncio.run(main())


def _ask(**extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **extra}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("model", "key", "cap"),
    [("gpt", "max_completion_tokens", 16384), ("opus", "max_tokens", 32000)],
)
def test_a_limit_above_the_models_cap_is_sent_again_within_it_and_learned(
    servers: tuple[FakeUpstream, FakeAnthropic],
    caplog: pytest.LogCaptureFixture,
    model: str,
    key: str,
    cap: int,
    stream: bool,
) -> None:
    up, claude = servers
    seen = claude if model == "opus" else up
    with caplog.at_level(logging.WARNING, logger="llmroute"):
        _run(servers, model, [_ask(stream=stream, **{key: 64000})] * 2)
    limits = [r.body.get("max_tokens", r.body.get("max_completion_tokens")) for r in seen.requests]
    assert limits == [64000, cap, cap]  # refused once, then within the cap at once
    said = [r.getMessage() for r in caplog.records if "answers at most" in r.getMessage()]
    assert len(said) == 1 and f"max_output_tokens: {cap}" in said[0]


def test_thinking_is_fitted_within_a_learned_cap(
    servers: tuple[FakeUpstream, FakeAnthropic],
) -> None:
    """Claude's thinking budget must stay below max_tokens: within a learned cap of
    32,000 a budget of 32,768 is halved, as for a configured max_output_tokens."""
    _, claude = servers
    thinking = {"type": "enabled", "budget_tokens": 32768}
    _run(servers, "opus", [_ask(max_tokens=40000, thinking=thinking)])
    sent = claude.requests[-1].body
    assert sent["max_tokens"] == 32000 and sent["thinking"]["budget_tokens"] == 16000


def test_other_refusals_and_limits_within_the_cap_are_the_clients(
    servers: tuple[FakeUpstream, FakeAnthropic],
) -> None:
    up, _ = servers
    _run(servers, "set", [_ask(max_tokens=64000)])  # the registry's cap is lower: no refusal
    assert [r.body["max_tokens"] for r in up.requests] == [8000]
    said = "max_tokens: 64000 > 32000, which is the maximum allowed number of output tokens for x"
    assert refused_cap(said, {"max_tokens": 64000}) == 32000
    assert refused_cap(said, {"max_tokens": 100}) is None  # not what was sent: not this cap
    assert refused_cap("max_tokens: Field required", {"max_tokens": 64000}) is None


@pytest.mark.parametrize("stream", [False, True])
def test_requests_refused_together_are_all_sent_again_within_the_cap(
    servers: tuple[FakeUpstream, FakeAnthropic], stream: bool
) -> None:
    """Requests sent at once, before the cap is learned, are each refused: every one is
    sent again within it, not only the one whose refusal taught it."""
    up, claude = servers
    registry = parse_registry(REGISTRY % {"url": up.url, "anthropic": claude.url}).registry

    async def one(dispatcher: Dispatcher) -> str:
        body = _ask(stream=stream, max_tokens=64000)
        if stream:
            opened = await dispatcher.open_stream(plan_for("opus"), body)
            return b"".join([e async for e in opened.events]).decode()
        served = await dispatcher.complete(plan_for("opus"), body)
        return str(served.data["choices"][0]["message"]["content"])

    async def main() -> list[str]:
        dispatcher = Dispatcher(registry, build_providers(registry))
        try:
            return await asyncio.gather(*(one(dispatcher) for _ in range(4)))
        finally:
            await dispatcher.aclose()

    answers = asyncio.run(main())
    assert all("hi" in answer for answer in answers)
    limits = sorted(r.body["max_tokens"] for r in claude.requests)
    assert limits == [32000] * 4 + [64000] * 4  # each refused once, then within the cap
