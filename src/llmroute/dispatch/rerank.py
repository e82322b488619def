"""The rerank API's request shape and what an answer costs.

One format serves most rerankers: Cohere's ``POST /v2/rerank`` (``query``,
``documents``, ``top_n``; answers ``results`` of ``index`` and ``relevance_score``),
which vLLM, Jina, Infinity and most self-hosted servers speak too. Documents are
strings, or objects whose ``text`` is read (Cohere's first API, Jina's).

Rerankers are billed by tokens (Jina, Voyage, a self-hosted server's own accounting) or
by searches (Cohere: a search unit is one query with up to 100 documents, and a
document longer than 500 tokens, query included, counts once per 500). A cross-encoder
reads the query with every document, so the tokens a call costs, when its server does
not say, are counted as the query once per document plus the documents.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from llmroute.dispatch.usage import Usage, count_tokens, estimated_text_tokens, text_tokens_at_most
from llmroute.registry.schema import Price

__all__ = [
    "PAIR_TOKENS",
    "SEARCH_CHUNK_TOKENS",
    "SEARCH_DOCUMENTS",
    "document_text",
    "priced_rerank",
    "rerank_texts",
    "rerank_worst_case",
]

SEARCH_DOCUMENTS = 100  # documents one search unit covers
SEARCH_CHUNK_TOKENS = 500  # tokens (query and document) one document counts once per
PAIR_TOKENS = 8  # a query-document pair's separators ([CLS] q [SEP] d [SEP]), with room


def document_text(item: object) -> str | None:
    """A document's text: a string, or an object's ``text``; None for anything else."""
    if isinstance(item, str):
        return item
    if isinstance(item, Mapping):
        text = item.get("text")
        return text if isinstance(text, str) else None
    return None


def rerank_texts(body: Mapping[str, Any]) -> tuple[str, list[str]]:
    """The query and each document's text (empty where a document holds none)."""
    query = body.get("query")
    documents = body.get("documents")
    texts = [document_text(d) or "" for d in documents] if isinstance(documents, list) else []
    return (query if isinstance(query, str) else ""), texts


def _tokens(
    body: Mapping[str, Any], count: Callable[[str], int], per_pair: int = 0
) -> tuple[int, int]:
    """(tokens read, search units) for `body` with texts counted by `count`, and
    `per_pair` more for each query-document pair (a cross-encoder's special tokens)."""
    query, documents = rerank_texts(body)
    q = count(query) + per_pair
    pairs = [q + count(d) for d in documents]
    chunks = sum(max(1, math.ceil(p / SEARCH_CHUNK_TOKENS)) for p in pairs)
    return sum(pairs), max(1, math.ceil(chunks / SEARCH_DOCUMENTS))


def estimated_rerank_tokens(body: Mapping[str, Any]) -> int:
    """The cheap pre-flight estimate of a rerank's tokens (`estimated_text_tokens`, the
    query read once with each document), which a key's ``tpm`` holds while it runs."""
    return _tokens(body, estimated_text_tokens)[0]


def rerank_worst_case(sent: Mapping[str, Any], price: Price) -> tuple[int, float]:
    """(tokens, USD) a rerank of `sent` may cost at most (what a hard budget holds): its
    texts at their UTF-8 bytes over two, a document without text (an image for Jina's
    multimodal rerankers) at its JSON's, and `PAIR_TOKENS` a pair for the separators
    servers count."""
    query = sent.get("query")
    documents = sent.get("documents")
    texts = [_bound_text(d) for d in documents] if isinstance(documents, list) else []
    bound = {"query": query if isinstance(query, str) else "", "documents": texts}
    tokens, units = _tokens(bound, text_tokens_at_most, PAIR_TOKENS)
    return tokens, _cost(price, tokens, units)


def _bound_text(document: object) -> str:
    text = document_text(document)
    return text if text is not None else json.dumps(document, ensure_ascii=False)


def _cost(price: Price, tokens: int, units: int) -> float:
    dollars = tokens * price.input / 1e6
    if price.search is not None:
        dollars += units * price.search / 1e3
    return round(dollars, 10)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def priced_rerank(data: dict[str, Any], body: Mapping[str, Any], price: Price) -> Usage:
    """The usage of a rerank answer with its cost, written into ``data["usage"]`` (the
    fields the server reported kept). Tokens are the reported ``usage.total_tokens``
    (vLLM, Jina), ``usage.prompt_tokens`` or Cohere's ``meta.billed_units.input_tokens``,
    else counted; search units Cohere's ``meta.billed_units.search_units``, else counted
    (they are priced only with ``price.search``). Counted numbers mark it estimated."""
    reported = data.get("usage")
    extra: dict[str, Any] = reported if isinstance(reported, dict) else {}
    meta = data.get("meta")
    billed = meta.get("billed_units") if isinstance(meta, Mapping) else None
    billed = billed if isinstance(billed, Mapping) else {}
    tokens = _int(extra.get("total_tokens"))
    if tokens is None:
        tokens = _int(extra.get("prompt_tokens"))
    if tokens is None:
        tokens = _int(billed.get("input_tokens"))
    units = _int(billed.get("search_units"))
    if price.search is None:
        units = units or 0  # not priced: never counted
    estimated = tokens is None or units is None
    if tokens is None or units is None:
        # counting costs ~1 µs a character on the event loop (a second for a thousand
        # long documents): done only when the price is per token, else the texts' UTF-8
        # bytes over two, which errs high (searches priced on it are never undercharged)
        count = count_tokens if tokens is None and price.input > 0 else text_tokens_at_most
        counted_tokens, counted_units = _tokens(body, count)
        tokens = counted_tokens if tokens is None else tokens
        units = counted_units if units is None else units
    usage = Usage(tokens, 0, _cost(price, tokens, units), estimated)
    data["usage"] = {
        **extra,
        "prompt_tokens": tokens,
        "total_tokens": tokens,
        "cost_usd": usage.cost_usd,
        "estimated": estimated,
    }
    if price.search is not None:
        data["usage"]["search_units"] = units
    return usage
