"""`ChatProvider`: what dispatch needs from an upstream chat-completions client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from llmroute.errors import ProviderError, Quoted, json_kind, shown

__all__ = [
    "NOT_A_MODEL_LIST",
    "ChatProvider",
    "EmbeddingProvider",
    "ModelLister",
    "RenamesModels",
    "RerankProvider",
    "TextProvider",
    "Timeouts",
    "model_ids",
]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Time limits of one upstream call, in seconds.

    `connect_s` bounds opening a connection; `total_s` the whole call (for a stream, each
    wait for the next bytes: dispatch bounds the stream's first event by `first_token_s`,
    and the whole stream by `stream_s`, checked as each event arrives).
    """

    connect_s: float = 5.0
    total_s: float = 60.0
    first_token_s: float | None = None
    stream_s: float | None = None


class ChatProvider(Protocol):
    """One pooled client per provider. Failures raise `llmroute.errors.ProviderError`
    (or a subclass: `RateLimited` with ``retry_after_s``, `ContextWindowExceeded`,
    `ProviderMisconfigured` for 401/402/403/404, `UpstreamRejected` for other 4xx,
    `ProviderTimeout`).

    `model` is the provider's own model name; it replaces the body's ``model``. The body
    is an OpenAI chat-completions request, and the results are OpenAI's wire format
    whatever the provider speaks upstream.
    """

    name: str

    async def complete(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> dict[str, Any]:
        """The ``chat.completion`` object."""
        ...

    def stream(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> AsyncIterator[bytes]:
        """OpenAI ``chat.completion.chunk`` server-sent events, one complete event per
        item in the form everything after the provider reads (`llmroute.sse`: one line,
        ``data: {...}\n\n``), ending with ``data: [DONE]\n\n``. An error status raises
        before the first event is yielded."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class EmbeddingProvider(Protocol):
    """A provider that also serves ``POST /embeddings`` (OpenAI-compatible ones do)."""

    name: str

    async def embed(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> dict[str, Any]: ...


@runtime_checkable
class RerankProvider(Protocol):
    """A provider that also serves ``POST /rerank`` (Cohere's format: vLLM, Jina,
    Infinity, Cohere itself under its ``/v2`` base URL)."""

    name: str

    async def rerank(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> dict[str, Any]: ...


@runtime_checkable
class TextProvider(Protocol):
    """A provider that also serves the (legacy) ``POST /completions`` of models that
    continue raw text (base and code models behind vLLM, llama.cpp server, Ollama): the
    body and the answers (``text_completion`` objects and events) in OpenAI's format."""

    name: str

    async def complete_text(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> dict[str, Any]: ...

    def stream_text(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> AsyncIterator[bytes]: ...


@runtime_checkable
class ModelLister(Protocol):
    """A provider whose server lists the models it serves (``GET /models``)."""

    name: str

    async def list_models(self, *, timeouts: Timeouts) -> list[str]: ...


@runtime_checkable
class RenamesModels(Protocol):
    """A provider whose answers name a model otherwise than by the registry's ``model``
    for it: llamacpp, whose ``model`` is a GGUF's path on this server, which clients are
    not told (they get the file's stem)."""

    def answer_model(self, model: str) -> str:
        """The ``model`` its answers from `model` carry."""
        ...


NOT_A_MODEL_LIST = "upstream returned JSON that is no model list"
_SHOWN_KEYS = 3


def model_ids(provider: str, listing: dict[str, Any] | list[Any]) -> list[str]:
    """The ids of an OpenAI- or Anthropic-style model list (``{"data": [{"id": ..}]}``,
    or the entries bare, ``[{"id": ..}]``, as Together sends them); entries without a
    string id are skipped. An answer of another shape (``{"status": "ok"}`` from a
    catch-all, a list under another key: ``{"models": [..]}``) raises `ProviderError`
    saying its shape, never its content: it was read as a server listing no models."""
    bare = isinstance(listing, list)
    data = listing if isinstance(listing, list) else listing.get("data")
    ids = [
        item["id"]
        for item in (data if isinstance(data, list) else ())
        if isinstance(item, dict) and isinstance(item.get("id"), str)
    ]
    if ids or data == []:
        return ids
    if isinstance(data, list):
        entries = f"{len(data):,} entr{'y' if len(data) == 1 else 'ies'}"
        holder = "it" if bare else "its 'data'"
        shape: tuple[str, ...] = (f": {holder} holds {entries}, none with a string 'id'",)
    elif isinstance(listing, list) or "data" in listing:
        shape = (f": its 'data' is {json_kind(data)}, not a list",)
    elif not listing:
        shape = (": an empty object",)
    else:  # its first keys, which name what answered; the server's words, cut short
        keys = ", ".join(shown(str(key), 40) for key in list(listing)[:_SHOWN_KEYS])
        more = f" and {len(listing) - _SHOWN_KEYS:,} more" if len(listing) > _SHOWN_KEYS else ""
        shape = (": an object without 'data'", Quoted(f" (its keys: {keys}{more})"))
    raise ProviderError(provider, (NOT_A_MODEL_LIST, *shape))
