"""Malformed upstream answers end to end: `llmroute serve` as a subprocess, the official
`openai` client in front, the fake upstream (a real HTTP server) behind. A 200 without
choices, or a stream whose first event is not JSON, falls back like any failure, or
with nothing left is a 502 ``upstream_error`` naming the attempts, on every API; an
event that is not JSON after the first words ends the stream with the gateway's error
event, never the garbage."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest
from fake_upstream import FakeUpstream
from gateway_proc import Served, serve_text

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small, price: {input: 1, output: 2}}
  hollow: {provider: fake, model: "up-hollow?shape=none", price: {input: 1, output: 2}}
  bare: {provider: fake, model: "up-bare?shape=bare"}
  garbled: {provider: fake, model: "up-garbled?garbage=first"}
  garbled-late: {provider: fake, model: "up-garbled?garbage=late"}
  coder-hollow: {provider: fake, model: "up-coder?shape=empty", text_completions: true}
  nan: {provider: fake, model: "up-nan?shape=nan"}
  nan-stream: {provider: fake, model: "up-nan?garbage=nan"}
  nan-rerank: {provider: fake, model: "up-rerank?nan=1", kind: rerank, price: {input: 1}}
  split: {provider: fake, model: "up-split?split=1"}
routes:
  - name: hollow-route
    examples: ["tell me about volcanoes"]
    target: hollow
    policy: {fallback: [small]}
  - name: garbled-route
    examples: ["plan a trip to Rome"]
    target: garbled
    policy: {fallback: [small]}
default: {target: small}
dispatch:
  retries: {attempts: 1, backoff_s: 0.01, max_backoff_s: 0.02}
  breaker: {enabled: false}
"""
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("malformed")
    text = REGISTRY % {"url": upstream.url}
    with serve_text(text, tmp, env={"LLMROUTE_TELEMETRY_URL": "off"}) as served:
        yield served


@pytest.fixture(scope="module")
def client(gateway: Served) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


def test_an_answer_without_choices_goes_to_the_fallback(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="hollow-route", messages=USER)
    assert raw.headers["x-llmroute-model"] == "small"
    assert raw.parse().choices[0].message.content == "echo: hi"


@pytest.mark.parametrize("model", ["hollow", "bare"])
def test_an_answer_without_choices_and_no_fallback_is_a_502(
    client: openai.OpenAI, model: str
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=model, messages=USER)
    assert caught.value.status_code == 502 and caught.value.code == "upstream_error"
    body = caught.value.body
    assert isinstance(body, dict) and len(body["attempts"]) == 1
    assert "without choices" in body["attempts"][0]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/responses", {"model": "hollow", "input": "hi"}),
        ("/v1/messages", {"model": "hollow", "max_tokens": 16, "messages": USER}),
        ("/v1/completions", {"model": "hollow", "prompt": "hi"}),
        ("/v1/completions", {"model": "coder-hollow", "prompt": "def f("}),  # raw text
    ],
)
def test_every_api_fails_an_answer_without_choices(
    gateway: Served, path: str, body: dict[str, object]
) -> None:
    response = httpx.post(f"{gateway.url}{path}", json=body, timeout=10)
    assert response.status_code == 502, response.text
    assert "without choices" in response.text


def test_a_stream_opening_with_an_event_that_is_not_json_goes_to_the_fallback(
    client: openai.OpenAI,
) -> None:
    stream = client.chat.completions.create(model="garbled-route", messages=USER, stream=True)
    with stream:
        chunks = list(stream)
    assert {c.model for c in chunks} == {"up-small"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip() == (
        "echo: hi"
    )


def test_a_stream_opening_with_an_event_that_is_not_json_and_no_fallback_is_a_502(
    client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="garbled", messages=USER, stream=True)
    assert caught.value.status_code == 502 and caught.value.code == "upstream_error"
    body = caught.value.body
    assert isinstance(body, dict) and "not JSON" in body["attempts"][0]


def test_an_event_that_is_not_json_after_the_first_words_ends_with_an_error_event(
    gateway: Served, client: openai.OpenAI
) -> None:
    stream = client.chat.completions.create(model="garbled-late", messages=USER, stream=True)
    with stream, pytest.raises(openai.APIError) as caught:
        for _ in stream:
            pass
    assert not isinstance(caught.value, openai.APIStatusError)  # the error event
    body = {"model": "garbled-late", "messages": USER, "stream": True}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=10) as r:
        raw = r.read()
    assert b"not json" not in raw and b'"upstream_error"' in raw
    assert raw.rstrip().endswith(b"data: [DONE]")


@pytest.mark.parametrize("api", ["chat", "messages", "responses"])
def test_a_stream_that_cuts_an_emoji_in_two_is_answered_to_its_end(
    gateway: Served, api: str
) -> None:
    """An upstream (a proxy slicing UTF-16 strings) that sends an emoji's two halves in
    two events ended the answer with "the upstream stream broke off" after its first
    words; now each half is U+FFFD and the answer goes on to its end, on every API."""
    said = [{"role": "user", "content": "party \U0001f389 now"}]
    path, body, pick = {
        "chat": (
            "/v1/chat/completions",
            {"messages": said},
            lambda e: "".join(
                (c.get("delta") or {}).get("content") or "" for c in e.get("choices", [])
            ),
        ),
        "messages": (
            "/v1/messages",
            {"messages": said, "max_tokens": 50},
            lambda e: (
                (e.get("delta") or {}).get("text", "")
                if e.get("type") == "content_block_delta"
                else ""
            ),
        ),
        "responses": (
            "/v1/responses",
            {"input": said},
            lambda e: e.get("delta", "") if e.get("type") == "response.output_text.delta" else "",
        ),
    }[api]
    body = {**body, "model": "split", "stream": True}
    with httpx.stream("POST", f"{gateway.url}{path}", json=body, timeout=10) as r:
        assert r.status_code == 200
        lines = [line[6:] for line in r.iter_lines() if line.startswith("data: {")]
    events = [json.loads(line) for line in lines]
    assert not any("error" in e or e.get("type") in ("error", "response.failed") for e in events)
    assert "".join(pick(e) for e in events).rstrip() == "echo: party \ufffd\ufffd now"


def test_an_answer_holding_nan_is_a_502_not_a_500(gateway: Served) -> None:
    """NaN and Infinity are not JSON: an upstream answer holding one (a logprob, a
    relevance score) fails the call like a body that is not JSON, and is not charged,
    rather than breaking the gateway's own answer."""
    chat = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "nan", "messages": USER},
        timeout=10,
    )
    assert chat.status_code == 502, chat.text
    assert chat.json()["error"]["code"] == "upstream_error"
    rerank = httpx.post(
        f"{gateway.url}/v1/rerank",
        json={"model": "nan-rerank", "query": "q", "documents": ["a", "b"]},
        timeout=10,
    )
    assert rerank.status_code == 502, rerank.text
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json={"model": "nan-stream", "messages": USER, "stream": True},
        timeout=10,
    ) as stream:
        assert stream.status_code == 502  # its first event: nothing had been sent
