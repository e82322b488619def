"""Routing rules on ``metadata`` see a Messages or Responses request's as they see a
chat's: the converted chat body carried none, so a rule matching it never fired on
``/v1/messages`` or ``/v1/responses``. An offline echo registry served for real."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from gateway_proc import Served, serve_text

REGISTRY = """
encoder: builtin:static
providers:
  echo: {kind: echo}
models:
  small: {provider: echo, model: echo-small}
  large: {provider: echo, model: echo-large}
rules:
  - {name: research, when: {metadata: {team: research}}, target: large}
  - {name: vip, when: {metadata: {user_id: u-vip}}, target: large}
  - {name: beta, when: {metadata: {beta: true}}, target: large}
  - {name: traced, when: {metadata: {trace: '{"team":"x"}'}}, target: large}
routes:
  - {name: chat, examples: [hello there], target: small}
default: {target: small}
telemetry: {enabled: false}
"""
TURN = [{"role": "user", "content": "hello there"}]
ASKED: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"model": "auto", "messages": TURN}),
    "messages": ("/v1/messages", {"model": "auto", "max_tokens": 16, "messages": TURN}),
    "responses": ("/v1/responses", {"model": "auto", "input": "hello there"}),
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_text(REGISTRY, tmp_path_factory.mktemp("front_metadata")) as served:
        yield served


def _routed(gateway: Served, api: str, metadata: dict[str, Any] | None) -> httpx.Response:
    path, body = ASKED[api]
    if metadata is not None:
        body = {**body, "metadata": metadata}
    answer = httpx.post(gateway.url + path, json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer


@pytest.mark.parametrize("api", ASKED)
def test_a_rule_on_metadata_sees_each_apis_metadata(gateway: Served, api: str) -> None:
    metadata = {"user_id": "u-1", "team": "research"} if api == "messages" else {"team": "research"}
    matched = _routed(gateway, api, metadata)
    assert matched.headers["x-llmroute-route"] == "rule:research", matched.headers
    assert matched.headers["x-llmroute-layer"] == "rules"
    assert matched.headers["x-llmroute-model"] == "large"
    plain = _routed(gateway, api, None)
    assert plain.headers["x-llmroute-route"] == "chat"


def test_anthropics_user_id_is_metadata_to_rules_as_a_tags_list_is_not(gateway: Served) -> None:
    """Anthropic's ``metadata`` holds ``user_id`` (the end user too); a ``tags`` list in
    it is the request's tags, not metadata, as on chat."""
    matched = _routed(gateway, "messages", {"user_id": "u-vip", "tags": ["team:a"]})
    assert matched.headers["x-llmroute-route"] == "rule:vip"


@pytest.mark.parametrize("api", ["chat", "messages"])
def test_a_rule_matches_a_metadata_value_that_is_not_a_string_as_its_json(
    gateway: Served, api: str
) -> None:
    """A value that is not a string reaches rules as the compact JSON sent (``true``,
    ``{"team":"x"}``), not as Python's repr (``True``, ``{'team': 'x'}``), which no rule
    matched. Responses refuses such a value (OpenAI's metadata is strings only)."""
    flagged = _routed(gateway, api, {"beta": True})
    assert flagged.headers["x-llmroute-route"] == "rule:beta", flagged.headers
    traced = _routed(gateway, api, {"trace": {"team": "x"}})
    assert traced.headers["x-llmroute-route"] == "rule:traced", traced.headers
    path, body = ASKED["responses"]
    refused = httpx.post(gateway.url + path, json={**body, "metadata": {"beta": True}}, timeout=30)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "metadata" and error["type"] == "invalid_request_error"
    assert error["message"].startswith("'metadata.beta' must be a string, not a boolean")
