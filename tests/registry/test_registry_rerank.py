"""Rerank models in the registry: which providers serve them, prices per search, and
that chat requests cannot target them."""

from __future__ import annotations

import pytest
from registry_helpers import VALID, errors_of, replace_line

from llmroute.dispatch.budgets import worst_case
from llmroute.registry import parse_registry

SMALL = "  small: {provider: local, model: qwen2.5-7b-instruct, price: {input: 0.1, output: 0.1}}\n"
RERANKER = "  rerank: {provider: local, model: bge-reranker, kind: rerank, price: {search: 2}}\n"


def _with_reranker(text: str = VALID) -> str:
    assert SMALL in text
    return text.replace(SMALL, SMALL + RERANKER)


def test_a_registry_with_a_reranker() -> None:
    registry = parse_registry(_with_reranker()).registry
    model = registry.models["rerank"]
    assert model.kind == "rerank" and model.price.search == 2.0
    sent = {"query": "q", "documents": ["d"]}
    held = worst_case(sent, model, registry.providers["local"])
    assert held.answer_tokens == 0 and held.usd == pytest.approx(0.002)


def test_registry_rules_for_rerank_models() -> None:
    anthropic = replace_line(
        _with_reranker(), 4, "local: {kind: anthropic, api_key_env: ANTHROPIC_API_KEY}"
    )
    assert any(
        e.field == "models.rerank.kind" and "rerank models must be served" in e.message
        for e in errors_of(anthropic)
    )
    search_on_chat = replace_line(VALID, 11, "price: {input: 2.0, output: 8.0, search: 1}")
    (error,) = errors_of(search_on_chat)
    assert error.field == "models.large.price.search" and "rerank" in error.message
    target = _with_reranker().replace("default: {target: small,", "default: {target: rerank,")
    assert any(
        e.field == "default.target" and "is a rerank model" in e.message for e in errors_of(target)
    )
