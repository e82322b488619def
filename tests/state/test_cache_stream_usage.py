"""A stream replayed from the response cache carries usage exactly as a fresh one
would for the client asking: the usage chunk (and OpenAI's ``"usage": null`` on each
chunk) only for a client that asked (``stream_options.include_usage``), and always for
one that did. The chat front stores the events as that client got them, under a key
holding its ``stream_options``; the converted fronts store the chat events (usage
always asked) and translate them per client, so a client asking differently from the
one whose stream was stored is answered right from the same entry. End to end:
`llmroute serve`, a fake upstream writing ``"usage": null`` as OpenAI does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fake_upstream import FakeUpstream, fake_upstream
from gateway_proc import Served, serve, wait_for

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: 'small?vary=1&nullusage=1', price: {input: 1, output: 2}}
routes:
  - {name: chat, examples: ["hello there", "how are you today"], target: small}
default: {target: small}
dispatch:
  retries: {attempts: 0}
cache: {ttl_s: 300}
"""
ASKED = {"include_usage": True}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, FakeUpstream]]:
    tmp = tmp_path_factory.mktemp("cache-stream-usage")
    registry = tmp / "registry.yaml"
    with fake_upstream() as upstream:
        registry.write_text(REGISTRY % {"url": upstream.url})
        env = {"LLMROUTE_TELEMETRY_URL": "off"}
        with serve(registry, tmp / "serve.log", env=env) as served:
            yield served, upstream


def _stream(served: Served, path: str, body: dict[str, Any]) -> tuple[str, list[Any]]:
    """The answer's ``x-llmroute-cache`` and its events' JSON (``[DONE]`` left out)."""
    with httpx.stream("POST", f"{served.url}{path}", json=body, timeout=10) as answer:
        assert answer.status_code == 200, answer.read()
        lines = [line[6:] for line in answer.iter_lines() if line.startswith("data: {")]
        return answer.headers["x-llmroute-cache"], [json.loads(line) for line in lines]


def _stored_count(served: Served) -> float:
    metrics = httpx.get(f"{served.url}/metrics", timeout=5).text
    for line in metrics.splitlines():
        if line.startswith('llmroute_cache_total{result="stored"}'):
            return float(line.split()[-1])
    return 0.0


def _miss_then_hit(
    served: Served, path: str, first: dict[str, Any], second: dict[str, Any]
) -> tuple[list[Any], list[Any]]:
    stored = _stored_count(served)
    cache, missed = _stream(served, path, first)
    assert cache == "miss"
    wait_for("the stream to be stored", lambda: _stored_count(served) > stored, 10)
    cache, hit = _stream(served, path, second)
    assert cache == "hit"
    return missed, hit


def _chat_usage(chunks: list[Any]) -> tuple[bool, Any]:
    """Whether any chunk but the last has a ``usage`` key, and the last's usage."""
    return any("usage" in c for c in chunks[:-1]), chunks[-1].get("usage", "absent")


@pytest.mark.parametrize("asked", [False, True])
def test_a_chat_stream_replays_usage_as_its_client_asked(
    gateway: tuple[Served, FakeUpstream], asked: bool
) -> None:
    served, _ = gateway
    text = f"hello there, asked {asked}"
    body: dict[str, Any] = {
        "model": "auto",
        "messages": [{"role": "user", "content": text}],
        "stream": True,
    }
    if asked:
        body["stream_options"] = ASKED
    missed, hit = _miss_then_hit(served, "/v1/chat/completions", body, body)
    for chunks in (missed, hit):
        nulls, last = _chat_usage(chunks)
        if asked:  # OpenAI's shape: null on each chunk, the counts on a last one
            assert nulls and all(c["usage"] is None for c in chunks[:-1])
            assert last["completion_tokens"] > 0 and chunks[-1]["choices"] == []
        else:
            assert not nulls and last == "absent"
    assert [c.get("choices") for c in hit] == [c.get("choices") for c in missed]
    if asked:
        assert hit[-1]["usage"]["cost_usd"] == 0.0 < missed[-1]["usage"]["cost_usd"]


def test_a_chat_stream_is_not_replayed_to_a_client_asking_otherwise(
    gateway: tuple[Served, FakeUpstream],
) -> None:
    served, _ = gateway
    body = {
        "model": "auto",
        "messages": [{"role": "user", "content": "hello there, once without usage"}],
        "stream": True,
    }
    _miss_then_hit(served, "/v1/chat/completions", body, body)
    cache, chunks = _stream(served, "/v1/chat/completions", {**body, "stream_options": ASKED})
    assert cache == "miss" and chunks[-1]["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize("stored_asked", [False, True])
def test_a_completions_stream_replays_usage_to_whoever_asks(
    gateway: tuple[Served, FakeUpstream], stored_asked: bool
) -> None:
    """Both share one entry (the chat body asks usage for either): each gets what it
    asked, whichever of them was stored."""
    served, _ = gateway
    plain = {"model": "auto", "prompt": f"hello there, stored {stored_asked}", "stream": True}
    asking = {**plain, "stream_options": ASKED}
    first, second = (asking, plain) if stored_asked else (plain, asking)
    missed, hit = _miss_then_hit(served, "/v1/completions", first, second)
    for chunks, body in ((missed, first), (hit, second)):
        usage = [c["usage"] for c in chunks if "usage" in c]
        if body is asking:
            assert len(usage) == 1 and usage[0]["completion_tokens"] > 0
            assert chunks[-1]["choices"] == []
        else:
            assert usage == []


def test_a_messages_stream_replays_its_usage(gateway: tuple[Served, FakeUpstream]) -> None:
    served, _ = gateway
    body = {
        "model": "auto",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "hello there, an anthropic client"}],
        "stream": True,
    }
    missed, hit = _miss_then_hit(served, "/v1/messages", body, body)
    for events in (missed, hit):
        (delta,) = [e for e in events if e["type"] == "message_delta"]
        assert delta["usage"]["output_tokens"] > 0 and delta["usage"]["input_tokens"] > 0


def test_a_responses_stream_replays_its_usage(gateway: tuple[Served, FakeUpstream]) -> None:
    served, _ = gateway
    body = {"model": "auto", "input": "hello there, a responses client", "stream": True}
    missed, hit = _miss_then_hit(served, "/v1/responses", body, body)
    for events in (missed, hit):
        (done,) = [e for e in events if e["type"] == "response.completed"]
        assert done["response"]["usage"]["output_tokens"] > 0


def test_replays_send_nothing_upstream(gateway: tuple[Served, FakeUpstream]) -> None:
    """The hits above were the cache's: one upstream request each miss."""
    served, upstream = gateway
    before = len(upstream.requests)
    body = {"model": "auto", "prompt": "hello there, counted", "stream": True}
    _miss_then_hit(served, "/v1/completions", body, {**body, "stream_options": ASKED})
    assert len(upstream.requests) == before + 1
