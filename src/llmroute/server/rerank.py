"""``POST /v1/rerank`` (and ``/v2/rerank``, where Cohere's clients send it): passed
through to a pool model of kind ``rerank``.

Like embeddings, nothing is routed: a reranker is asked by name, its scores do not mix
with another's, and its cost (tokens at the model's ``price.input``, searches at
``price.search``) counts against the model's and the client key's budgets and in the
cost metrics (route ``(rerank)``), and the decision log holds each answer (api
``rerank``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from llmroute.dispatch.rerank import estimated_rerank_tokens, rerank_texts
from llmroute.server.auth import COHERE_RERANK_PATH
from llmroute.server.body import read_json_object
from llmroute.server.embeddings import model_asked, serve_unrouted
from llmroute.server.errors import GatewayError
from llmroute.server.state import gateway_of
from llmroute.telemetry.metrics import RERANK_ROUTE

__all__ = [
    "MAX_DOCUMENTS",
    "RERANK_PATHS",
    "check_document_count",
    "require_rerank",
    "rerank",
    "reranked_text",
]

RERANK_PATHS = ("/v1/rerank", COHERE_RERANK_PATH)


async def rerank(request: Request) -> Response:
    arrived = time.time(), time.perf_counter_ns()
    gateway = gateway_of(request)
    body = await read_json_object(request, gateway.max_body_bytes)
    check_document_count(body)  # chat's order (`serve_unrouted`): sizes, model, fields
    asked = model_asked(body)
    require_rerank(body)
    return await serve_unrouted(
        request,
        gateway,
        body,
        asked,
        gateway.dispatcher.rerank,
        RERANK_ROUTE,
        estimated_rerank_tokens(body),
        kind="rerank",
        api="rerank",
        text_of=reranked_text,
        arrived=arrived,
    )


def reranked_text(body: Mapping[str, Any]) -> str:
    """The text a rerank request sent, for the decision log's ``prompt``: the query,
    then each document's text, a line each."""
    query, documents = rerank_texts(body)
    return "\n".join((query, *documents))


# Documents one request may rerank: ten times what Cohere advises sending at most
# (1,000), above what any hosted reranker takes. A 4 MB body can hold 400,000 short ones,
# whose checks, estimates and answer held the worker's event loop 1.7 s (every other
# request waiting); 10,000 hold it about a fortieth of that.
MAX_DOCUMENTS = 10_000


def check_document_count(body: Mapping[str, Any]) -> None:
    """400 for more than `MAX_DOCUMENTS` documents: checked first, as chat checks its
    sizes (`llmroute.chat_checks.check_sizes`), before anything is walked item by item."""
    documents = body.get("documents")
    if isinstance(documents, list) and len(documents) > MAX_DOCUMENTS:
        raise GatewayError(
            400,
            f"'documents' holds {len(documents)} documents, more than the {MAX_DOCUMENTS} one "
            "request may rerank: split them into several requests",
            param="documents",
        )


def require_rerank(body: Mapping[str, Any]) -> None:
    """Cohere's shape: a query, documents (at most `MAX_DOCUMENTS`: `check_document_count`
    has passed them first) as strings or objects, an optional top_n."""
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise GatewayError(400, "'query' is required: a non-empty string", param="query")
    documents = body.get("documents")
    if not isinstance(documents, list) or not documents:
        raise GatewayError(
            400,
            "'documents' is required: a non-empty list of strings (or of objects with 'text')",
            param="documents",
        )
    for i, item in enumerate(documents):
        if not isinstance(item, str | dict):
            raise GatewayError(
                400,
                f"documents[{i}] must be a string or an object with 'text'",
                param=f"documents[{i}]",
            )
    top_n = body.get("top_n")
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise GatewayError(400, "'top_n' must be an integer of at least 1", param="top_n")
