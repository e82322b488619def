"""A 200 that is no answer, and a stream event that is not JSON, fail the provider's call
(to be retried and fallen back from, as a body that is not JSON is) instead of being
passed on as the answer. Against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from fake_upstream import FakeUpstream, fake_upstream, serve_in_thread

from llmroute.errors import ProviderError
from llmroute.providers import OpenAICompatProvider
from llmroute.providers._http import checked_event
from llmroute.providers.anthropic import AnthropicProvider
from llmroute.providers.base import Timeouts
from llmroute.registry.schema import Provider

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as served:
        yield served


def _provider(upstream: FakeUpstream) -> OpenAICompatProvider:
    return OpenAICompatProvider("up", Provider(kind="openai", base_url=upstream.url), environ={})


def _complete(upstream: FakeUpstream, model: str, *, text: bool = False) -> Any:
    """The answer, or the error raised."""

    async def run() -> Any:
        provider = _provider(upstream)
        try:
            if text:
                body = {"prompt": "def f(", "max_tokens": 4}
                return await provider.complete_text(model, body, timeouts=Timeouts(total_s=5))
            return await provider.complete(model, CHAT, timeouts=Timeouts(total_s=5))
        except ProviderError as exc:
            return exc
        finally:
            await provider.aclose()

    return asyncio.run(run())


def _stream(upstream: FakeUpstream, model: str) -> tuple[list[bytes], ProviderError | None]:
    """The events read, and the error that ended the stream (None: it ended whole)."""

    async def run() -> tuple[list[bytes], ProviderError | None]:
        provider = _provider(upstream)
        got: list[bytes] = []
        try:
            body = {**CHAT, "stream": True}
            async for event in provider.stream(model, body, timeouts=Timeouts(total_s=5)):
                got.append(event)
        except ProviderError as exc:
            return got, exc
        finally:
            await provider.aclose()
        return got, None

    return asyncio.run(run())


@pytest.mark.parametrize("shape", ["none", "empty", "bare"])
def test_a_chat_answer_without_choices_holding_a_message_fails_the_call(
    upstream: FakeUpstream, shape: str
) -> None:
    failed = _complete(upstream, f"m?shape={shape}")
    assert isinstance(failed, ProviderError) and failed.retryable
    assert "without choices (each with a message)" in str(failed)


@pytest.mark.parametrize("shape", ["none", "empty", "bare"])
def test_a_text_answer_without_choices_holding_a_text_fails_the_call(
    upstream: FakeUpstream, shape: str
) -> None:
    failed = _complete(upstream, f"m?shape={shape}", text=True)
    assert isinstance(failed, ProviderError) and failed.retryable
    assert "without choices (each with a text)" in str(failed)


def test_whole_answers_still_pass(upstream: FakeUpstream) -> None:
    chat = _complete(upstream, "m")
    assert chat["choices"][0]["message"]["content"] == "echo: hi"
    text = _complete(upstream, "m", text=True)
    assert text["choices"][0]["text"].startswith("raw: def f(")


def test_a_stream_opening_with_an_event_that_is_not_json_fails_before_any_event(
    upstream: FakeUpstream,
) -> None:
    """Nothing passed on yet: the call fails, and dispatch can still fall back."""
    got, failed = _stream(upstream, "m?garbage=first")
    assert got == []
    assert failed is not None and failed.retryable and "not JSON" in str(failed)


def test_an_event_that_is_not_json_later_ends_the_stream_without_it(
    upstream: FakeUpstream,
) -> None:
    got, failed = _stream(upstream, "m?garbage=late")
    assert len(got) == 2 and b"partial" in got[1]
    assert failed is not None and "not JSON" in str(failed)
    assert not any(b"not json" in e for e in got)


def test_checked_event_reads_each_kind_of_event() -> None:
    """Valid events pass as `plain_event` makes them; ``[DONE]`` (written loosely:
    ``data: [DONE]`` itself, as what reads the stream finds its end), comments and empty
    data are no failure; unreadable data and error objects raise."""
    plain = b'data: {"choices":[]}\n\n'
    assert checked_event("up", plain) is plain
    assert checked_event("up", b"data: [DONE]\n\n") == b"data: [DONE]\n\n"
    for loose in (b"data:[DONE] \n\n", b"data:  [DONE]\n\n", b"data:\t[DONE]\n\n"):
        assert checked_event("up", loose) == b"data: [DONE]\n\n"
    assert checked_event("up", b'id: 1\ndata:{"a":\ndata: 1}\n\n') == b'data: {"a": 1}\n\n'
    assert checked_event("up", b": keep-alive\n\n") is None
    assert checked_event("up", b"data:\n\n") is None
    for bad in (b"data: {not json\n\n", b"data: [1, 2]\n\n", b'data: {"a": 1\n\n'):
        with pytest.raises(ProviderError):
            checked_event("up", bad)
    with pytest.raises(ProviderError) as caught:
        checked_event("up", b'data: {"error": {"message": "gone", "code": 503}}\n\n')
    assert caught.value.status == 503
    with pytest.raises(ProviderError) as caught:  # llama.cpp server's error field
        checked_event("up", b'error: {"code": 500, "message": "x", "type": "server_error"}\n\n')
    assert caught.value.status == 500


def test_a_character_cut_in_two_is_read_as_replacement_characters() -> None:
    """Half a surrogate pair (a proxy slicing UTF-16 strings sends an emoji's halves in
    two events) or bytes that are not UTF-8 in one event ended the whole answer as "not
    JSON": the event is passed on with U+FFFD in their place, written again; an event
    without them is passed on as it came."""
    half = b'data: {"choices":[{"index":0,"delta":{"content":"hi \\ud83d"}}]}\n\n'
    event = checked_event("up", half)
    assert event is not None and json.loads(event[6:])["choices"][0]["delta"] == {
        "content": "hi \ufffd"
    }
    latin = b'data: {"choices":[{"index":0,"delta":{"content":"caf\xe9"}}]}\n\n'
    event = checked_event("up", latin)
    assert event is not None and "caf\ufffd" in event.decode()
    whole = b'data: {"choices":[{"index":0,"delta":{"content":"\\ud83d\\ude00"}}]}\n\n'
    assert checked_event("up", whole) is whole


def test_a_stream_splitting_an_emoji_across_events_is_read_to_its_end(
    upstream: FakeUpstream,
) -> None:
    async def run() -> tuple[list[bytes], ProviderError | None]:
        provider = _provider(upstream)
        got: list[bytes] = []
        body = {"messages": [{"role": "user", "content": "party \U0001f389 now"}], "stream": True}
        try:
            async for event in provider.stream("m?split=1", body, timeouts=Timeouts(total_s=5)):
                got.append(event)
        except ProviderError as exc:
            return got, exc
        finally:
            await provider.aclose()
        return got, None

    got, failed = asyncio.run(run())
    assert failed is None
    chunks = [json.loads(e[6:]) for e in got if e != b"data: [DONE]\n\n"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "echo: party \ufffd\ufffd now "
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


class _NotUtf8(BaseHTTPRequestHandler):
    """An OpenAI-protocol server whose whole answer holds latin-1 and a lone surrogate."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        raw = (
            b'{"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": '
            b'[{"index": 0, "message": {"role": "assistant", "content": "caf\xe9 \\ud83d"}, '
            b'"finish_reason": "stop"}]}'
        )
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


def test_a_whole_answer_with_a_character_that_is_not_unicode_is_answered() -> None:
    with serve_in_thread(_NotUtf8) as url:

        async def run() -> Any:
            provider = OpenAICompatProvider("up", Provider(kind="openai", base_url=url), environ={})
            try:
                return await provider.complete("m", CHAT, timeouts=Timeouts(total_s=5))
            finally:
                await provider.aclose()

        answer = asyncio.run(run())
    assert answer["choices"][0]["message"]["content"] == "caf\ufffd \ufffd"


class _NoContent(BaseHTTPRequestHandler):
    """An Anthropic-protocol server answering a message without its ``content``."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        raw = json.dumps({"id": "msg_1", "type": "message", "model": "claude-x"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


def test_an_anthropic_answer_without_content_fails_the_call() -> None:
    with serve_in_thread(_NoContent) as url:

        async def run() -> ProviderError:
            provider = AnthropicProvider("an", Provider(kind="anthropic", base_url=url), environ={})
            try:
                with pytest.raises(ProviderError) as caught:
                    await provider.complete("claude-x", CHAT, timeouts=Timeouts(total_s=5))
                return caught.value
            finally:
                await provider.aclose()

        failed = asyncio.run(run())
    assert failed.retryable and "without a content list" in str(failed)
