"""What an upstream answers is read up to a bound: a whole answer past it fails the call
(to be fallen back from) instead of filling the gateway's memory; an error body is cut
there (only its message is wanted). Against the fake upstream, a real HTTP server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from fake_upstream import FakeUpstream, fake_upstream

from llmroute.errors import ProviderError
from llmroute.providers import OpenAICompatProvider, _transport
from llmroute.providers.base import Timeouts
from llmroute.registry.schema import Provider


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as served:
        yield served


def _ask(upstream: FakeUpstream, model: str, text: str) -> dict[str, object] | ProviderError:
    spec = Provider(kind="openai", base_url=upstream.url, timeout_s=5)

    async def run() -> dict[str, object] | ProviderError:
        provider = OpenAICompatProvider("up", spec, environ={})
        try:
            messages = [{"role": "user", "content": text}]
            return await provider.complete(model, {"messages": messages}, timeouts=Timeouts(5))
        except ProviderError as exc:
            return exc
        finally:
            await provider.aclose()

    return asyncio.run(run())


def test_an_answer_past_the_bound_fails_the_call(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_transport, "MAX_BODY_BYTES", 2048)
    answered = _ask(upstream, "m", "short")
    assert isinstance(answered, dict) and answered["choices"]
    failed = _ask(upstream, "m", "long " * 1000)  # echoed back: a 5 kB answer
    assert isinstance(failed, ProviderError)
    assert "upstream answered with more than" in str(failed) and "'up'" in str(failed)


def test_an_error_body_is_read_only_so_far(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_transport, "_MAX_ERROR_BYTES", 16)
    failed = _ask(upstream, "m?status=500", "hi")
    assert isinstance(failed, ProviderError) and failed.status == 500
