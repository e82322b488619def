"""``/v1/conversations``: OpenAI's Conversations API, where the registry keeps responses
(``stored_responses``; `llmroute.state.conversations`).

A conversation holds items (messages, function calls and their outputs); a Responses
request naming it (``conversation``) is answered with its items before the request's
own input, and its input and output are added to it. Each client key sees only its own
conversations. Without a ``stored_responses`` section every path here is a 404 saying
why.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmroute.server.auth import key_of
from llmroute.server.body import checked_metadata, read_json_object
from llmroute.server.errors import GatewayError, store_unavailable
from llmroute.server.listing import listed, page
from llmroute.server.responses_convert import conversation_items
from llmroute.server.state import gateway_of
from llmroute.state.conversations import Conversation, ConversationStore
from llmroute.state.stores import StoreUnavailable
from llmroute.telemetry.metrics import GatewayMetrics

__all__ = ["CONVERSATIONS_PATH", "conversation", "conversation_item", "conversations"]

CONVERSATIONS_PATH = "/v1/conversations"


def store_of(request: Request) -> ConversationStore:
    responses = gateway_of(request).responses
    if responses is None:
        raise GatewayError(
            404,
            "this gateway keeps no conversations (its registry has no stored_responses "
            "section): send the whole conversation in 'input'",
            code="not_found",
        )
    return ConversationStore(responses)


def _owner(request: Request) -> str:
    return key_of(request.scope) or ""


def counted(request: Request, outcome: str) -> None:
    """`outcome` counted in ``llmroute_conversations_total``."""
    metrics = getattr(request.app.state, "metrics", None)
    if isinstance(metrics, GatewayMetrics):
        metrics.conversations(outcome)


def unavailable(exc: StoreUnavailable) -> GatewayError:
    return store_unavailable("conversation", exc)


def _metadata(value: Any) -> dict[str, str]:
    return checked_metadata(value) or {}


async def conversations(request: Request) -> Response:
    """``POST /v1/conversations``: a new conversation, with up to 20 first items."""
    store = store_of(request)
    body = await read_json_object(request, gateway_of(request).max_body_bytes)
    metadata = _metadata(body.get("metadata"))
    items = conversation_items(body.get("items") or [], "items")
    try:
        created = await store.create(_owner(request), metadata, items)
    except StoreUnavailable as exc:
        counted(request, "error")
        raise unavailable(exc) from None
    counted(request, "created")
    return JSONResponse(created.to_json())


async def _found(
    request: Request, store: ConversationStore, owner: str, conversation_id: str
) -> Conversation:
    found = await store.get(owner, conversation_id)
    if found is None:
        counted(request, "not_found")
        raise GatewayError(
            404,
            f"Conversation with id '{_shown(conversation_id)}' not found.",
            code="not_found",
        )
    return found


def _shown(name: str) -> str:
    return name[:80] if name.isprintable() else "(unprintable)"


async def conversation(request: Request) -> Response:
    """``GET``, ``POST`` (metadata) and ``DELETE /v1/conversations/{id}``, and ``GET`` /
    ``POST …/{id}/items``."""
    store, owner = store_of(request), _owner(request)
    conversation_id: str = request.path_params["conversation_id"]
    try:
        found = await _found(request, store, owner, conversation_id)
        if request.url.path.endswith("/items"):
            return await _items(request, store, owner, found)
        if request.method == "DELETE":
            await store.delete(owner, conversation_id)
            counted(request, "deleted")
            return JSONResponse(
                {"id": conversation_id, "object": "conversation.deleted", "deleted": True}
            )
        if request.method == "POST":
            body = await read_json_object(request, gateway_of(request).max_body_bytes)
            found = Conversation(found.id, found.created_at, _metadata(body.get("metadata")))
            await store.update(owner, found)
        return JSONResponse(found.to_json())
    except StoreUnavailable as exc:
        counted(request, "error")
        raise unavailable(exc) from None


async def _items(
    request: Request, store: ConversationStore, owner: str, found: Conversation
) -> Response:
    if request.method == "POST":
        body = await read_json_object(request, gateway_of(request).max_body_bytes)
        added = conversation_items(body.get("items"), "items")
        await store.add(owner, found.id, added)
        counted(request, "items_added")
        return JSONResponse(listed(added, has_more=False))
    items = await store.items(owner, found.id)
    return JSONResponse(page(items, request, "this conversation"))


async def conversation_item(request: Request) -> Response:
    """``GET`` and ``DELETE /v1/conversations/{id}/items/{item_id}``."""
    store, owner = store_of(request), _owner(request)
    conversation_id: str = request.path_params["conversation_id"]
    item_id: str = request.path_params["item_id"]
    try:
        found = await _found(request, store, owner, conversation_id)
        if request.method == "DELETE":
            if not await store.delete_item(owner, conversation_id, item_id):
                raise _no_item(item_id)
            return JSONResponse(found.to_json())
        for item in await store.items(owner, conversation_id):
            if item.get("id") == item_id:
                return JSONResponse(item)
    except StoreUnavailable as exc:
        counted(request, "error")
        raise unavailable(exc) from None
    raise _no_item(item_id)


def _no_item(item_id: str) -> GatewayError:
    return GatewayError(404, f"Item with id '{_shown(item_id)}' not found.", code="not_found")
