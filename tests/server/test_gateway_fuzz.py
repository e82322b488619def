"""Whatever a client posts, `llmroute serve` answers with a success, a 4xx, or (when the
upstream itself fails on what it was sent) a 502, in the error format of the API it
speaks: never a 500 of its own or a traceback (a real gateway on
127.0.0.1, the fake OpenAI and Anthropic upstreams behind it). Bodies are random JSON
built from the APIs' own keys and values; a bounded number per endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fake_anthropic import fake_anthropic
from fake_upstream import fake_upstream
from gateway_proc import Served, serve_text
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_front_fuzz import _bodies

from llmroute.server.body import MAX_DEPTH

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
  claude: {kind: anthropic, base_url: "%(anthropic)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small}
  sonnet: {provider: claude, model: claude-x, reasoning: {effort: low}}
  embed: {provider: fake, model: up-embed, kind: embedding}
  broken: {provider: fake, model: "broken?deep=100000"}
routes:
  - name: code
    examples: ["write a Python function to parse JSON", "debug this SQL query"]
    target: sonnet
    policy: {fallback: [small]}
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: small
default: {target: small}
aliases: {"gpt-*": auto}
safety: {}
cache: {semantic: {threshold: 0.9}}
dispatch:
  retries: {attempts: 0}
  breaker: {enabled: false}
"""

ENDPOINTS = [
    "/v1/chat/completions",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/responses",
    "/v1/route",
    "/v1/embeddings",
]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("fuzz")
    with fake_upstream() as up, fake_anthropic() as claude:
        text = REGISTRY % {"url": up.url, "anthropic": claude.url}
        with serve_text(text, tmp, env={"LLMROUTE_TELEMETRY_URL": "off"}) as s:
            yield s


@pytest.fixture(scope="module")
def http(gateway: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=20) as client:
        yield client


@pytest.mark.parametrize("path", ENDPOINTS)
@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=_bodies, model=st.sampled_from(["auto", "code", "small", "sonnet", "gpt-4o", "embed", "x"])
)
def test_no_body_is_a_500(http: httpx.Client, path: str, body: dict[str, Any], model: str) -> None:
    response = http.post(path, json={**body, "model": model})
    assert response.status_code in (200, 400, 404, 413, 422, 502), (path, body, response.text)
    if response.status_code >= 400:
        error = response.json()
        if path.startswith("/v1/messages"):
            assert error["type"] == "error" and error["error"]["message"]
        else:
            assert error["error"]["message"]


def _nested(levels: int) -> str:
    """A chat body whose ``metadata`` makes it nest `levels` deep in all."""
    inner = "[" * (levels - 2) + "]" * (levels - 2)
    chat = '"model": "auto", "messages": [{"role": "user", "content": "hi"}]'
    return "{" + chat + ', "metadata": {"x": ' + inner + "}}"


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_body_nested_too_deep_is_a_400(http: httpx.Client, path: str) -> None:
    """Nesting past what the parser can take (100,000 levels: Python's own recursion
    limit) or past `MAX_DEPTH`, which the walks after it can take, is refused with the
    API's own 400; a body exactly `MAX_DEPTH` deep is not refused for its depth."""
    for levels in (100_000, MAX_DEPTH + 1):
        response = http.post(path, content=_nested(levels))
        assert response.status_code == 400, (path, levels, response.text)
        error = response.json()["error"]
        assert f"more than {MAX_DEPTH} levels deep" in error["message"]
        if path.startswith("/v1/messages"):
            assert response.json()["type"] == "error"
    deepest = http.post(path, content=_nested(MAX_DEPTH))
    assert "levels deep" not in deepest.text


def test_json_too_deep_in_a_tool_call_or_an_upstream_answer_is_no_500(
    http: httpx.Client,
) -> None:
    """Nesting too deep inside a string the gateway parses (a client's tool-call
    arguments, sent on to an Anthropic model) is the client's 400; an upstream that
    answers with such JSON is a 502, through each front."""
    deep = "[" * 100_000 + "]" * 100_000
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": deep}}
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ]
    sent = http.post("/v1/chat/completions", json={"model": "sonnet", "messages": messages})
    assert sent.status_code == 400, sent.text
    assert "arguments" in sent.json()["error"]["message"]
    ask = [{"role": "user", "content": "hi"}]
    chat = http.post("/v1/chat/completions", json={"model": "broken", "messages": ask})
    assert chat.status_code == 502 and "not JSON" in chat.json()["error"]["message"]
    messages_front = http.post(
        "/v1/messages", json={"model": "broken", "max_tokens": 10, "messages": ask}
    )
    assert messages_front.status_code == 502 and messages_front.json()["type"] == "error"
    responses = http.post("/v1/responses", json={"model": "broken", "input": "hi"})
    assert responses.status_code == 502 and responses.json()["error"]["message"]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_string_that_is_not_unicode_is_a_400(http: httpx.Client, path: str) -> None:
    """An unpaired UTF-16 surrogate (``\\ud800``) parses into a string no encoder takes;
    it is the client's 400 in the API's own format, while a pair (an emoji) is text."""
    broken = b'{"model": "auto", "messages": [{"role": "user", "content": "hi \\ud800"}]}'
    response = http.post(path, content=broken)
    assert response.status_code == 400, (path, response.text)
    assert "unpaired UTF-16 surrogate" in response.json()["error"]["message"]
    paired = broken.replace(b"\\ud800", b"\\ud83d\\ude00")
    assert "surrogate" not in http.post(path, content=paired).text


def test_the_serve_log_holds_no_traceback(gateway: Served) -> None:
    assert "Traceback" not in gateway.log.read_text()
