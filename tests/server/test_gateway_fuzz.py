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

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
  claude: {kind: anthropic, base_url: "%(anthropic)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small}
  sonnet: {provider: claude, model: claude-x, reasoning: {effort: low}}
  embed: {provider: fake, model: up-embed, kind: embedding}
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


def test_the_serve_log_holds_no_traceback(gateway: Served) -> None:
    assert "Traceback" not in gateway.log.read_text()
