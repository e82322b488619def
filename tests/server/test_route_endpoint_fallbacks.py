"""``POST /v1/route`` on `llmroute serve` (a real process on 127.0.0.1) answers the
fallback chain dispatch would follow for the request and its key (``fallbacks``): a
route's, the default's, none for a guarded reroute or a pinned model, and a key's pool
leaving part of a chain out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gateway_proc import Served, serve_text
from pool_registries import FALLBACKS, random_difficulty_router

REGISTRY = (
    FALLBACKS
    + """auth:
  keys:
    - {name: open, key_env: LLMROUTE_TEST_OPEN_KEY}
    - {name: narrow, key_env: LLMROUTE_TEST_NARROW_KEY, pool: [small, spare, guarded]}
    - {name: spare-only, key_env: LLMROUTE_TEST_SPARE_KEY, pool: [spare, large]}
"""
)
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


DIFFICULTY = """
encoder: builtin:static
intent: {method: knn, k: 1}
providers:
  p: {kind: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  small: {provider: p, model: s}
  large: {provider: p, model: l}
  mid: {provider: p, model: m}
  spare: {provider: p, model: x}
routes:
  - {name: code, examples: [debug this SQL query, write a python function], target: mid}
default:
  target: spare
  difficulty: {router: %(router)s, strong: large, weak: small, threshold: %(threshold)s}
  policy: {fallback: [large]}
auth:
  keys:
    - {name: picks, key_env: LLMROUTE_TEST_PICKS_KEY, pool: [small, large]}
    - {name: target, key_env: LLMROUTE_TEST_TARGET_KEY, pool: [spare]}
"""
PICKS_KEY = "sk-picks-31622776601"
TARGET_KEY = "sk-target-24494897427"


@pytest.fixture(scope="module")
def difficulty_router(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(random_difficulty_router(tmp_path_factory.mktemp("difficulty")))


@pytest.mark.parametrize(("threshold", "pick"), [("1000", "small"), ("-1000", "large")])
def test_a_pool_fall_to_the_default_is_served_by_its_difficulty_routers_pick(
    difficulty_router: str, threshold: str, pick: str, tmp_path: Path
) -> None:
    """Route code's model is outside the key's pool: the default serves the request, as
    it serves an unclaimed one, on the model its difficulty router picks for it (weak
    below the threshold, strong above), then its fallbacks inside the pool. It was
    the default's target (outside the pool here): a 403, the picks never tried."""
    text = DIFFICULTY % {"router": difficulty_router, "threshold": threshold}
    env = {
        "LLMROUTE_TEST_PICKS_KEY": PICKS_KEY,
        "LLMROUTE_TEST_TARGET_KEY": TARGET_KEY,
        "LLMROUTE_TELEMETRY_URL": "off",
    }
    with serve_text(text, tmp_path, env=env) as served:
        unclaimed = _route(served, "weather on mars", PICKS_KEY).json()
        assert (unclaimed["layer"], unclaimed["model"]) == ("difficulty", pick)
        answer = _route(served, CODE, PICKS_KEY)
        assert answer.status_code == 200, answer.text
        decision = answer.json()
        fallbacks = [] if pick == "large" else ["large"]
        assert (decision["route"], decision["model"], decision["fallbacks"]) == (
            "code",
            pick,
            fallbacks,
        )
        assert decision["reason"].endswith(
            f"route 'code' has no model in key 'picks''s pool: served by the default, {pick}"
        )
        # the pick outside the pool: the default's target is still tried, as before
        for text in (CODE, "weather on mars"):
            kept = _route(served, text, TARGET_KEY).json()
            assert (kept["model"], kept["fallbacks"]) == ("spare", []), kept
        assert kept["reason"].endswith("served by the default, spare")


STRONG_ONLY_KEY = "sk-strong-26457513110"


def test_a_difficulty_model_asked_for_keeps_its_threshold_in_a_pool(
    difficulty_router: str, tmp_path: Path
) -> None:
    """``router-<name>-<threshold>``: the client's threshold picked the weak model, which
    is outside the key's pool, as the default's target is: refused, as before the pool's
    fall tried the default's pick. The pick was scored again at the registry's
    threshold (every request strong here) and served by the strong model, a model the
    client's threshold did not pick."""
    registry = DIFFICULTY.replace("  policy: {fallback: [large]}\n", "") % {
        "router": difficulty_router,
        "threshold": "-1000",
    }
    registry += "    - {name: strong, key_env: LLMROUTE_TEST_STRONG_KEY, pool: [large]}\n"
    env = {
        "LLMROUTE_TEST_PICKS_KEY": PICKS_KEY,
        "LLMROUTE_TEST_TARGET_KEY": TARGET_KEY,
        "LLMROUTE_TEST_STRONG_KEY": STRONG_ONLY_KEY,
        "LLMROUTE_TELEMETRY_URL": "off",
    }
    with serve_text(registry, tmp_path, env=env) as served:
        unclaimed = _route(served, "weather on mars", STRONG_ONLY_KEY).json()
        assert (unclaimed["layer"], unclaimed["model"]) == ("difficulty", "large")
        asked = unclaimed["reason"]
        name = next(m["id"] for m in _models(served) if m["id"].startswith("router-"))
        assert name.endswith("--1000"), name  # router-<name>-<the registry's threshold>
        weak = name.removesuffix("-1000") + "1000"
        refused = _route(served, "weather on mars", STRONG_ONLY_KEY, model=weak)
        assert refused.status_code == 403, (asked, refused.text)
        assert refused.json()["error"]["code"] == "model_not_allowed"
        # the picks' own threshold still serves a routed request the default gets
        assert _chain(served, CODE, STRONG_ONLY_KEY) == ("code", "large")


def _models(gateway: Served) -> list[dict[str, str]]:
    headers = {"authorization": f"Bearer {STRONG_ONLY_KEY}"}
    answer = httpx.get(f"{gateway.url}/v1/models", headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    data: list[dict[str, str]] = answer.json()["data"]
    return data
