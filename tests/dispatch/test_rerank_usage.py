"""What a rerank answer costs (`priced_rerank`) and what a hard budget holds for one
(`rerank_worst_case`)."""

from __future__ import annotations

from typing import Any

import pytest

from llmroute.dispatch.rerank import (
    PAIR_TOKENS,
    SEARCH_CHUNK_TOKENS,
    SEARCH_DOCUMENTS,
    document_text,
    priced_rerank,
    rerank_texts,
    rerank_worst_case,
)
from llmroute.dispatch.usage import count_tokens
from llmroute.registry.schema import Price

TOKENS = Price(input=1000.0)  # $0.001 a token
SEARCH = Price(search=2.0)  # $2 per 1,000 searches
BODY = {"query": "capital of France", "documents": ["Paris is the capital.", {"text": "Rome"}]}


def test_documents_are_strings_or_objects_with_text() -> None:
    assert document_text("a") == "a"
    assert document_text({"text": "b", "title": "t"}) == "b"
    assert document_text({"image": "http://x"}) is None
    assert document_text(3) is None
    assert rerank_texts({"query": "q", "documents": ["a", {"image": "i"}]}) == ("q", ["a", ""])
    assert rerank_texts({}) == ("", [])


@pytest.mark.parametrize(
    "answer",
    [
        {"usage": {"total_tokens": 42}},  # vLLM, Jina
        {"usage": {"prompt_tokens": 42}},
        {"meta": {"billed_units": {"input_tokens": 42}}},  # Cohere's first API
    ],
)
def test_reported_tokens_are_priced(answer: dict[str, Any]) -> None:
    usage = priced_rerank(answer, BODY, TOKENS)
    assert (usage.prompt_tokens, usage.estimated) == (42, False)
    assert usage.cost_usd == pytest.approx(0.042)
    assert answer["usage"]["cost_usd"] == usage.cost_usd
    assert answer["usage"]["total_tokens"] == 42
    assert "search_units" not in answer["usage"]  # not priced per search


def test_unreported_tokens_are_counted_query_once_per_document() -> None:
    answer: dict[str, Any] = {"results": []}
    usage = priced_rerank(answer, BODY, TOKENS)
    q = count_tokens("capital of France")
    assert usage.prompt_tokens == 2 * q + count_tokens("Paris is the capital.") + count_tokens(
        "Rome"
    )
    assert usage.estimated is True
    assert answer["usage"]["estimated"] is True


def test_searches_are_priced_as_reported_else_counted() -> None:
    answer: dict[str, Any] = {"meta": {"billed_units": {"search_units": 3}}}
    usage = priced_rerank(answer, BODY, SEARCH)
    assert usage.cost_usd == pytest.approx(0.006)
    assert answer["usage"]["search_units"] == 3
    # tokens were counted (Cohere reports none), so the usage is estimated
    assert usage.estimated is True
    many = {"query": "q", "documents": ["d"] * (SEARCH_DOCUMENTS + 1)}
    counted: dict[str, Any] = {"usage": {"total_tokens": 5}}
    assert priced_rerank(counted, many, SEARCH).cost_usd == pytest.approx(0.004)  # 2 searches
    assert counted["usage"]["search_units"] == 2
    long_document = {"query": "q", "documents": ["word " * (2 * SEARCH_CHUNK_TOKENS)]}
    chunked: dict[str, Any] = {}
    priced_rerank(chunked, long_document, SEARCH)
    assert chunked["usage"]["search_units"] == 1  # 3 chunks of 500 tokens: one search


def test_bogus_reported_numbers_are_not_believed() -> None:
    answer: dict[str, Any] = {"usage": {"total_tokens": -3}, "meta": {"billed_units": "x"}}
    usage = priced_rerank(answer, BODY, TOKENS)
    assert usage.estimated is True and usage.prompt_tokens > 0
    flags: dict[str, Any] = {"usage": {"total_tokens": True}}
    assert priced_rerank(flags, BODY, TOKENS).estimated is True


def test_the_worst_case_bounds_what_is_counted() -> None:
    body = {"query": "what is the capital?", "documents": ["Paris " * 50, "Rome", {"text": "x"}]}
    tokens, usd = rerank_worst_case(body, Price(input=1000.0, search=2.0))
    counted = priced_rerank({}, body, Price(input=1000.0, search=2.0))
    assert tokens >= counted.prompt_tokens
    assert usd >= counted.cost_usd
    # a pair's separators, which servers count, are held too; a document without text
    # (an image) at its JSON's size, not as nothing
    short = {"query": "hi", "documents": ["yes"] * 100}
    assert rerank_worst_case(short, TOKENS)[0] >= 100 * (1 + 2 + PAIR_TOKENS)
    image = {"query": "hi", "documents": [{"image": "https://example.com/" + "x" * 200}]}
    assert rerank_worst_case(image, TOKENS)[0] > 100


def test_nothing_is_counted_when_the_server_said_what_is_priced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Counting tokens costs about a microsecond a character: skipped when the reported
    tokens (and, priced per search, the reported searches) are all the price needs."""

    def refuse(text: str) -> int:
        raise AssertionError("counted")

    monkeypatch.setattr("llmroute.dispatch.rerank.count_tokens", refuse)
    assert priced_rerank({"usage": {"total_tokens": 9}}, BODY, TOKENS).estimated is False
    cohere = {"usage": {"total_tokens": 9}, "meta": {"billed_units": {"search_units": 1}}}
    assert priced_rerank(cohere, BODY, SEARCH).estimated is False
    # searches not reported: counted at UTF-8 bytes over two (errs high), never tokenized
    searched = priced_rerank({"usage": {"total_tokens": 9}}, BODY, SEARCH)
    assert searched.estimated is True and searched.prompt_tokens == 9
    # tokens not reported and not priced: bytes over two for the usage and tpm
    unpriced = priced_rerank({}, BODY, Price())
    assert unpriced.estimated is True and unpriced.prompt_tokens > 0
    with pytest.raises(AssertionError, match="counted"):
        priced_rerank({}, BODY, TOKENS)  # priced per token and not reported: tokenized


def test_searches_counted_without_the_tokenizer_are_never_too_few() -> None:
    """Chinese text: about a token a character, three UTF-8 bytes each. Counted at bytes
    over two the searches err high, never low as four characters a token would."""
    documents = ["北京是中国的首都，也是一座历史悠久的城市。" * 50] * 300
    body = {"query": "中国的首都是哪里？", "documents": documents}
    counted = priced_rerank({"usage": {"total_tokens": 1}}, body, SEARCH)
    exact: dict[str, Any] = {}
    priced_rerank(exact, body, Price(input=1.0, search=2.0))  # tokenized: per-token price
    assert counted.cost_usd >= exact["usage"]["search_units"] * 2.0 / 1e3
