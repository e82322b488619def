"""What an upstream answers is read up to a bound: a whole answer past it fails the call
(to be fallen back from) instead of filling the gateway's memory; an error body is cut
there (only its message is wanted). Against the fake upstream, a real HTTP server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from fake_upstream import FakeUpstream, fake_upstream
from loop_ticks import joins_off_loop, while_default_executor_blocked

from llmroute.errors import ProviderError
from llmroute.providers import OpenAICompatProvider, _transport
from llmroute.providers.base import Timeouts
from llmroute.registry.schema import Provider


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as served:
        yield served


def _ask(upstream: FakeUpstream, model: str, text: str) -> dict[str, object] | ProviderError:
    return asyncio.run(_asked(upstream, model, text))


async def _asked(
    upstream: FakeUpstream, model: str, text: str, **extra: object
) -> dict[str, object] | ProviderError:
    provider = OpenAICompatProvider(
        "up", Provider(kind="openai", base_url=upstream.url, timeout_s=5), environ={}
    )
    try:
        messages = [{"role": "user", "content": text}]
        body = {"messages": messages, **extra}
        return await provider.complete(model, body, timeouts=Timeouts(5))
    except ProviderError as exc:
        return exc
    finally:
        await provider.aclose()


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


def test_a_large_answer_is_joined_off_the_event_loop(upstream: FakeUpstream) -> None:
    """aiohttp's `read` joined what it read on the event loop: a 43 MB embeddings answer
    held it ~35 ms (thread CPU on a loaded 2-core machine) for the copy."""
    text = "long " * 500  # answered 1,000 times: 2.5 MB
    answered, joins = joins_off_loop(lambda: _asked(upstream, "m?multi=1", text, n=1000))
    assert isinstance(answered, dict) and answered["choices"]
    assert [whole for size, whole in joins if size > 2_000_000] == [True]


def test_a_large_answer_is_parsed_beside_the_default_executors_blocking_calls(
    upstream: FakeUpstream,
) -> None:
    """A large answer (logprobs, many choices) was parsed in the default executor, where
    a remote encoder's blocking calls queue (up to its timeout each)."""
    text = "long " * 500  # answered 1,000 times: 2.5 MB
    answered = while_default_executor_blocked(lambda: _asked(upstream, "m?multi=1", text, n=1000))
    assert isinstance(answered, dict) and len(answered["choices"]) == 1000  # type: ignore[arg-type]


def test_a_large_request_body_is_sent_whole_without_a_warning(upstream: FakeUpstream) -> None:
    """Sent as bytes, a body past 1 MiB made aiohttp warn (ResourceWarning, an error in
    this suite) that it "might lock the event loop": it goes as a `BytesIO`, written
    64 KiB a step, its length and JSON content type said all the same."""
    text = "x" * (2 << 20)
    answered = _ask(upstream, "m-large-request", text)
    assert isinstance(answered, dict)
    echoed = answered["choices"][0]["message"]["content"]  # type: ignore[index]
    assert echoed.startswith("echo: ") and echoed.count("x") == len(text)  # (no diff of 2 MB)
    (sent,) = upstream.calls_to("m-large-request")
    assert sent.headers["content-type"] == "application/json"
    assert int(sent.headers["content-length"]) > len(text)
    assert "transfer-encoding" not in sent.headers


def test_a_large_streamed_request_body_is_sent_whole_without_a_warning(
    upstream: FakeUpstream,
) -> None:
    async def streamed() -> list[object]:
        provider = OpenAICompatProvider(
            "up", Provider(kind="openai", base_url=upstream.url, timeout_s=5), environ={}
        )
        body = {"messages": [{"role": "user", "content": "y" * (2 << 20)}], "stream": True}
        try:
            return [c async for c in provider.stream("m-large-stream", body, timeouts=Timeouts(5))]
        finally:
            await provider.aclose()

    assert asyncio.run(streamed())
    (sent,) = upstream.calls_to("m-large-stream")
    assert sent.body["messages"][0]["content"].count("y") == 2 << 20
    assert sent.headers["content-type"] == "application/json"


def test_a_compressed_answer_is_bounded_as_it_unpacks(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gzip answer's Content-Length counts its compressed bytes: one short enough for a
    single read unpacked past the bound unchecked (1 MiB of gzip can hold 1 GB)."""
    monkeypatch.setattr(_transport, "MAX_BODY_BYTES", 2048)
    answered = _ask(upstream, "m?gzip=1", "short")
    assert isinstance(answered, dict) and answered["choices"]
    failed = _ask(upstream, "m?gzip=1", "long " * 1000)  # 5 kB, ~100 bytes compressed
    assert isinstance(failed, ProviderError)
    assert "upstream answered with more than" in str(failed)
