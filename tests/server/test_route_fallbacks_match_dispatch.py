"""``POST /v1/route``'s ``fallbacks`` are what dispatch tries: `llmroute serve` (a real
process on 127.0.0.1) in front of a fake upstream where every model fails (500), so a
chat request for the same body and key goes down its whole chain; the models the
upstream was called for, in order, are the route's ``model`` then its ``fallbacks``.
Across a route's chain, a cascade, the default's chain, the LLM router's pick, a
conversation kept on its model (affinity), a key's pool and a pinned model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fake_upstream import FakeUpstream, fake_upstream
from gateway_proc import serve_text

PICKED = json.dumps({"route": "chat"})
REGISTRY = """
encoder: builtin:static
intent: {method: knn, k: 1}
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  a: {provider: fake, model: "a?status=500"}
  b: {provider: fake, model: "b?status=500"}
  c: {provider: fake, model: "c?status=500"}
  d: {provider: fake, model: "d?status=500"}
  e: {provider: fake, model: "e?status=500"}
  picker: {provider: fake, model: "picker?reply=%(picked)s"}
routes:
  - name: code
    examples: [debug this SQL query, write a python function]
    target: a
    policy: {fallback: [b, c]}
  - name: tiers
    examples: [translate this into french, say it in german]
    target: b
    cascade: [b, c, d]
    policy: {fallback: [a]}
  - name: chat
    examples: [hi there, how are you]
    target: d
    policy: {fallback: [e]}
default: {target: e, policy: {fallback: [c, a]}}
dispatch:
  retries: {attempts: 0}
  breaker: {enabled: false}
llm_fallback: {model: picker, margin: 1.0, timeout_s: 5}
affinity: {mode: keep}
auth:
  keys:
    - {name: open, key_env: LLMROUTE_TEST_OPEN_KEY}
    - {name: all, key_env: LLMROUTE_TEST_ALL_KEY, pool: [a, b, c, d, e]}
    - {name: narrow, key_env: LLMROUTE_TEST_NARROW_KEY, pool: [c, a]}
"""
OPEN_KEY = "sk-open-14142135623"  # no pool: the LLM router is asked
ALL_KEY = "sk-all-17320508075"  # every model but the picker: the LLM router is not
NARROW_KEY = "sk-narrow-24494897427"


@dataclass
class Running:
    url: str
    upstream: FakeUpstream


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    env = {
        "LLMROUTE_TEST_OPEN_KEY": OPEN_KEY,
        "LLMROUTE_TEST_ALL_KEY": ALL_KEY,
        "LLMROUTE_TEST_NARROW_KEY": NARROW_KEY,
        "LLMROUTE_TELEMETRY_URL": "off",
    }
    with fake_upstream() as upstream:
        text = REGISTRY % {"url": upstream.url, "picked": quote(PICKED)}
        folder = tmp_path_factory.mktemp("route-matches-dispatch")
        with serve_text(text, folder, env=env) as served:
            yield Running(served.url, upstream)


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _both(
    gateway: Running, messages: list[dict[str, str]], key: str = ALL_KEY, model: str = "auto"
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(what /v1/route says: route, model, fallbacks; the route and the models the
    upstream was called for when the request was sent to /v1/chat/completions)."""
    body: dict[str, Any] = {"model": model, "messages": messages}
    headers = {"authorization": f"Bearer {key}"}
    routed = httpx.post(f"{gateway.url}/v1/route", json=body, headers=headers, timeout=10)
    assert routed.status_code == 200, routed.text
    said = routed.json()
    before = len(gateway.upstream.requests)
    sent = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert sent.status_code == 502, sent.text
    called = [m.partition("?")[0] for m in gateway.upstream.models_called()[before:]]
    tried = tuple(m for m in called if m != "picker")
    return (
        (said["route"], said["model"], *said["fallbacks"]),
        (sent.headers["x-llmroute-route"], *tried),
    )


@pytest.mark.parametrize(
    ("text", "key", "model", "chain"),
    [
        ("debug this SQL query", ALL_KEY, "auto", ("code", "a", "b", "c")),
        ("translate this into french", ALL_KEY, "auto", ("tiers", "b", "c", "d")),
        ("translate this into french", ALL_KEY, "tiers", ("tiers", "b", "c", "d")),
        ("weather on mars tomorrow", ALL_KEY, "auto", ("default", "e", "c", "a")),
        ("weather on mars tomorrow", OPEN_KEY, "auto", ("chat", "d", "e")),  # the LLM's pick
        ("debug this SQL query", NARROW_KEY, "auto", ("code", "a", "c")),
        ("hi there", NARROW_KEY, "auto", ("chat", "c", "a")),  # the default's chain, inside
        ("debug this SQL query", ALL_KEY, "b", ("pinned", "b")),
        ("debug this SQL query", ALL_KEY, "code", ("code", "a", "b", "c")),
    ],
    ids=[
        "route",
        "cascade",
        "cascade-named",
        "default",
        "llm",
        "pool",
        "pool-default",
        "pin",
        "named",
    ],
)
def test_route_says_what_dispatch_tries(
    gateway: Running, text: str, key: str, model: str, chain: tuple[str, ...]
) -> None:
    said, tried = _both(gateway, _user(text), key, model)
    assert said == tried == chain


def test_a_conversation_kept_on_its_model(gateway: Running) -> None:
    opening = [{"role": "system", "content": "kept 1"}, *_user("hi there")]
    assert _both(gateway, opening) == (("chat", "d", "e"),) * 2
    later = [*opening, {"role": "assistant", "content": "hello"}, *_user("debug this SQL query")]
    said, tried = _both(gateway, later)
    assert said == tried == ("code", "d", "a", "b", "c")
