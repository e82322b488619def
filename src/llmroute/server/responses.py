"""``POST /v1/responses``: OpenAI's Responses API in front of the same router.

Clients built on it (the ``openai`` SDK's ``client.responses``, agents and coding tools
that speak only this API) send their requests here: each is converted to a
chat-completions body (`llmroute.server.responses_convert`), routed, dispatched,
cached, recorded and traced exactly as ``/v1/chat/completions`` serves it
(`serve_chat`), and the answer converted back: a ``response`` object, or a Responses
event stream (`llmroute.server.responses_stream`). Errors are OpenAI's error JSON with
the usual status codes; the decision headers (``x-llmroute-*``) come with every answer.

Where the registry keeps responses (``stored_responses``,
`llmroute.state.stored_responses`), an answer is kept unless its request says ``store:
false`` (a stream's before its last event goes out, so a client that continues at once
finds it), ``previous_response_id`` continues a kept one, ``conversation`` continues a
conversation of the Conversations API (`llmroute.server.conversations`) and adds the
turn to it, and ``GET`` / ``DELETE /v1/responses/{id}`` (and ``…/input_items``) read and
forget them, each client key only its own. Without it nothing is stored and ``store``
is answered ``false``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmroute.server.auth import key_of
from llmroute.server.chunk_translation import translated
from llmroute.server.conversations import counted
from llmroute.server.errors import GatewayError, store_unavailable
from llmroute.server.fronts import Events, Stateless, serve_converted
from llmroute.server.listing import page
from llmroute.server.responses_convert import (
    conversation_of,
    input_items,
    resolved,
    to_chat_body,
    to_response,
)
from llmroute.server.responses_stream import ResponsesStream
from llmroute.server.state import gateway_of
from llmroute.state.conversations import ConversationStore
from llmroute.state.stored_responses import (
    BrokenChain,
    ResponseChain,
    ResponseStore,
    StoredResponse,
    new_response_id,
    with_ids,
)
from llmroute.state.stores import StoreUnavailable

__all__ = ["responses", "stored_response"]

log = logging.getLogger("llmroute.server")

_STATELESS = Stateless(to_chat_body, ResponsesStream, to_response)


async def responses(request: Request) -> Response:
    store = gateway_of(request).responses
    if store is None:
        return await serve_converted(request, _STATELESS)
    owner = key_of(request.scope) or ""
    return await serve_converted(request, _Kept(store, owner, partial(counted, request)))


class _Kept:
    """The Responses front where responses are kept: one request's conversion, which
    reads the response it continues and keeps the one it answers."""

    def __init__(
        self, store: ResponseStore, owner: str, count: Callable[[str], None] = lambda _: None
    ) -> None:
        self._store = store
        self._owner = owner
        self._count = count  # conversation outcomes, to their metric
        self._id = new_response_id()
        self._keep = True
        self._input: list[dict[str, Any]] = []
        self._chain: list[str] = []  # the responses this one continues, oldest first
        self._conversation: str | None = None  # the conversation it adds to

    async def chat_body(self, body: dict[str, Any]) -> dict[str, Any]:
        previous = body.get("previous_response_id")
        earlier: list[dict[str, Any]] = []
        if body.get("conversation") is not None:
            if previous is not None:
                raise GatewayError(
                    400,
                    "'previous_response_id' and 'conversation' cannot both be given",
                    param="conversation",
                )
            earlier = await self._conversation_items(body)
        if previous is not None:
            if not isinstance(previous, str) or not previous:
                raise GatewayError(
                    400, "'previous_response_id' must be a string", param="previous_response_id"
                )
            chain = await _chain_of(self._store, self._owner, previous)
            if chain is None:
                raise GatewayError(
                    400,
                    f"Previous response with id '{_shown(previous)}' not found "
                    "(never kept, expired, deleted, or made with another client key).",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            earlier = chain.context()
            self._chain = chain.continued_by()
        body = resolved(body, earlier)
        chat = to_chat_body(body, earlier)
        self._keep = body.get("store") is not False
        if self._keep or self._conversation is not None:
            self._input = with_ids(input_items(body), self._id)
        return chat

    async def _conversation_items(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        named = conversation_of(body)
        if named is None:
            raise GatewayError(
                400, "'conversation' must be an id or {\"id\": ...}", param="conversation"
            )
        store = ConversationStore(self._store)
        try:
            if await store.get(self._owner, named["id"]) is None:
                self._count("not_found")
                raise GatewayError(
                    404,
                    f"Conversation with id '{_shown(named['id'])}' not found.",
                    param="conversation",
                    code="not_found",
                )
            items = await store.items(self._owner, named["id"])
        except StoreUnavailable as exc:
            self._count("error")
            raise _unavailable(exc) from None
        self._conversation = named["id"]
        return items

    def stream(self, model: str, body: dict[str, Any], events: Events) -> AsyncIterator[bytes]:
        translator = ResponsesStream(model, body, self._id, self._keep)
        if not self._keep and self._conversation is None:
            return translated(events, translator)
        kept = False

        async def keep_when_final(made: list[bytes]) -> list[bytes]:
            nonlocal kept
            final = translator.final
            if final is None or kept:
                return made
            kept = True  # the closing event is the last of `made`: it says whether it was
            await self._add_to_conversation(final)
            if self._keep and not await self._put(final) and made:
                final["store"] = False
                made[-1] = translator.final_event()
            return made

        return translated(events, translator, keep_when_final)

    async def answer(self, data: dict[str, Any], model: str, body: dict[str, Any]) -> Any:
        response = to_response(data, model, body, self._id, self._keep)
        await self._add_to_conversation(response)
        if self._keep and not await self._put(response):
            response["store"] = False  # say so: it cannot be continued or read back
        return response

    async def _add_to_conversation(self, response: dict[str, Any]) -> None:
        """The request's input and the response's output, added to its conversation (a
        store that does not answer loses them, with a warning: the answer still goes)."""
        if self._conversation is None:
            return
        output = response.get("output")
        items = [*self._input, *(output if isinstance(output, list) else ())]
        for item in items:
            if item.get("type", "message") == "message":
                item.setdefault("status", "completed")
        try:
            await ConversationStore(self._store).add(self._owner, self._conversation, items)
        except StoreUnavailable as exc:
            self._count("error")
            log.warning("conversations: response %s not added: %s", self._id, exc)
            return
        self._count("turn_added")

    async def _put(self, response: dict[str, Any]) -> bool:
        record = StoredResponse(response, self._input, self._chain)
        try:
            return await self._store.put(self._owner, record)
        except StoreUnavailable as exc:
            log.warning("responses: response %s not kept: %s", self._id, exc)
            return False


async def _read(store: ResponseStore, owner: str, response_id: str) -> StoredResponse | None:
    try:
        return await store.get(owner, response_id)
    except StoreUnavailable as exc:
        raise _unavailable(exc) from None


async def _chain_of(
    store: ResponseStore, owner: str, response_id: str, counted: bool = True
) -> ResponseChain | None:
    """The turns up to `response_id`; 400 when an earlier one is gone."""
    try:
        return await store.chain(owner, response_id, counted=counted)
    except StoreUnavailable as exc:
        raise _unavailable(exc) from None
    except BrokenChain as broken:
        raise GatewayError(
            400,
            f"Response '{_shown(response_id)}' continues '{broken.missing}', which is no "
            "longer kept (expired, evicted or deleted): its conversation cannot be given "
            "whole; send it in 'input' instead",
            param="previous_response_id",
            code="previous_response_not_found",
        ) from None


def _unavailable(exc: StoreUnavailable) -> GatewayError:
    return store_unavailable("response", exc)


def _shown(response_id: str) -> str:
    """An id as an error may repeat it: bounded, printable."""
    return response_id[:80] if response_id.isprintable() else "(unprintable)"


async def stored_response(request: Request) -> Response:
    """``GET`` / ``DELETE /v1/responses/{id}``, ``GET …/{id}/input_items`` and ``POST
    …/{id}/cancel``: a kept response, read or forgotten by the client key that made it."""
    store = gateway_of(request).responses
    rest: str = request.path_params["rest"]
    response_id, _, action = rest.partition("/")
    if store is None:
        raise GatewayError(
            404,
            "this gateway stores no responses (every answer says store: false; its "
            "registry has no stored_responses section): keep the response you received, "
            "and send the whole conversation in 'input'",
            code="response_not_found",
        )
    owner = key_of(request.scope) or ""
    method = request.method
    if (method, action) == ("DELETE", ""):
        if not await _forget(store, owner, response_id):
            raise _not_found(response_id)
        return JSONResponse({"id": response_id, "object": "response", "deleted": True})
    if (method, action) not in _READS:
        raise GatewayError(404, f"{method} {request.url.path} is not an endpoint of this gateway")
    record = await _read(store, owner, response_id)
    if record is None:
        raise _not_found(response_id)
    if action == "cancel":
        raise GatewayError(
            400,
            "only a response made with background: true can be cancelled, and this gateway "
            "answers every response before it returns it",
            code="response_not_cancellable",
        )
    if action == "input_items":
        chain = await _chain_of(store, owner, response_id, counted=False)
        if chain is None:  # deleted meanwhile
            raise _not_found(response_id)
        items = with_ids([*chain.earlier, *chain.last.input], chain.last.id)
        return JSONResponse(page(items, request, "this response"))
    return JSONResponse(record.response)


_READS = {("GET", ""), ("GET", "input_items"), ("POST", "cancel")}


async def _forget(store: ResponseStore, owner: str, response_id: str) -> bool:
    try:
        return await store.delete(owner, response_id)
    except StoreUnavailable as exc:
        raise _unavailable(exc) from None


def _not_found(response_id: str) -> GatewayError:
    return GatewayError(
        404,
        f"Response with id '{_shown(response_id)}' not found.",
        code="response_not_found",
    )
