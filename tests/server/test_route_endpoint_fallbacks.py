"""``POST /v1/route`` on `llmroute serve` (a real process on 127.0.0.1) answers the
fallback chain dispatch would follow for the request and its key (``fallbacks``): a
route's, the default's, none for a guarded reroute or a pinned model, and a key's pool
leaving part of a chain out."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from gateway_proc import Served, serve_text

REGISTRY = """
encoder: builtin:static
intent: {method: knn, k: 1}
providers:
  p: {kind: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  small: {provider: p, model: s}
  large: {provider: p, model: l}
  spare: {provider: p, model: x}
  guarded: {provider: p, model: g}
routes:
  - name: code
    examples: [debug this SQL query, write a python function]
    target: large
    policy: {fallback: [small, spare]}
  - name: chat
    examples: [hi there, how are you]
    target: small
default: {target: small, policy: {fallback: [spare, large]}}
safety:
  injection: {enabled: false}
  profiles: {standard: {pii: {route: guarded}}}
auth:
  keys:
    - {name: open, key_env: LLMROUTE_TEST_OPEN_KEY}
    - {name: narrow, key_env: LLMROUTE_TEST_NARROW_KEY, pool: [small, spare, guarded]}
    - {name: spare-only, key_env: LLMROUTE_TEST_SPARE_KEY, pool: [spare, large]}
"""
OPEN_KEY = "sk-open-16180339887"
NARROW_KEY = "sk-narrow-26457513110"
SPARE_KEY = "sk-spare-22360679774"

CODE = "debug this SQL query"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    env = {
        "LLMROUTE_TEST_OPEN_KEY": OPEN_KEY,
        "LLMROUTE_TEST_NARROW_KEY": NARROW_KEY,
        "LLMROUTE_TEST_SPARE_KEY": SPARE_KEY,
        "LLMROUTE_TELEMETRY_URL": "off",
    }
    with serve_text(REGISTRY, tmp_path_factory.mktemp("route-fallbacks"), env=env) as served:
        yield served


def _route(gateway: Served, text: str, key: str = OPEN_KEY, model: str = "auto") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    headers = {"authorization": f"Bearer {key}"}
    return httpx.post(f"{gateway.url}/v1/route", json=body, headers=headers, timeout=10)


def _chain(gateway: Served, text: str, key: str = OPEN_KEY, model: str = "auto") -> tuple[str, ...]:
    answer = _route(gateway, text, key, model)
    assert answer.status_code == 200, answer.text
    decision = answer.json()
    return (decision["route"], decision["model"], *decision["fallbacks"])


def test_a_routes_chain_and_the_defaults_for_an_unclaimed_request(gateway: Served) -> None:
    assert _chain(gateway, CODE) == ("code", "large", "small", "spare")
    assert _chain(gateway, "weather on mars") == ("default", "small", "spare", "large")
    assert _chain(gateway, "hi there") == ("chat", "small")


def test_a_guarded_reroute_and_a_pinned_model_have_none(gateway: Served) -> None:
    assert _chain(gateway, f"{CODE} for bob@example.com") == ("code", "guarded")
    assert _chain(gateway, CODE, model="spare") == ("pinned", "spare")
    assert _chain(gateway, CODE, model="code") == ("code", "large", "small", "spare")


def test_a_keys_pool_drops_part_of_the_chain(gateway: Served) -> None:
    # large is outside: its first fallback inside serves, then the next inside
    assert _chain(gateway, CODE, NARROW_KEY) == ("code", "small", "spare")
    assert _chain(gateway, CODE, SPARE_KEY) == ("code", "large", "spare")
    # nothing of chat's chain inside: the default's chain inside the pool
    assert _chain(gateway, "hi there", SPARE_KEY) == ("chat", "spare", "large")
    refused = _route(gateway, f"{CODE} for bob@example.com", SPARE_KEY)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "model_not_allowed"
