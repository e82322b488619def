"""Streams that go quiet: SSE keep-alive comments (`KeptAlive`) alone, then through
`llmroute serve` with a model that thinks between its words (the fake upstream's
``gap``): the status line goes out after ``dispatch.stream_hold_s``, comments while the
model is silent, and the official openai and anthropic clients read the streams whole
on the chat, Messages and Responses endpoints."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import anthropic
import httpx
import openai
import pytest
from fake_upstream import FakeUpstream
from gateway_proc import Served, serve_text
from starlette.responses import JSONResponse, StreamingResponse
from starlette.types import Message

from llmroute.server.keepalive import COMMENT, KeptAlive, with_keepalive


async def _slow(*gaps: float, fail: Exception | None = None) -> AsyncIterator[bytes]:
    for i, gap in enumerate(gaps):
        await asyncio.sleep(gap)
        yield f"data: {i}\n\n".encode()
    if fail is not None:
        raise fail


def _sent(events: AsyncIterator[bytes], every_s: float) -> list[bytes]:
    """What the stream sends, through the ASGI ``send`` it is given."""
    sent: list[bytes] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            sent.append(message["body"])

    response = with_keepalive(StreamingResponse(events), every_s)
    assert isinstance(response, KeptAlive)
    asyncio.run(response.stream_response(send))
    return sent


def test_a_quiet_stream_gets_comments_and_loses_nothing() -> None:
    got = _sent(_slow(0.0, 0.35, 0.0), 0.1)
    assert [e for e in got if e != COMMENT] == [
        b"data: 0\n\n",
        b"data: 1\n\n",
        b"data: 2\n\n",
        b"",  # the end of the body
    ]
    assert got[1] == COMMENT  # where it was quiet (0.35 s, one every 0.1 s)


def test_a_busy_stream_gets_none() -> None:
    got = _sent(_slow(*[0.0] * 50), 0.5)
    assert COMMENT not in got and len(got) == 51


def test_a_failure_below_reaches_the_server() -> None:
    with pytest.raises(ValueError, match="broke"):
        _sent(_slow(0.0, fail=ValueError("broke")), 0.1)


def test_zero_or_a_plain_answer_is_left_alone() -> None:
    streamed = StreamingResponse(_slow(0.0))
    assert with_keepalive(streamed, 0) is streamed
    plain = JSONResponse({"ok": True})
    assert with_keepalive(plain, 5) is plain


REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 10}
models:
  thinker: {provider: fake, model: "up-think?gap=0.6"}
  giver-up: {provider: fake, model: "up-giveup?early=1&pause=0.5"}  # fails, thinking
  quick: {provider: fake, model: up-quick}
routes:
  - {name: chat, examples: ["hello there", "how are you today"], target: thinker}
  - name: hard
    examples: ["prove the theorem", "derive the formula"]
    target: giver-up
    policy: {fallback: [quick]}
default: {target: thinker}
dispatch: {stream_hold_s: 0.2}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("keepalive")
    env = {"LLMROUTE_TELEMETRY_URL": "off"}
    with serve_text(REGISTRY % {"url": upstream.url}, tmp, ["--sse-keepalive", "0.15"], env) as s:
        yield s


def test_the_status_line_goes_out_while_the_model_thinks(gateway: Served) -> None:
    body = {"model": "thinker", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    started = time.monotonic()
    lines: list[tuple[float, str]] = []
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=10) as r:
        headers_after = time.monotonic() - started
        assert r.status_code == 200
        for line in r.iter_lines():
            lines.append((time.monotonic() - started, line))
    lines = [(t, line) for t, line in lines if line]
    texts = [line for _, line in lines]
    first_word = next(
        i for i, line in enumerate(texts) if '"content": "' in line and '"content": ""' not in line
    )
    # held 0.2 s at most, not until the first words (0.6 s of thinking)
    assert headers_after < lines[first_word][0]
    assert '"role": "assistant"' in texts[0]  # the role chunk went out with the status line
    assert ": keep-alive" in texts[1:first_word]  # and comments while the model thought
    assert texts[-1] == "data: [DONE]"


def test_the_clients_read_kept_alive_streams_whole(gateway: Served) -> None:
    url = f"{gateway.url}/v1"
    with openai.OpenAI(base_url=url, api_key="unused", max_retries=0) as client:
        stream = client.chat.completions.create(
            model="thinker", stream=True, messages=[{"role": "user", "content": "hi"}]
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text.strip() == "echo: hi"
        with client.responses.stream(model="thinker", input="hi") as events:
            list(events)
            assert events.get_final_response().output_text.strip() == "echo: hi"
    ask = [{"role": "user", "content": "hi"}]
    with (
        anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0) as claude,
        claude.messages.stream(model="thinker", max_tokens=32, messages=ask) as message,  # type: ignore[arg-type]
    ):
        assert message.get_final_text().strip() == "echo: hi"
    assert "Traceback" not in gateway.log_text()


def test_a_client_leaving_a_quiet_stream_ends_it_cleanly(
    gateway: Served, upstream: FakeUpstream
) -> None:
    body = {"model": "thinker", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    cut_before = len(upstream.cut)
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=10) as r:
        lines = r.iter_lines()
        assert '"role": "assistant"' in next(lines)
        assert next(line for line in lines if line) == ": keep-alive"
    deadline = time.monotonic() + 10
    while len(upstream.cut) == cut_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(upstream.cut) > cut_before  # the upstream stream was closed too
    log = gateway.log_text()
    assert "Traceback" not in log and "never retrieved" not in log


def test_a_stream_that_fails_before_its_words_after_the_hold_falls_back(
    gateway: Served, upstream: FakeUpstream
) -> None:
    """The start went out after the hold; the model then gave up before any words: the
    client has seen only the role chunk, so the route's fallback answers in the same
    stream (its own opening left out), and the official client reads one whole answer."""
    before = len(upstream.requests)
    url = f"{gateway.url}/v1"
    with openai.OpenAI(base_url=url, api_key="unused", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="hard", stream=True, messages=[{"role": "user", "content": "a b"}]
        )
        assert raw.headers["x-llmroute-model"] == "giver-up"  # sent before it failed
        chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: a b "
    roles = [c for c in chunks if c.choices and c.choices[0].delta.role]
    assert len(roles) == 1  # one opening, the first model's
    assert {c.model for c in chunks} == {"up-giveup?early=1&pause=0.5", "up-quick"}
    called = [r.body["model"] for r in upstream.requests[before:]]
    assert called == ["up-giveup?early=1&pause=0.5", "up-quick"]
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=5).text
    assert 'llmroute_fallbacks_total{route="hard"} 1.0' in metrics
    assert "Traceback" not in gateway.log_text()
    assert "failed before its first words" in gateway.log_text()


def test_the_fronts_name_the_model_a_late_fallback_answered_with(gateway: Served) -> None:
    """The Responses and completions fronts said the first model's name to the end: the
    ``x-llmroute-model`` header goes out before the failure, but what they say after it
    (the final response, each completion chunk) names the model that answered."""
    url = f"{gateway.url}/v1"
    with openai.OpenAI(base_url=url, api_key="unused", max_retries=0) as client:
        with client.responses.stream(model="hard", input="a b") as stream:
            kinds = [event.type for event in stream]
            final = stream.get_final_response()
        assert kinds[-1] == "response.completed" and final.model == "quick"
        assert final.output_text.strip() == "echo: a b"
        chunks = list(client.completions.create(model="hard", prompt="a b", stream=True))
        assert {chunk.model for chunk in chunks} == {"quick"}
        assert "".join(c.choices[0].text for c in chunks if c.choices).strip() == "echo: a b"
    assert "Traceback" not in gateway.log_text()
