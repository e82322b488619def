"""A body with several faults gets the same first error on every OpenAI-shaped front:
embeddings and rerank answer in chat's order (size limits, ``model``'s type, the
body's own fields, LiteLLM's fields and tags, the ``x-llmroute-tags`` header, then the
model looked up), so a client fixing its request one error at a time meets them as
chat's clients do. A real gateway on 127.0.0.1 in front of the fake upstream, which
is sent nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fake_upstream import FakeUpstream
from gateway_proc import Served

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: small}
  vectors: {provider: fake, model: up-embed, kind: embedding}
  ranker: {provider: fake, model: up-rerank, kind: rerank}
routes:
  - {name: chat, examples: ["hello there", "how are you today"], target: small}
default: {target: small}
"""
HI = [{"role": "user", "content": "hello there"}]
_TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
BAD_HEADER = {"x-llmroute-tags": "no spaces allowed"}

# (what is wrong, the embeddings body, the rerank body, the chat body with the same
# faults, headers, the param each names first: its own field's name where the APIs differ)
CASES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any], dict[str, str], str]] = [
    (
        "size limit, model type, fields",
        {"model": 7, "input": ["x"] * 2049},
        {"model": 7, "query": "", "documents": ["d"] * 10_001},
        {"model": 7, "messages": [], "tools": [_TOOL] * 129},
        {},
        "size",
    ),
    (
        "model type, field",
        {"model": 7, "input": []},
        {"model": 7, "query": ""},
        {"model": 7, "messages": []},
        {},
        "model",
    ),
    (
        "field, LiteLLM field, unknown model",
        {"model": "nowhere", "input": None, "fallbacks": ["x"]},
        {"model": "nowhere", "query": "", "documents": ["d"], "fallbacks": ["x"]},
        {"model": "nowhere", "fallbacks": ["x"]},
        {},
        "field",
    ),
    (
        "LiteLLM field, unknown model",
        {"model": "nowhere", "input": "hi", "api_key": "sk-secret-123456"},
        {"model": "nowhere", "query": "q", "documents": ["d"], "api_key": "sk-secret-123456"},
        {"model": "nowhere", "messages": HI, "api_key": "sk-secret-123456"},
        {},
        "api_key",
    ),
    (
        "metadata, model of another kind",
        {"model": "ranker", "input": "hi", "metadata": "trace-1"},
        {"model": "vectors", "query": "q", "documents": ["d"], "metadata": "trace-1"},
        {"model": "vectors", "messages": HI, "metadata": "trace-1"},
        {},
        "metadata",
    ),
    (
        "tags, header, model of another kind",
        {"model": "small", "input": "hi", "tags": ["bad tag"]},
        {"model": "small", "query": "q", "documents": ["d"], "tags": ["bad tag"]},
        {"model": "ranker", "messages": HI, "tags": ["bad tag"]},
        BAD_HEADER,
        "tags",
    ),
    (
        "header, unknown model",
        {"model": "nowhere", "input": "hi"},
        {"model": "nowhere", "query": "q", "documents": ["d"]},
        {"model": "nowhere", "messages": HI},
        BAD_HEADER,
        "x-llmroute-tags",
    ),
]
# what each front calls a fault of its body's own field, or of its size limit
_OWN = {
    "embeddings": {"size": "input", "field": "input"},
    "rerank": {"size": "documents", "field": "query"},
    "chat/completions": {"size": "tools", "field": "messages"},
}


def _first_error(gateway: Served, api: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    answer = httpx.post(f"{gateway.url}/v1/{api}", json=body, headers=headers, timeout=10)
    assert answer.status_code == 400, (api, answer.text)
    assert "sk-secret" not in answer.text
    return answer.json()["error"]["param"]


@pytest.mark.parametrize(
    ("embed", "rerank", "chat", "headers", "param"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_embeddings_and_rerank_answer_faults_in_chats_order(
    gateway: Served,
    upstream: FakeUpstream,
    embed: dict[str, Any],
    rerank: dict[str, Any],
    chat: dict[str, Any],
    headers: dict[str, str],
    param: str,
) -> None:
    before = len(upstream.requests)
    for api, body in (("chat/completions", chat), ("embeddings", embed), ("rerank", rerank)):
        assert _first_error(gateway, api, body, headers) == _OWN[api].get(param, param), api
    assert len(upstream.requests) == before


@pytest.mark.parametrize(
    ("api", "body", "code"),
    [
        ("chat/completions", {"model": "nowhere", "messages": HI}, "model_not_found"),
        ("embeddings", {"model": "nowhere", "input": "hi"}, "model_not_found"),
        ("rerank", {"model": "nowhere", "query": "q", "documents": ["d"]}, "model_not_found"),
        ("chat/completions", {"model": "vectors", "messages": HI}, "model_not_chat"),
        ("completions", {"model": "ranker", "prompt": "hi"}, "model_not_chat"),
        ("route", {"model": "vectors", "messages": HI}, "model_not_chat"),
        ("responses", {"model": "vectors", "input": "hi"}, "model_not_chat"),
        ("embeddings", {"model": "ranker", "input": "hi"}, "model_not_embedding"),
        ("rerank", {"model": "vectors", "query": "q", "documents": ["d"]}, "model_not_rerank"),
    ],
)
def test_a_right_body_meets_the_models_faults_last(
    gateway: Served, api: str, body: dict[str, Any], code: str
) -> None:
    """Once the rest is right, the model is looked up: unknown, 404 ``model_not_found``;
    of another kind, 404 too on every endpoint (as OpenAI answers "This is not a chat
    model"), ``model_not_<kind>`` saying the kind the endpoint serves (embeddings and
    rerank said 400, chat 404 ``model_not_found``)."""
    answer = httpx.post(f"{gateway.url}/v1/{api}", json=body, timeout=10)
    assert answer.status_code == 404, answer.text
    error = answer.json()["error"]
    assert (error["param"], error["code"]) == ("model", code)


def test_messages_answers_a_model_of_another_kind_as_chat_does(gateway: Served) -> None:
    body = {"model": "vectors", "max_tokens": 8, "messages": HI}
    answer = httpx.post(f"{gateway.url}/v1/messages", json=body, timeout=10)
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["type"] == "not_found_error"
    assert "use POST /v1/embeddings" in answer.json()["error"]["message"]
