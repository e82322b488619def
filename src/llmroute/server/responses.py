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
forget them, each client key only its own. A request with ``background: true`` is
answered at once, ``in_progress``, and made in a task of this process
(`llmroute.server.responses_background`) while the client polls for it (with
``stream: true`` its events are streamed as made and kept, so
``GET …/{id}?stream=true&starting_after=N`` resumes them:
`llmroute.server.background_stream`); ``POST …/{id}/cancel`` stops it.
Without the section nothing is stored, ``store`` is answered ``false`` and a background
request is answered like any other.
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmroute.dispatch.usage import prompt_tokens
from llmroute.server.auth import key_of
from llmroute.server.background import background_runs
from llmroute.server.background_stream import EventChunks, follow
from llmroute.server.body import read_json_object
from llmroute.server.conversations import counted
from llmroute.server.errors import GatewayError, not_an_endpoint
from llmroute.server.fronts import Stateless, answer_converted, serve_converted
from llmroute.server.listing import page
from llmroute.server.responses_background import (
    background_counted,
    check_room,
    forgotten,
    kept_ended,
    plan_in_background,
    reaped,
    streaming,
    unavailable,
)
from llmroute.server.responses_convert import (
    RESPONSES_PATH,
    to_chat_body,
    to_response,
)
from llmroute.server.responses_kept import _chain_of, _Kept, _read, _shown
from llmroute.server.responses_stream import ResponsesStream
from llmroute.server.state import Gateway, gateway_of
from llmroute.state.stored_responses import (
    RUNNING,
    ResponseStore,
    StoredResponse,
    with_ids,
)
from llmroute.state.stores import StoreUnavailable

__all__ = ["answer_responses", "input_tokens", "responses", "stored_response"]

_STATELESS = Stateless(to_chat_body, ResponsesStream, to_response)


async def responses(request: Request) -> Response:
    gateway = gateway_of(request)
    if gateway.responses is None:
        return await serve_converted(request, _STATELESS)
    ts, started_ns = time.time(), time.perf_counter_ns()
    body = await read_json_object(request, gateway.max_body_bytes)
    return await answer_responses(request, gateway, body, ts, started_ns)


async def answer_responses(
    request: Request, gateway: Gateway, body: dict[str, Any], ts: float, started_ns: int
) -> Response:
    """`body` (a Responses request, received at `ts` / `started_ns`) answered: kept when
    the registry keeps responses, made in the background when it asks to be."""
    store = gateway.responses
    if store is None:
        chat = await _STATELESS.chat_body(body)
        return await answer_converted(request, _STATELESS, body, chat, ts, started_ns)
    owner = key_of(request.scope) or ""
    front = _Kept(
        store, owner, partial(counted, request), partial(background_counted, request, "abandoned")
    )
    chat = await front.chat_body(body)
    if front.background:
        check_room(request, front.store)
        with background_runs(request).claim():  # no await since the check
            return await plan_in_background(request, gateway, front, body, chat, ts, started_ns)
    return await answer_converted(request, front, body, chat, ts, started_ns)


async def input_tokens(request: Request) -> Response:
    """``POST /v1/responses/input_tokens``: ``{"object": "response.input_tokens",
    "input_tokens": n}`` for a Responses request, the turns it continues
    (``previous_response_id``, ``conversation``, where responses are kept) included,
    estimated with the packaged tokenizer as ``/v1/messages/count_tokens`` does; nothing
    is routed, kept or sent upstream, and ``model`` may be left out."""
    gateway = gateway_of(request)
    body = await read_json_object(request, gateway.max_body_bytes)
    body = {**body, "model": body.get("model") or "auto", "stream": False, "background": False}
    store = gateway.responses
    if store is None:
        chat = to_chat_body(body)
    else:
        chat = await _Kept(store, key_of(request.scope) or "").chat_body(body)
    return JSONResponse({"object": "response.input_tokens", "input_tokens": prompt_tokens(chat)})


async def stored_response(request: Request) -> Response:
    """``GET`` / ``DELETE /v1/responses/{id}``, ``GET …/{id}/input_items`` and ``POST
    …/{id}/cancel``: a kept response, read or forgotten by the client key that made it."""
    store = gateway_of(request).responses
    rest: str = request.path_params["rest"]
    response_id, _, action = rest.partition("/")
    method = request.method
    if (method, action) not in _READS and (method, action) != ("DELETE", ""):
        served = RESPONSES_PATH if not rest and method == "POST" else None  # a stray /
        raise GatewayError(404, not_an_endpoint(request, served))
    if store is None:
        raise GatewayError(
            404,
            "this gateway stores no responses (every answer says store: false; its "
            "registry has no stored_responses section): keep the response you received, "
            "and send the whole conversation in 'input'",
            code="response_not_found",
        )
    owner = key_of(request.scope) or ""
    if (method, action) == ("DELETE", ""):
        if not await _forget(store, owner, response_id):
            raise _not_found(response_id)
        background_runs(request).cancel(response_id)  # nobody can read it any more
        return JSONResponse({"id": response_id, "object": "response", "deleted": True})
    streamed = request.query_params.get("stream", "false").lower() not in ("false", "0")
    after = _starting_after(request) if action == "" and streamed else -1
    abandoned = partial(background_counted, request, "abandoned")
    record = await _read(store, owner, response_id, abandoned)
    if record is None:
        raise _not_found(response_id)
    if action == "" and streamed:
        if not record.streamed:
            raise GatewayError(
                400,
                "only a response made with background: true and stream: true can be streamed "
                "again: GET this one without 'stream'",
                param="stream",
            )
        settled = partial(reaped, store, owner, response_id, abandoned)
        run = background_runs(request).events(response_id)
        events = follow(EventChunks(store, owner, response_id), run, after, settled)
        return streaming(request, events, {})
    if action == "cancel":
        return JSONResponse(await _cancel(request, store, owner, record))
    if action == "input_items":
        chain = await _chain_of(store, owner, response_id, counted=False)
        if chain is None:  # deleted meanwhile
            raise _not_found(response_id)
        items = with_ids([*chain.earlier, *chain.last.input], chain.last.id)
        return JSONResponse(page(items, request, "this response"))
    return JSONResponse(record.response)


_READS = {("GET", ""), ("GET", "input_items"), ("POST", "cancel")}


def _starting_after(request: Request) -> int:
    """``starting_after``: the number of the last event the client has (-1: none)."""
    raw = request.query_params.get("starting_after")
    if raw is None:
        return -1
    try:
        after = int(raw)
    except ValueError:
        after = -2
    if after < 0:
        raise GatewayError(
            400, "'starting_after' must be a sequence number (0 or more)", param="starting_after"
        )
    return after


async def _cancel(
    request: Request, store: ResponseStore, owner: str, record: StoredResponse
) -> dict[str, Any]:
    """A background response cancelled: kept so (any gateway process polling or running
    it sees that), and its run stopped here at once if this process has it (elsewhere
    within a second). One that has already ended is returned as it is."""
    response = record.response
    if response.get("background") is not True:
        raise GatewayError(
            400,
            "only a response made with background: true can be cancelled",
            code="response_not_cancellable",
        )
    if response.get("status") not in RUNNING:
        return response
    try:
        now, cancelled = await kept_ended(store, owner, record.id, _cancelled)
    except StoreUnavailable as exc:
        raise unavailable(exc) from None
    if now is None:  # deleted meanwhile
        raise _not_found(record.id)
    if cancelled:
        background_runs(request).cancel(record.id)
    return now.response


def _cancelled(record: StoredResponse) -> StoredResponse:
    return replace(record, response={**record.response, "status": "cancelled"})


async def _forget(store: ResponseStore, owner: str, response_id: str) -> bool:
    """`forgotten`, a store that does not answer a 503."""
    try:
        return await forgotten(store, owner, response_id)
    except StoreUnavailable as exc:
        raise unavailable(exc) from None


def _not_found(response_id: str) -> GatewayError:
    return GatewayError(
        404,
        f"Response with id '{_shown(response_id)}' not found.",
        code="response_not_found",
    )
