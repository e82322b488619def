"""A client key's ``pool`` on `llmroute serve` (a real process on 127.0.0.1, the fake
OpenAI upstream behind it): routing, fallbacks, the LLM router, shadow copies and
embeddings stay inside the models the key may reach; a request with no model inside is
refused before anything is sent."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fake_upstream import FakeUpstream
from gateway_proc import Served, serve_text

from llmroute.registry import ConfigErrors, parse_registry

INTERNAL_KEY = "sk-internal-31415926535"
OPEN_KEY = "sk-open-27182818284590"
NARROW_KEY = "sk-narrow-14142135623"
SPARE_KEY = "sk-spare-17320508075"

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small}
  large: {provider: fake, model: up-large}
  ref: {provider: fake, model: up-ref}
  picker: {provider: fake, model: up-picker}
  spare: {provider: fake, model: up-spare}
  embed: {provider: fake, model: up-embed, kind: embedding}
  embed-ext: {provider: fake, model: up-embed-ext, kind: embedding}
routes:
  - name: code
    examples: ["write a Python function to parse JSON", "debug this SQL query"]
    target: large
    policy: {fallback: [small]}
  - name: legal
    examples: ["review this contract clause for me", "is this NDA enforceable"]
    target: large
default: {target: small, policy: {fallback: [spare]}}
llm_fallback: {model: picker, margin: 1.0, timeout_s: 5}
shadow: {rate: 1.0, reference: ref}
auth:
  keys:
    - {name: internal, key_env: LLMROUTE_TEST_INTERNAL_KEY, pool: [small, embed]}
    - {name: open, key_env: LLMROUTE_TEST_OPEN_KEY}
    - {name: narrow, key_env: LLMROUTE_TEST_NARROW_KEY, models: [small, embed-ext]}
    - {name: spare, key_env: LLMROUTE_TEST_SPARE_KEY, pool: [spare]}
"""

CODE = "write a Python function to parse YAML"
LEGAL = "review this contract clause about liability"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("key-pool")
    env = {
        "LLMROUTE_TEST_INTERNAL_KEY": INTERNAL_KEY,
        "LLMROUTE_TEST_OPEN_KEY": OPEN_KEY,
        "LLMROUTE_TEST_NARROW_KEY": NARROW_KEY,
        "LLMROUTE_TEST_SPARE_KEY": SPARE_KEY,
        "LLMROUTE_TELEMETRY_URL": "off",
    }
    with serve_text(REGISTRY % {"url": upstream.url}, tmp, env=env) as served:
        yield served


def _post(gateway: Served, path: str, key: str, body: dict[str, object]) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    return httpx.post(f"{gateway.url}{path}", json=body, headers=headers, timeout=10)


def _chat(text: str, model: str = "auto") -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def test_routing_stays_inside_the_keys_pool(gateway: Served, upstream: FakeUpstream) -> None:
    before = len(upstream.requests)
    answer = _post(gateway, "/v1/chat/completions", INTERNAL_KEY, _chat(CODE))
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-llmroute-route"] == "code"
    assert answer.headers["x-llmroute-model"] == "small"  # the route's fallback
    called = [r.body.get("model") for r in upstream.requests[before:]]
    assert called == ["up-small"]  # no LLM router call, no shadow copy, no large

    decided = _post(gateway, "/v1/route", INTERNAL_KEY, _chat(CODE))
    assert decided.status_code == 200
    decision = decided.json()
    assert decision["model"] == "small" and "outside key 'internal''s pool" in decision["reason"]


def test_a_routed_request_whose_route_has_no_model_inside_goes_to_the_default(
    gateway: Served, upstream: FakeUpstream
) -> None:
    before = len(upstream.requests)
    answer = _post(gateway, "/v1/chat/completions", INTERNAL_KEY, _chat(LEGAL))
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-llmroute-route"] == "legal"
    assert answer.headers["x-llmroute-model"] == "small"
    assert [r.body.get("model") for r in upstream.requests[before:]] == ["up-small"]
    decision = _post(gateway, "/v1/route", INTERNAL_KEY, _chat(LEGAL)).json()
    assert decision["model"] == "small" and "served by the default" in decision["reason"]


def test_a_pool_without_the_defaults_target_is_served_by_the_defaults_fallback(
    gateway: Served, upstream: FakeUpstream
) -> None:
    """A routed request whose route and default target are both outside the key's pool
    goes down the default's chain inside it: its ``policy.fallback`` model (the reason
    says so). It was a 403 ``model_not_allowed``: only the default's target counted."""
    before = len(upstream.requests)
    answer = _post(gateway, "/v1/chat/completions", SPARE_KEY, _chat(LEGAL))
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-llmroute-route"] == "legal"
    assert answer.headers["x-llmroute-model"] == "spare"
    assert [r.body.get("model") for r in upstream.requests[before:]] == ["up-spare"]
    decision = _post(gateway, "/v1/route", SPARE_KEY, _chat(LEGAL)).json()
    assert decision["model"] == "spare"
    assert "served by the default's fallback spare (small is outside it)" in decision["reason"]


def test_the_same_request_from_a_key_without_a_pool_reaches_every_model(
    gateway: Served, upstream: FakeUpstream
) -> None:
    before = len(upstream.requests)
    answer = _post(gateway, "/v1/chat/completions", OPEN_KEY, _chat(CODE))
    assert answer.status_code == 200 and answer.headers["x-llmroute-model"] == "large"
    deadline = time.monotonic() + 10  # the shadow copy goes out in the background
    while "up-ref" not in upstream.models_called()[before:] and time.monotonic() < deadline:
        time.sleep(0.05)
    called = upstream.models_called()[before:]
    assert {"up-picker", "up-large", "up-ref"} <= set(called)


def test_a_request_with_no_model_inside_the_pool_is_refused_before_sending(
    gateway: Served, upstream: FakeUpstream
) -> None:
    before = len(upstream.requests)
    for body in (_chat(CODE, model="large"), _chat(LEGAL, model="legal")):
        refused = _post(gateway, "/v1/chat/completions", INTERNAL_KEY, body)
        assert refused.status_code == 403, (body, refused.text)
        error = refused.json()["error"]
        assert error["code"] == "model_not_allowed" and error["param"] == "model"
        assert "its pool: small, embed" in error["message"]
    assert len(upstream.requests) == before


def test_models_and_embeddings_outside_the_pool_are_not_offered(gateway: Served) -> None:
    headers = {"authorization": f"Bearer {INTERNAL_KEY}"}
    listed = httpx.get(f"{gateway.url}/v1/models", headers=headers, timeout=10).json()
    ids = [m["id"] for m in listed["data"]]
    assert ids == ["auto", "code", "legal", "small", "embed"]
    one = httpx.get(f"{gateway.url}/v1/models/small", headers=headers, timeout=10)
    assert one.status_code == 200 and one.json()["id"] == "small"
    hidden = httpx.get(f"{gateway.url}/v1/models/large", headers=headers, timeout=10)
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "model_not_found"
    ok = _post(gateway, "/v1/embeddings", INTERNAL_KEY, {"model": "embed", "input": "hi"})
    assert ok.status_code == 200
    refused = _post(gateway, "/v1/embeddings", INTERNAL_KEY, {"model": "embed-ext", "input": "x"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    assert _post(
        gateway, "/v1/embeddings", OPEN_KEY, {"model": "embed-ext", "input": "x"}
    ).is_success


@pytest.mark.parametrize(
    ("key", "usable"),
    [(INTERNAL_KEY, "embed"), (NARROW_KEY, "embed-ext"), (OPEN_KEY, "embed, embed-ext")],
)
def test_an_embeddings_404_lists_only_the_models_the_key_may_use(
    gateway: Served, key: str, usable: str
) -> None:
    """A chat model (or an unknown one) on ``/v1/embeddings`` is a 404 that lists the
    embedding models the client may use, as ``GET /v1/models`` lists them for its key
    (its ``pool``, its ``models``): it listed every one in the registry."""
    asked = {"small": "model_not_embedding", "nope": "model_not_found"}
    for model, code in asked.items():
        if key == NARROW_KEY and model == "nope":
            continue  # a name its models leave out is a 403 first
        refused = _post(gateway, "/v1/embeddings", key, {"model": model, "input": "x"})
        assert refused.status_code == 404, refused.text
        error = refused.json()["error"]
        assert error["code"] == code and error["param"] == "model"
        assert error["message"].endswith(f"embedding models you may use: {usable}"), error
    headers = {"authorization": f"Bearer {key}"}
    listed = httpx.get(f"{gateway.url}/v1/models", headers=headers, timeout=10).json()
    assert {m["id"] for m in listed["data"]} >= set(usable.split(", "))


def test_a_pool_naming_an_unknown_model_or_leaving_out_an_allowed_one_is_refused(
    tmp_path: Path,
) -> None:
    text = REGISTRY % {"url": "http://127.0.0.1:9/v1"}
    unknown = text.replace("pool: [small, embed]", "pool: [smal, embed]")
    with pytest.raises(ConfigErrors, match=r"auth\.keys\[0\]\.pool\[0\]: unknown model 'smal'"):
        parse_registry(unknown)
    clash = text.replace("pool: [small, embed]", "pool: [small], models: [auto, large]")
    with pytest.raises(ConfigErrors, match=r"auth\.keys\[0\]\.models\[1\]: 'large' is not in"):
        parse_registry(clash)
    empty = text.replace("pool: [small, embed]", "pool: []")
    with pytest.raises(ConfigErrors, match=r"auth\.keys\[0\]\.pool"):
        parse_registry(empty)
