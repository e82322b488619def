"""A stream ends soon after its upstream's end event (``[DONE]``; Anthropic's
``message_stop``): its body is read on to its end for a moment (`END_DRAIN_S`), so that
its connection goes back to the pool, and one a server or proxy keeps open (a keep-alive
bug) is closed then instead of holding the stream until the read times out. Real fake
servers on 127.0.0.1: ones that hold their body open until their reader hangs up (60 s
at most), each read with a read timeout far past the test's bound, and ones that end it,
whose client ports show how many connections the streams took."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from fake_anthropic import FakeAnthropic, fake_anthropic
from fake_bedrock import ACCESS_KEY, SECRET, FakeBedrock, fake_bedrock
from fake_upstream import FakeUpstream, fake_upstream
from fake_vertex import FakeVertex, fake_vertex
from gateway_proc import wait_for
from plans import plan_for

from llmroute.dispatch import Dispatcher
from llmroute.errors import ProviderError
from llmroute.providers import AnthropicProvider, OpenAICompatProvider, build_providers
from llmroute.providers.base import ChatProvider, Timeouts
from llmroute.providers.bedrock import BedrockProvider
from llmroute.providers.google_auth import StaticToken
from llmroute.providers.vertex import VertexProvider
from llmroute.registry import parse_registry
from llmroute.registry.schema import Provider
from llmroute.sse import END_DRAIN_BYTES, drain_after_end

LONG = Timeouts(connect_s=2.0, total_s=120.0)  # each read: well past the bound below
BOUND_S = 30.0  # "did not hang": far less than the 60 s the fakes hold their body
BODY: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "stream": True}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as served:
        yield served


@pytest.fixture(scope="module")
def anthropic() -> Iterator[FakeAnthropic]:
    with fake_anthropic() as served:
        yield served


@pytest.fixture(scope="module")
def bedrock() -> Iterator[FakeBedrock]:
    with fake_bedrock() as served:
        yield served


@pytest.fixture(scope="module")
def vertex() -> Iterator[FakeVertex]:
    with fake_vertex() as served:
        yield served


def _read(provider: ChatProvider, model: str) -> list[bytes]:
    """Every event of `model`'s stream, read as far as the provider yields them."""

    async def events() -> list[bytes]:
        stream: AsyncIterator[bytes] = provider.stream(model, BODY, timeouts=LONG)
        return [event async for event in stream]

    async def run() -> list[bytes]:
        try:
            return await asyncio.wait_for(events(), BOUND_S)
        finally:
            await provider.aclose()

    return asyncio.run(run())


def test_an_openai_compatible_stream_ends_at_its_done(upstream: FakeUpstream) -> None:
    spec = Provider(kind="openai", base_url=upstream.url, timeout_s=120)
    events = _read(OpenAICompatProvider("up", spec, environ={}), "whole?after=open")
    assert events[-1] == b"data: [DONE]\n\n" and events.count(b"data: [DONE]\n\n") == 1
    wait_for("the upstream released", lambda: "whole?after=open" in upstream.released, 10)


def test_an_anthropic_stream_ends_at_its_message_stop(anthropic: FakeAnthropic) -> None:
    spec = Provider(kind="anthropic", base_url=anthropic.url, api_key_env="K", timeout_s=120)
    events = _read(AnthropicProvider("anth", spec, environ={"K": "k"}), "claude?hold=1")
    assert events[-1] == b"data: [DONE]\n\n" and events.count(b"data: [DONE]\n\n") == 1
    wait_for("the upstream released", lambda: "claude?hold=1" in anthropic.released, 10)


def test_a_bedrock_stream_ends_at_its_message_stop(bedrock: FakeBedrock) -> None:
    spec = Provider(kind="bedrock", base_url=bedrock.url, region="us-east-1", timeout_s=120)
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
    events = _read(BedrockProvider("aws", spec, environ=env), "claude?hold=1")
    assert events[-1] == b"data: [DONE]\n\n" and events.count(b"data: [DONE]\n\n") == 1
    wait_for("the upstream released", lambda: "claude?hold=1" in bedrock.released, 10)


def test_a_vertex_stream_ends_at_its_message_stop(vertex: FakeVertex) -> None:
    vertex.static_tokens.add("ya29.token")
    spec = Provider(kind="vertex", base_url=vertex.base_url, timeout_s=120)
    provider = VertexProvider("vertex", spec, environ={}, tokens=StaticToken("ya29.token"))
    events = _read(provider, "claude?hold=1")
    assert events[-1] == b"data: [DONE]\n\n" and events.count(b"data: [DONE]\n\n") == 1
    wait_for("the upstream released", lambda: "claude?hold=1" in vertex.released, 10)


STREAMS = 5


def _ports(provider: ChatProvider, model: str, recorded: Callable[[], list[int]]) -> set[int]:
    """The client ports of `STREAMS` streams of `model`, one after another on `provider`,
    each read to its end (`recorded`: every port the server saw so far)."""

    async def run() -> set[int]:
        before = len(recorded())
        try:
            for _ in range(STREAMS):
                events = [e async for e in provider.stream(model, BODY, timeouts=LONG)]
                assert events[-1] == b"data: [DONE]\n\n"
        finally:
            await provider.aclose()
        return set(recorded()[before:])

    return asyncio.run(asyncio.wait_for(run(), BOUND_S))


def test_openai_compatible_streams_reuse_their_connection(upstream: FakeUpstream) -> None:
    """A stream whose server ends its body after ``[DONE]`` (a moment later, in a packet
    of its own) leaves its connection to the next: five streams, one connection.
    Closing each at its ``[DONE]``, before its body's end, would drop it: a new
    connection (a TCP and TLS handshake) for each."""
    spec = Provider(kind="openai", base_url=upstream.url, timeout_s=120)
    provider = OpenAICompatProvider("up", spec, environ={})
    ports = _ports(provider, "whole?after=lag", lambda: [r.port for r in upstream.requests])
    assert len(ports) == 1


def test_anthropic_streams_reuse_their_connection(anthropic: FakeAnthropic) -> None:
    spec = Provider(kind="anthropic", base_url=anthropic.url, api_key_env="K", timeout_s=120)
    provider = AnthropicProvider("anth", spec, environ={"K": "k"})
    ports = _ports(provider, "claude?lag=0.1", lambda: [r.port for r in anthropic.requests])
    assert len(ports) == 1


def test_bedrock_streams_reuse_their_connection(bedrock: FakeBedrock) -> None:
    spec = Provider(kind="bedrock", base_url=bedrock.url, region="us-east-1", timeout_s=120)
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
    provider = BedrockProvider("aws", spec, environ=env)
    ports = _ports(provider, "claude?lag=0.1", lambda: [r.port for r in bedrock.requests])
    assert len(ports) == 1


def test_vertex_streams_reuse_their_connection(vertex: FakeVertex) -> None:
    vertex.static_tokens.add("ya29.token")
    spec = Provider(kind="vertex", base_url=vertex.base_url, timeout_s=120)
    provider = VertexProvider("vertex", spec, environ={}, tokens=StaticToken("ya29.token"))
    ports = _ports(provider, "claude?lag=0.1", lambda: [p.port for p in vertex.predicted])
    assert len(ports) == 1


REGISTRY = """
providers:
  up: {kind: openai, base_url: "%(up)s", timeout_s: 120}
  anth: {kind: anthropic, base_url: "%(anth)s", api_key_env: K, timeout_s: 120}
models:
  gpt: {provider: up, model: "whole?after=lag"}
  claude: {provider: anth, model: "claude?lag=0.1"}
  gpt-open: {provider: up, model: "whole?after=open"}
  claude-open: {provider: anth, model: "claude?hold=1"}
routes:
  - {name: r, examples: [hello], target: gpt}
default: {target: gpt}
"""


def _dispatched(upstream: FakeUpstream, anthropic: FakeAnthropic, *models: str) -> list[bytes]:
    """Each of `models`' streams, one after another through one `Dispatcher`, read to
    their end as the gateway's relay reads them; the last one's events."""
    text = REGISTRY % {"up": upstream.url, "anth": anthropic.url}
    registry = parse_registry(text).registry

    async def run() -> list[bytes]:
        dispatcher = Dispatcher(registry, build_providers(registry, {"K": "k"}))
        events: list[bytes] = []
        try:
            for model in models:
                opened = await dispatcher.open_stream(plan_for(model), BODY)
                try:
                    events = [e async for e in opened.events]
                finally:
                    await opened.aclose()
        finally:
            await dispatcher.aclose()
        return events

    return asyncio.run(asyncio.wait_for(run(), BOUND_S))


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_dispatched_streams_reuse_their_connection(
    upstream: FakeUpstream, anthropic: FakeAnthropic, model: str
) -> None:
    """Streams through dispatch (metered, ended at ``[DONE]``) leave the upstream's
    connection to the next, as a provider's own do."""
    seen = upstream.requests if model == "gpt" else anthropic.requests
    before = len(seen)
    events = _dispatched(upstream, anthropic, *[model] * STREAMS)
    assert events[-1] == b"data: [DONE]\n\n" and events.count(b"data: [DONE]\n\n") == 1
    assert len(seen) - before == STREAMS
    assert len({r.port for r in seen[before:]}) == 1


@pytest.mark.parametrize("model", ["gpt-open", "claude-open"])
def test_a_dispatched_stream_held_open_after_its_end_ends_there(
    upstream: FakeUpstream, anthropic: FakeAnthropic, model: str
) -> None:
    """A stream whose upstream keeps its body open after its end ends (within the test's
    bound, far less than the 60 s the fake holds it), whole, its connection closed."""
    events = _dispatched(upstream, anthropic, model)
    assert events[-1] == b"data: [DONE]\n\n" and events.count(b"data: [DONE]\n\n") == 1
    released = upstream.released if model == "gpt-open" else anthropic.released
    wait_for("the upstream released", lambda: bool(released), 10)


def _drained(pieces: list[bytes], then: str = "end") -> int:
    """How many of `pieces` `drain_after_end` read of a stream that sends them, then ends
    (``end``), holds on for good (``hold``) or breaks (``break``)."""
    read = 0

    async def rest() -> AsyncIterator[bytes]:
        nonlocal read
        for piece in pieces:
            read += 1
            yield piece
        if then == "hold":
            await asyncio.Event().wait()
        if then == "break":
            raise ProviderError("up", "upstream request failed (ClientPayloadError)")

    asyncio.run(asyncio.wait_for(drain_after_end(rest()), BOUND_S))
    return read


def test_the_drain_reads_what_follows_the_end_to_the_bodys_end() -> None:
    assert _drained([b"data: {}\n\n", b"data: [DONE]\n\n"]) == 2


def test_the_drain_leaves_a_body_held_open_or_too_long() -> None:
    """A body held open is left at the deadline (the bound: it did not wait on it); one
    that goes on past `END_DRAIN_BYTES` is left there, the rest unread."""
    assert _drained([b"x"], then="hold") == 1
    piece = b"x" * 1024
    assert _drained([piece] * (END_DRAIN_BYTES // 1024 * 4)) == END_DRAIN_BYTES // 1024 + 1


def test_a_break_while_draining_raises() -> None:
    """The connection cut after the end raises as before it (the answer whole: its
    readers take it as a break after ``[DONE]``, a warning)."""
    with pytest.raises(ProviderError):
        _drained([b"x"], then="break")
