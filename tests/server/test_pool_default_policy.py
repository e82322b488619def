"""A routed request a client key's pool sends to the default is served as the default's
own, on `llmroute serve` (a real process on 127.0.0.1, the fake OpenAI upstream behind
it): the default's safety profile applies too (the stricter action wins: its block, its
redaction, its guarded model; the route's redaction is kept), and its reasoning tier
serves a request the gate finds needs one. They were the route's alone: the default's
block, redaction and tier were never applied (the request checked under the route's
profile, dispatched with the default's policy)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fake_upstream import FakeUpstream
from gateway_proc import Served, serve_text

TEAM_KEY = "sk-team-41421356237"
NARROW_KEY = "sk-narrow-73205080756"
OPEN_KEY = "sk-open-22360679774"

REGISTRY = """
encoder: builtin:static
intent: {method: knn, k: 1}
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small}
  large: {provider: fake, model: up-large}
  guarded: {provider: fake, model: up-guarded}
  thinker: {provider: fake, model: up-thinker}
routes:
  - name: code
    examples: [debug this SQL query, write a python function]
    target: large
    threshold: 0.25
    policy: {safety: open}
  - name: mail
    examples: [send a letter to my landlord, write a note to my neighbour]
    target: large
    threshold: 0.25
    policy: {safety: careful}
default:
  target: small
  reasoning_target: thinker
  policy: {safety: strict}
safety:
  injection: {enabled: false}
  profiles:
    open: {pii: allow}
    careful: {pii: redact}
    strict: {pii: {EMAIL: redact, US_SSN: block, IBAN: {route: guarded}, "*": allow}}
  profile: open
reasoning: {scorer: null}
auth:
  keys:
    - {name: team, key_env: LLMROUTE_TEST_TEAM_KEY, pool: [small, guarded, thinker]}
    - {name: narrow, key_env: LLMROUTE_TEST_NARROW_KEY, pool: [small]}
    - {name: open, key_env: LLMROUTE_TEST_OPEN_KEY}
"""

CODE = "write a python function"
EMAIL = f"{CODE} from bob@example.com"
SSN = f"{CODE} for ssn 536-22-1234"
IBAN = f"{CODE} for iban GB82 WEST 1234 5698 7654 32"
PHONE = "send a letter to my landlord, call +44 20 7946 0958"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Served]:
    env = {
        "LLMROUTE_TEST_TEAM_KEY": TEAM_KEY,
        "LLMROUTE_TEST_NARROW_KEY": NARROW_KEY,
        "LLMROUTE_TEST_OPEN_KEY": OPEN_KEY,
        "LLMROUTE_TELEMETRY_URL": "off",
    }
    tmp = tmp_path_factory.mktemp("pool-default-policy")
    with serve_text(REGISTRY % {"url": upstream.url}, tmp, env=env) as served:
        yield served


def _post(gateway: Served, path: str, key: str, text: str) -> httpx.Response:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    headers = {"authorization": f"Bearer {key}"}
    return httpx.post(f"{gateway.url}{path}", json=body, headers=headers, timeout=10)


def _route(gateway: Served, key: str, text: str) -> dict[str, object]:
    answer = _post(gateway, "/v1/route", key, text)
    assert answer.status_code == 200, answer.text
    decided: dict[str, object] = answer.json()
    return decided


def _sent(upstream: FakeUpstream, before: int) -> list[tuple[str, str]]:
    """The models called since `before`, with the text each was sent."""
    return [
        (r.body["model"], r.body["messages"][-1]["content"]) for r in upstream.requests[before:]
    ]


def test_the_defaults_block_holds_for_a_request_the_pool_sends_there(
    gateway: Served, upstream: FakeUpstream
) -> None:
    """Route code allows an SSN, the default blocks it: the key whose pool holds none of
    code's models is refused, nothing sent; a key without a pool is served by code."""
    assert _route(gateway, OPEN_KEY, SSN)["safety"] == {
        "profile": "open",
        "action": "allow",
        "fired": ["pii:US_SSN"],
        "pii": {"US_SSN": 1},
        "windows": 0,
    }
    decided = _route(gateway, TEAM_KEY, SSN)
    assert decided["route"] == "code" and decided["fallbacks"] == []
    safety = decided["safety"]
    assert isinstance(safety, dict)
    assert (safety["profile"], safety["action"]) == ("open+strict", "block")
    assert "the default's safety policy blocks it" in str(decided["reason"])

    before = len(upstream.requests)
    refused = _post(gateway, "/v1/chat/completions", TEAM_KEY, SSN)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "content_policy_violation"
    assert "open+strict" in error["message"] and "pii:US_SSN" in error["message"]
    assert "536-22" not in refused.text
    assert _sent(upstream, before) == []


def test_the_defaults_redaction_applies_and_the_routes_is_kept(
    gateway: Served, upstream: FakeUpstream
) -> None:
    """The default redacts an e-mail address route code allows; route mail redacts a
    phone number the default allows: the stricter of the two wins either way."""
    decided = _route(gateway, TEAM_KEY, EMAIL)
    assert (decided["model"], decided["fallbacks"]) == ("small", [])
    safety = decided["safety"]
    assert isinstance(safety, dict)
    assert (safety["profile"], safety["action"]) == ("open+strict", "redact")

    before = len(upstream.requests)
    served = _post(gateway, "/v1/chat/completions", TEAM_KEY, EMAIL)
    assert served.status_code == 200, served.text
    assert _sent(upstream, before) == [("up-small", f"{CODE} from <EMAIL_1>")]

    before = len(upstream.requests)
    served = _post(gateway, "/v1/chat/completions", TEAM_KEY, PHONE)
    assert served.status_code == 200, served.text
    assert served.headers["x-llmroute-route"] == "mail"
    assert _sent(upstream, before) == [("up-small", "send a letter to my landlord, call <PHONE_1>")]


def test_the_defaults_guarded_model_serves_alone_inside_the_pool(
    gateway: Served, upstream: FakeUpstream
) -> None:
    """The default sends an IBAN to its guarded model: served there alone for a pool
    holding it; a pool without it is refused (403), the text never leaves."""
    decided = _route(gateway, TEAM_KEY, IBAN)
    assert (decided["route"], decided["model"], decided["fallbacks"]) == ("code", "guarded", [])
    before = len(upstream.requests)
    served = _post(gateway, "/v1/chat/completions", TEAM_KEY, IBAN)
    assert served.status_code == 200, served.text
    assert [model for model, _ in _sent(upstream, before)] == ["up-guarded"]

    before = len(upstream.requests)
    refused = _post(gateway, "/v1/chat/completions", NARROW_KEY, IBAN)
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert error["code"] == "model_not_allowed"
    assert "may not be served by guarded" in error["message"]
    assert _sent(upstream, before) == []


def test_the_defaults_reasoning_tier_serves_a_request_that_needs_one(
    gateway: Served, upstream: FakeUpstream
) -> None:
    """Route code has no reasoning tier, the default has thinker: a request the gate
    finds needs reasoning is served by thinker, then the default's others inside."""
    text = f"{CODE} step by step"
    assert _route(gateway, OPEN_KEY, text)["model"] == "large"
    decided = _route(gateway, TEAM_KEY, text)
    assert (decided["model"], decided["fallbacks"]) == ("thinker", ["small"])
    reasoning = decided["reasoning"]
    assert isinstance(reasoning, dict) and reasoning["tier"] == "thinker"
    before = len(upstream.requests)
    served = _post(gateway, "/v1/chat/completions", TEAM_KEY, text)
    assert served.status_code == 200, served.text
    assert [model for model, _ in _sent(upstream, before)] == ["up-thinker"]
    # no reasoning needed: the default's pick, as before
    assert _route(gateway, TEAM_KEY, CODE)["model"] == "small"
