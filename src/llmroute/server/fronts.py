"""Another API's request served as a chat completion: the part the Messages
(`llmroute.server.messages`) and Responses (`llmroute.server.responses`) fronts share.

The request is read and converted to a chat body, served by `serve_chat` exactly as
``/v1/chat/completions`` serves it, and the answer converted back, each by the request's
`Front`: `Stateless` for pure conversions (a `ChunkTranslator` for streams), or one that
also reads and writes state (the Responses front's kept responses). The decision, cache
and cascade headers come along. Errors are raised for the front to render in its API's
format.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from llmroute.dispatch.text_completions import TextRequest
from llmroute.server.body import read_json_object
from llmroute.server.chat import (
    CLIENT_CLOSED,
    Planned,
    RelayedStream,
    note_converted_tags,
    plan_chat,
    serve_chat,
)
from llmroute.server.chunk_translation import ChunkTranslator, translated
from llmroute.server.ended_stream import STREAM_HEADERS, EndedStream, closers_of
from llmroute.server.errors import GatewayError
from llmroute.server.keepalive import keepalive_of, with_keepalive
from llmroute.server.state import gateway_of
from llmroute.verbatim_json import answer_json, loads_answer

__all__ = [
    "Front",
    "Stateless",
    "answer_converted",
    "passed_on",
    "plan_converted",
    "serve_converted",
]

Body = dict[str, Any]
# what each converted API calls the chat body's `messages` (Anthropic's is `messages` too)
_COMPLETIONS = "/v1/completions"
_BODY_PARAM = {"/v1/responses": "input", _COMPLETIONS: "prompt"}
Events = AsyncIterable[str | bytes | memoryview]
Served = Callable[[], str]  # the pool model answering a stream now


class Front(Protocol):
    """One request's conversion: its body to a chat body, and the chat answer back
    (`model` is the pool model that served)."""

    async def chat_body(self, body: Body) -> Body: ...

    def stream(
        self, model: str, body: Body, events: Events, served: Served | None = None
    ) -> AsyncIterator[bytes]: ...

    async def answer(self, data: Body, model: str, body: Body) -> Body: ...


@dataclass(frozen=True, slots=True)
class Stateless:
    """A `Front` made of three pure conversions: `to_chat` for the request body,
    `stream_of(model, body)` translating a stream and `answer_of(data, model, body)` a
    whole answer."""

    to_chat: Callable[[Body], Body]
    stream_of: Callable[[str, Body], ChunkTranslator]
    answer_of: Callable[[Body, str, Body], Body]

    async def chat_body(self, body: Body) -> Body:
        return self.to_chat(body)

    def stream(
        self, model: str, body: Body, events: Events, served: Served | None = None
    ) -> AsyncIterator[bytes]:
        translator = self.stream_of(model, body)
        if served is not None:
            translator.follow(served)
        return translated(events, translator)

    async def answer(self, data: Body, model: str, body: Body) -> Body:
        return self.answer_of(data, model, body)


async def serve_converted(
    request: Request, front: Front, text_of: Callable[[Body], TextRequest] | None = None
) -> Response:
    """The request read, converted by `front`, served as a chat completion and its answer
    converted back. `text_of`: the request is a completion, whose fields a chat body
    cannot carry it says."""
    ts, started_ns = time.time(), time.perf_counter_ns()
    gateway = gateway_of(request)
    body = await read_json_object(request, gateway.max_body_bytes)
    chat = await front.chat_body(body)
    text = None if text_of is None else text_of(body)
    return await answer_converted(request, front, body, chat, ts, started_ns, text)


async def answer_converted(
    request: Request,
    front: Front,
    body: Body,
    chat: Body,
    ts: float,
    started_ns: int,
    text: TextRequest | None = None,
    planned: Planned | None = None,
) -> Response:
    """`chat` (`front`'s conversion of `body`, received at `ts` / `started_ns`) served
    as a chat completion (`text`: of a completions request; `planned`: its plan, made
    already), and its answer converted back."""
    gateway = gateway_of(request)
    note_converted_tags(request, chat)
    try:
        answer = await serve_chat(request, gateway, chat, ts, started_ns, text, planned)
    except GatewayError as error:
        error.param = _front_param(error, request.url.path, body)
        raise
    if answer.status_code == CLIENT_CLOSED:
        return answer  # nobody to convert it for
    if isinstance(answer, StreamingResponse):
        try:
            return _stream_converted(request, front, body, chat, answer)
        except BaseException as exc:
            if isinstance(answer, RelayedStream):  # never sent: it would end nothing
                await answer.unsent(exc)
            raise
    headers = passed_on(answer.headers)
    model = answer.headers.get("x-llmroute-model", str(chat["model"]))
    data = await loads_answer(bytes(answer.body))
    converted = await front.answer(data, model, body)
    return Response(await answer_json(converted), media_type="application/json", headers=headers)


def _stream_converted(
    request: Request, front: Front, body: Body, chat: Body, answer: StreamingResponse
) -> Response:
    """The chat stream `answer` converted by `front`, with its headers and closers."""
    model = answer.headers.get("x-llmroute-model", str(chat["model"]))
    served = answer.served if isinstance(answer, RelayedStream) else None
    events = front.stream(model, body, answer.body_iterator, served)
    streamed = EndedStream(
        events,
        media_type="text/event-stream",
        headers={**passed_on(answer.headers), **STREAM_HEADERS},
        status_code=answer.status_code,
        closers=closers_of(answer),
    )
    return with_keepalive(streamed, keepalive_of(request))


async def plan_converted(
    request: Request, body: Body, chat: Body, ts: float, started_ns: int
) -> Planned | None:
    """`plan_chat` for `chat`, the conversion of `body`: a request refused before any
    work as `answer_converted` refuses it (its ``param`` as this API names it)."""
    note_converted_tags(request, chat)
    try:
        return await plan_chat(request, gateway_of(request), chat, ts, started_ns)
    except GatewayError as error:
        error.param = _front_param(error, request.url.path, body)
        raise


def _front_param(error: GatewayError, path: str, body: Body) -> str | None:
    """`error`'s ``param`` as the front's client reads it. ``messages`` is what this API
    calls otherwise (``input``, ``prompt``). An upstream's ``param`` names a field of the
    converted chat body: its messages are the front's body field, without the index
    (a system message or ``instructions`` shifts them); any other is left null rather
    than naming a field the client did not send. A completions `body` names its other
    fields as the chat body does (``n``, ``temperature``, ``stop``): one it holds is named
    as it is, and so is any of a completion sent raw (`GatewayError.upstream_raw`: it
    names a field of the client's own body, ``suffix``, ``echo``)."""
    param = error.param
    if param is None:
        return None
    if error.upstream_param:
        if error.upstream_raw or (path == _COMPLETIONS and _field_of(param) in body):
            return param
        if param != "messages" and not param.startswith(("messages[", "messages.")):
            return None
        param = "messages"
    if param == "messages":  # the chat body's field: this API calls it otherwise
        return _BODY_PARAM.get(path, param)
    return param


def _field_of(param: str) -> str:
    """The body field a ``param`` path starts with (``stop`` of ``stop[1]``)."""
    cut = min((i for i in (param.find("."), param.find("[")) if i >= 0), default=len(param))
    return param[:cut]


def passed_on(headers: Mapping[str, str]) -> dict[str, str]:
    """The decision, cache and cascade headers of the chat answer."""
    kept = {k: v for k, v in headers.items() if k.startswith("x-llmroute-") or k == "x-request-id"}
    if "cache-control" in headers:
        kept["cache-control"] = headers["cache-control"]
    return kept
