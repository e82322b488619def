"""``POST /v1/messages``: the Anthropic Messages API in front of the same router.

Clients built on Anthropic's SDKs (and tools that speak its API) send their requests
here: each is converted to a chat-completions body (`llmroute.server.messages_convert`),
routed, dispatched, cached, recorded and traced exactly as ``/v1/chat/completions``
serves it (`serve_chat`), and the answer converted back: a Messages object, or a
Messages event stream. Errors come in Anthropic's format (``{"type": "error", "error":
{"type", "message"}}``) with the same status codes, the client-key check's included
(`llmroute.server.auth`); the decision headers (``x-llmroute-*``) come with every answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from llmroute.dispatch.usage import prompt_tokens
from llmroute.errors import LlmrouteError
from llmroute.server.body import read_json_object
from llmroute.server.chat import serve_chat
from llmroute.server.chunk_translation import translated
from llmroute.server.errors import GatewayError, gateway_error
from llmroute.server.messages_convert import (
    StreamTranslator,
    error_response,
    to_chat_body,
    to_message,
)
from llmroute.server.state import gateway_of

__all__ = ["count_tokens", "messages", "passed_on"]


async def messages(request: Request) -> Response:
    ts, started_ns = time.time(), time.perf_counter_ns()
    gateway = gateway_of(request)
    try:
        body = await read_json_object(request, gateway.max_body_bytes)
        chat = to_chat_body(body)
        answer = await serve_chat(request, gateway, chat, ts, started_ns)
    except GatewayError as exc:
        return error_response(exc)
    except LlmrouteError as exc:
        return error_response(gateway_error(exc))
    headers = passed_on(answer.headers)
    model = answer.headers.get("x-llmroute-model", str(chat["model"]))
    if isinstance(answer, StreamingResponse):
        events = translated(answer.body_iterator, StreamTranslator(model))
        return StreamingResponse(
            events, media_type="text/event-stream", headers=headers, status_code=answer.status_code
        )
    data = json.loads(bytes(answer.body))
    return JSONResponse(to_message(data, model), headers=headers)


async def count_tokens(request: Request) -> Response:
    """``POST /v1/messages/count_tokens``: ``{"input_tokens": n}``, estimated with the
    packaged tokenizer (within about 15% of hosted models' own counts on English text);
    nothing is routed or sent upstream, and the model named is not checked."""
    gateway = gateway_of(request)
    try:
        body = await read_json_object(request, gateway.max_body_bytes)
        chat = to_chat_body(body, counting=True)
    except GatewayError as exc:
        return error_response(exc)
    return JSONResponse({"input_tokens": prompt_tokens(chat)})


def passed_on(headers: Mapping[str, str]) -> dict[str, str]:
    """The decision, cache and cascade headers of the chat answer."""
    kept = {k: v for k, v in headers.items() if k.startswith("x-llmroute-")}
    if "cache-control" in headers:
        kept["cache-control"] = headers["cache-control"]
    return kept
