"""An account out of credit with Anthropic, said as the API says it (a 400
``invalid_request_error`` "Your credit balance is too low", before a stream or as its
``error`` event before the first words): the gateway's account, not the request, so
the chain's next model answers at once and the attempt says why (real HTTP: the fake
Anthropic and OpenAI-protocol servers)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from fake_anthropic import FakeAnthropic, fake_anthropic
from fake_upstream import FakeUpstream, fake_upstream
from plans import plan_for

from llmroute.dispatch import Dispatcher
from llmroute.providers import build_providers
from llmroute.registry import parse_registry

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
  claude: {kind: anthropic, base_url: "%(anthropic)s", timeout_s: 5}
models:
  opus: {provider: claude, model: "claude-opus-4-1?%(fault)s"}
  gpt: {provider: fake, model: "up-4o"}
routes:
  - {name: r, examples: [hello there], target: opus}
default: {target: opus}
"""


@pytest.fixture
def servers() -> Iterator[tuple[FakeUpstream, FakeAnthropic]]:
    with fake_upstream() as up, fake_anthropic() as claude:
        yield up, claude


@pytest.mark.parametrize(
    ("fault", "stream"),
    [("credit=1", False), ("credit=1", True), ("early_error=credit", True)],
)
def test_an_anthropic_account_out_of_credit_falls_back_at_once_saying_so(
    servers: tuple[FakeUpstream, FakeAnthropic], fault: str, stream: bool
) -> None:
    """The streamed refusal was a ProviderError(400), the request's own fault: no
    fallback, the client's 400."""
    up, claude = servers
    text = REGISTRY % {"url": up.url, "anthropic": claude.url, "fault": fault}
    registry = parse_registry(text).registry
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream": stream}

    async def main() -> tuple[str, tuple[str, ...], list[bytes]]:
        dispatcher = Dispatcher(registry, build_providers(registry))
        try:
            if stream:
                opened = await dispatcher.open_stream(plan_for("opus", "gpt"), body)
                return opened.model, opened.attempts, [e async for e in opened.events]
            served = await dispatcher.complete(plan_for("opus", "gpt"), body)
            return served.model, served.attempts, []
        finally:
            await dispatcher.aclose()

    model, attempts, events = asyncio.run(main())
    assert model == "gpt"
    assert not stream or events[-1] == b"data: [DONE]\n\n"
    assert len(claude.requests) == 1  # not retried
    (attempt,) = attempts
    assert attempt.startswith("opus via claude (")
    assert "account with the provider is out of credits" in attempt
