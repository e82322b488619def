"""``POST /v1/responses``: OpenAI's Responses API in front of the same router.

Clients built on it (the ``openai`` SDK's ``client.responses``, agents and coding tools
that speak only this API) send their requests here: each is converted to a
chat-completions body (`llmroute.server.responses_convert`), routed, dispatched,
cached, recorded and traced exactly as ``/v1/chat/completions`` serves it
(`serve_chat`), and the answer converted back: a ``response`` object, or a Responses
event stream (`llmroute.server.responses_stream`). Errors are OpenAI's error JSON with
the usual status codes; the decision headers (``x-llmroute-*``) come with every answer.
The gateway stores nothing: ``store`` is answered ``false``.
"""

from __future__ import annotations

import json
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from llmroute.server.body import read_json_object
from llmroute.server.chat import serve_chat
from llmroute.server.chunk_translation import translated
from llmroute.server.errors import GatewayError
from llmroute.server.messages import passed_on
from llmroute.server.responses_convert import to_chat_body, to_response
from llmroute.server.responses_stream import ResponsesStream
from llmroute.server.state import gateway_of

__all__ = ["responses", "stored_response"]


async def responses(request: Request) -> Response:
    ts, started_ns = time.time(), time.perf_counter_ns()
    gateway = gateway_of(request)
    body = await read_json_object(request, gateway.max_body_bytes)
    chat = to_chat_body(body)
    answer = await serve_chat(request, gateway, chat, ts, started_ns)
    headers = passed_on(answer.headers)
    model = answer.headers.get("x-llmroute-model", str(chat["model"]))
    if isinstance(answer, StreamingResponse):
        events = translated(answer.body_iterator, ResponsesStream(model, body))
        return StreamingResponse(
            events, media_type="text/event-stream", headers=headers, status_code=answer.status_code
        )
    data = json.loads(bytes(answer.body))
    return JSONResponse(to_response(data, model, body), headers=headers)


async def stored_response(request: Request) -> Response:
    """``GET`` / ``DELETE /v1/responses/{id}`` (and ``…/cancel``, ``…/input_items``): the
    gateway stores no response, so there is none to return, delete or cancel."""
    raise GatewayError(
        404,
        "this gateway stores no responses (every answer says store: false): "
        "keep the response you received, and send the whole conversation in 'input'",
        code="response_not_found",
    )
