"""`llmroute serve` behind a reverse proxy: every event stream tells a buffering proxy
not to hold it (``X-Accel-Buffering: no``, which nginx honours; nginx buffers a proxied
answer by default, and would hold a stream's events until it ended) and no cache to
keep it (``Cache-Control: no-cache``). On a real gateway, through each API that streams:
chat (answered upstream and from the cache), legacy completions, Messages, Responses, and a
background response's stream, as it is made and as it is read again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fake_upstream import FakeUpstream
from gateway_proc import Served, serve_text

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small}
routes:
  - {name: chat, examples: ["hello there", "how are you today"], target: small}
default: {target: small}
cache: {ttl_s: 300}
stored_responses: {ttl_s: 600}
telemetry: {enabled: false}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("proxied")
    with serve_text(REGISTRY % {"url": upstream.url}, tmp) as served:
        yield served


def _streamed(url: str, body: dict[str, Any] | None = None) -> tuple[httpx.Headers, str]:
    """The headers and whole text of a stream (POST `body`, or GET without one)."""
    method = "GET" if body is None else "POST"
    with httpx.stream(method, url, json=body, timeout=10) as response:
        text = response.read().decode()
        assert response.status_code == 200, text
        return response.headers, text


def _proxy_safe(headers: httpx.Headers) -> None:
    assert headers["content-type"].startswith("text/event-stream")
    assert headers.get("x-accel-buffering") == "no", headers
    assert headers.get("cache-control") == "no-cache", headers


def test_every_stream_tells_a_buffering_proxy_to_pass_it_on(gateway: Served) -> None:
    v1 = f"{gateway.url}/v1"
    chat = {
        "model": "auto",
        "messages": [{"role": "user", "content": "hello there, proxy"}],
        "stream": True,
    }
    first, _ = _streamed(f"{v1}/chat/completions", chat)
    again, _ = _streamed(f"{v1}/chat/completions", chat)
    assert (first["x-llmroute-cache"], again["x-llmroute-cache"]) == ("miss", "hit")
    legacy, _ = _streamed(
        f"{v1}/completions", {"model": "small", "prompt": "hello", "stream": True}
    )
    messages, _ = _streamed(
        f"{v1}/messages",
        {
            "model": "small",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "how are you today"}],
            "stream": True,
        },
    )
    responses, _ = _streamed(f"{v1}/responses", {"model": "small", "input": "hi", "stream": True})
    made, text = _streamed(
        f"{v1}/responses",
        {"model": "small", "input": "one two", "background": True, "stream": True},
    )
    created = json.loads(text.split("data: ", 1)[1].split("\n", 1)[0])
    response_id = created["response"]["id"]
    read_again, _ = _streamed(f"{v1}/responses/{response_id}?stream=true")
    for headers in (first, again, legacy, messages, responses, made, read_again):
        _proxy_safe(headers)


def test_an_answer_that_is_not_a_stream_is_left_to_the_proxy(gateway: Served) -> None:
    answer = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "hello, no stream"}]},
        timeout=10,
    )
    assert answer.status_code == 200
    assert "x-accel-buffering" not in answer.headers
