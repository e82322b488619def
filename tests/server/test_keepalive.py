"""Streams that go quiet: SSE keep-alive comments (`KeptAlive`) alone, then through
`llmroute serve` with a model that thinks between its words (the fake upstream's
``gap``) or before its first event (``ttft``): the status line goes out after
``dispatch.stream_hold_s``, comments while the model is silent, and the official openai
and anthropic clients read the streams whole on the chat, Messages and Responses
endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator

import anthropic
import httpx
import openai
import pytest
from fake_upstream import FakeUpstream
from gateway_proc import Served, serve_text, wait_for
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
  silent: {provider: fake, model: "up-silent?ttft=1"}  # nothing for 1 s, then the answer
  mute: {provider: fake, model: "up-mute?ttft=30", first_token_timeout_s: 1}  # never answers
  deep: {provider: fake, model: "up-deep?ttft=30"}  # thinks past the provider's 10 s
  refuser: {provider: fake, model: "up-refuse?status=400"}
  flaky:  # each deployment's first call: silent past the hold, then a 503
    model: up-flaky
    deployments:
      - {provider: fake, model: "up-flaky1?delay=0.5&status=503&times=1"}
      - {provider: fake, model: "up-flaky2?delay=0.5&status=503&times=1"}
  # too small for every request: its 400 context_length_exceeded after the hold, or within
  narrow: {provider: fake, model: "up-narrow?delay=0.5&context=1", context_window: 8192}
  narrow-now: {provider: fake, model: "up-narrow-now?context=1", context_window: 8192}
  wide: {provider: fake, model: up-wide, context_window: 200000}
routes:
  - {name: chat, examples: ["hello there", "how are you today"], target: thinker}
  - name: hard
    examples: ["prove the theorem", "derive the formula"]
    target: giver-up
    policy: {fallback: [quick]}
  - name: mute-first
    examples: ["tell me a story", "write me a poem"]
    target: mute
    policy: {fallback: [quick]}
  - name: too-long
    examples: ["summarise the whole archive", "read every chapter"]
    target: narrow
    policy: {fallback: [quick], context_fallback: wide}
  - name: too-long-now
    examples: ["translate the whole archive", "index every chapter"]
    target: narrow-now
    policy: {fallback: [quick], context_fallback: wide}
default: {target: thinker}
dispatch: {stream_hold_s: 0.2}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("keepalive")
    env = {"LLMROUTE_TELEMETRY_URL": f"sqlite:///{tmp / 'log.db'}"}
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


def _timed(url: str, body: dict[str, object]) -> tuple[int, float, list[tuple[float, str]]]:
    """The status, when the headers came, and each non-empty line with when it came
    (seconds after the request)."""
    status, headers_after, lines, _ = _timed_with_id(url, body)
    return status, headers_after, lines


def _timed_with_id(
    url: str, body: dict[str, object]
) -> tuple[int, float, list[tuple[float, str]], str]:
    """`_timed`, and the decision's id."""
    started = time.monotonic()
    with httpx.stream("POST", url, json=body, timeout=20) as r:
        headers_after = time.monotonic() - started
        lines = [(time.monotonic() - started, line) for line in r.iter_lines() if line]
    return r.status_code, headers_after, lines, r.headers["x-request-id"]


def _chat(model: str, text: str = "hi") -> dict[str, object]:
    return {"model": model, "stream": True, "messages": [{"role": "user", "content": text}]}


def _record(
    gateway: Served, decision_id: str, columns: str = "served_model, error, attempts"
) -> tuple[object, ...]:
    """The decision log's `columns` for `decision_id`."""
    db = gateway.log.parent / "log.db"
    query = f"select {columns} from decisions where id = ?"
    found: list[tuple[object, ...]] = []

    def logged() -> bool:
        if not db.exists():
            return False
        with contextlib.closing(sqlite3.connect(db)) as con:
            try:
                found[:] = con.execute(query, (decision_id,)).fetchall()
            except sqlite3.OperationalError:  # not made yet
                return False
        return bool(found)

    wait_for(f"decision {decision_id} logged", logged, 10, gateway.log)
    return found[0]


def test_a_model_silent_before_its_first_event_gets_the_status_line_and_keep_alives(
    gateway: Served,
) -> None:
    """OpenAI's API sends nothing while a reasoning model thinks (headers, then silence
    until the first output): the status line goes out after the hold (0.2 s), comments
    while the model is silent (1 s), then the whole answer, its opening first. The
    decision log's ``ttft_ms`` is when that first event went out, not the hand-over."""
    url = f"{gateway.url}/v1/chat/completions"
    status, headers_after, lines, decision_id = _timed_with_id(url, _chat("silent"))
    assert status == 200 and headers_after < 0.9  # the hold, not the first event (1 s)
    texts = [line for _, line in lines]
    first_data = next(i for i, line in enumerate(texts) if line.startswith("data:"))
    assert first_data > 0 and set(texts[:first_data]) == {": keep-alive"}
    assert lines[first_data][0] > headers_after
    chunks = [json.loads(line[5:]) for line in texts if line.startswith("data: {")]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "echo: hi "
    assert texts[-1] == "data: [DONE]"
    (ttft_ms,) = _record(gateway, decision_id, "ttft_ms")
    assert isinstance(ttft_ms, float) and ttft_ms >= 1000  # the model's silence (ttft=1)


@pytest.mark.parametrize(
    ("path", "body", "first"),
    [
        ("/v1/messages", {"max_tokens": 32}, "event: message_start"),
        ("/v1/responses", {"input": "hi"}, "event: response.created"),
        ("/v1/completions", {"prompt": "hi"}, "data: {"),
    ],
)
def test_the_fronts_stream_a_silent_model_after_the_hold_too(
    gateway: Served, path: str, body: dict[str, object], first: str
) -> None:
    ask = {"model": "silent", "stream": True, **body}
    if path == "/v1/messages":
        ask["messages"] = [{"role": "user", "content": "hi"}]
    status, headers_after, lines = _timed(f"{gateway.url}{path}", ask)
    assert status == 200 and headers_after < 0.9
    texts = [line for _, line in lines]
    first_event = next(i for i, line in enumerate(texts) if line != ": keep-alive")
    assert first_event > 0 and texts[first_event].startswith(first)


def test_the_clients_read_a_silent_models_streams_whole(gateway: Served) -> None:
    url = f"{gateway.url}/v1"
    with (
        openai.OpenAI(base_url=url, api_key="unused", max_retries=0) as client,
        client.responses.stream(model="silent", input="hi") as events,
    ):
        list(events)
        assert events.get_final_response().output_text.strip() == "echo: hi"
    ask = [{"role": "user", "content": "hi"}]
    with (
        anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0) as claude,
        claude.messages.stream(model="silent", max_tokens=32, messages=ask) as message,  # type: ignore[arg-type]
    ):
        assert message.get_final_text().strip() == "echo: hi"


def test_a_client_leaving_a_silent_stream_closes_its_upstream_call(
    gateway: Served, upstream: FakeUpstream
) -> None:
    """The client leaves while the model is still silent (after the hold, keep-alives
    going out): the read waiting on the model stops and its connection is closed then,
    not at the first-token limit (10 s); the decision is logged as the client's."""
    cut_before = len(upstream.cut)
    url = f"{gateway.url}/v1/chat/completions"
    with httpx.stream("POST", url, json=_chat("deep"), timeout=10) as r:
        decision_id = r.headers["x-request-id"]
        assert next(line for line in r.iter_lines() if line) == ": keep-alive"
    left = time.monotonic()
    wait_for("the upstream call closed", lambda: len(upstream.cut) > cut_before, 5, gateway.log)
    assert time.monotonic() - left < 5 and upstream.cut[-1] == ("up-deep?ttft=30", 0)
    served, error, _ = _record(gateway, decision_id)
    assert served == "deep" and error == "client_disconnected"
    log = gateway.log_text()
    assert "Traceback" not in log and "never retrieved" not in log


def test_a_silent_model_timing_out_after_the_hold_falls_back_in_the_same_stream(
    gateway: Served, upstream: FakeUpstream
) -> None:
    """The silent model's first-token limit (1 s) runs out after the stream went out:
    the fallback answers in it, its opening included (the client had seen none), and
    the decision log names both models."""
    before = len(upstream.requests)
    url = f"{gateway.url}/v1/chat/completions"
    started = time.monotonic()
    with httpx.stream("POST", url, json=_chat("mute-first", "a b"), timeout=20) as r:
        headers_after = time.monotonic() - started
        assert r.status_code == 200 and r.headers["x-llmroute-model"] == "mute"
        texts = [line for line in r.iter_lines() if line]
    assert headers_after < 0.9  # before the first-token limit ran out
    assert texts[0] == ": keep-alive"
    chunks = [json.loads(line[5:]) for line in texts if line.startswith("data: {")]
    assert {c["model"] for c in chunks} == {"up-quick"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "echo: a b "
    assert texts[-1] == "data: [DONE]"
    called = [r.body["model"] for r in upstream.requests[before:]]
    assert called == ["up-mute?ttft=30", "up-quick"]
    served, error, attempts = _record(gateway, r.headers["x-request-id"])
    assert served == "quick" and error is None
    (failed,) = json.loads(str(attempts))
    assert failed.startswith("mute via fake") and "no first token within 1s" in failed


def test_a_503_after_the_hold_goes_to_the_models_other_deployment_then_its_retry(
    gateway: Served, upstream: FakeUpstream
) -> None:
    """A pinned model whose deployments each answer 503 after the stream was handed
    over, before any event: as within the hold, the other deployment is called, then
    (both failed) the model is retried, and the retry's answer is the stream, whole; the
    decision log lists no failure (the model answered)."""
    before = len(upstream.requests)
    body = {"model": "flaky", "stream": True, "messages": [{"role": "user", "content": "x y"}]}
    url = f"{gateway.url}/v1/chat/completions"
    with httpx.stream("POST", url, json=body, timeout=20) as r:
        assert r.status_code == 200 and r.headers["x-llmroute-model"] == "flaky"
        texts = [line for line in r.iter_lines() if line]
    chunks = [json.loads(line[5:]) for line in texts if line.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "echo: x y "
    assert texts[-1] == "data: [DONE]"
    called = [r.body["model"] for r in upstream.requests[before:]]
    flaky = ["up-flaky1?delay=0.5&status=503&times=1", "up-flaky2?delay=0.5&status=503&times=1"]
    assert sorted(called[:2]) == flaky and len(called) == 3 and called[2] in flaky
    served, error, attempts = _record(gateway, r.headers["x-request-id"])
    assert served == "flaky" and error is None and json.loads(str(attempts)) == []


def test_a_context_length_error_after_the_hold_goes_to_the_context_fallback_in_the_stream(
    gateway: Served, upstream: FakeUpstream
) -> None:
    """A model refusing the request as too long for its context window after the stream
    was handed over, before its first event: the route's context fallback answers in the
    same stream (not the chain's `quick`), and the decision log says what it says when
    the refusal comes within the hold: the fallback served, the refusal the one failure."""
    logged = []
    for route, refusing in (("too-long-now", "up-narrow-now?context=1"), ("too-long", None)):
        before = len(upstream.requests)
        url = f"{gateway.url}/v1/chat/completions"
        with httpx.stream("POST", url, json=_chat(route, "a b"), timeout=20) as r:
            assert r.status_code == 200
            texts = [line for line in r.iter_lines() if line]
        chunks = [json.loads(line[5:]) for line in texts if line.startswith("data: {")]
        assert {c["model"] for c in chunks} == {"up-wide"} and texts[-1] == "data: [DONE]"
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == (
            "echo: a b "
        )
        called = [r.body["model"] for r in upstream.requests[before:]]
        assert called == [refusing or "up-narrow?delay=0.5&context=1", "up-wide"]
        served, error, attempts = _record(gateway, r.headers["x-request-id"])
        said = [re.sub(r"narrow(-now)?|req_\w+", "", a) for a in json.loads(str(attempts))]
        logged.append((served, error, said))
    assert logged[0] == logged[1]
    served, error, said = logged[1]
    assert served == "wide" and error is None and len(said) == 1 and "context window" in said[0]


def test_a_silent_model_alone_timing_out_after_the_hold_ends_with_an_error_event(
    gateway: Served,
) -> None:
    """No model left: 200 (it went out), then the error event and ``[DONE]``; the
    Messages API's client reads it as Anthropic's error event, the Responses API's as
    a failed response. No event of the model's went out: its ``ttft_ms`` is null, not
    the hand-over (the hold), which fed ``llmroute_ttft_seconds`` a time to a first
    token that never came."""
    url = f"{gateway.url}/v1/chat/completions"
    status, headers_after, lines, decision_id = _timed_with_id(url, _chat("mute"))
    texts = [line for _, line in lines if line != ": keep-alive"]
    assert status == 200 and headers_after < 0.9
    assert json.loads(texts[0][5:])["error"]["code"] == "upstream_error"
    assert texts[1:] == ["data: [DONE]"]
    assert _record(gateway, decision_id, "error, ttft_ms") == ("stream_interrupted", None)
    ask = {"model": "mute", "stream": True, "max_tokens": 32}
    ask["messages"] = [{"role": "user", "content": "hi"}]
    status, _, lines = _timed(f"{gateway.url}/v1/messages", ask)
    texts = [line for _, line in lines if line != ": keep-alive"]
    assert status == 200 and texts[0] == "event: error" and len(texts) == 2
    assert json.loads(texts[1][5:])["error"]["type"] == "api_error"
    ask = {"model": "mute", "stream": True, "input": "hi"}
    status, _, lines = _timed(f"{gateway.url}/v1/responses", ask)
    kinds = [line for _, line in lines if line.startswith("event:")]
    assert status == 200
    assert kinds == [
        "event: response.created",
        "event: response.in_progress",
        "event: response.failed",
    ]


def test_a_fast_upstream_refusal_still_answers_its_status(gateway: Served) -> None:
    """Within the hold nothing goes out: an upstream 400 at once is the client's 400."""
    url = f"{gateway.url}/v1/chat/completions"
    response = httpx.post(url, json=_chat("refuser"), timeout=20)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert "error" in response.json()
