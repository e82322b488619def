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

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmroute.dispatch.usage import prompt_tokens
from llmroute.errors import LlmrouteError
from llmroute.server.body import read_json_object
from llmroute.server.errors import GatewayError, counted, gateway_error, in_api_shape
from llmroute.server.fronts import Stateless, serve_converted
from llmroute.server.messages_convert import (
    StreamTranslator,
    to_chat_body,
    to_message,
)
from llmroute.server.state import gateway_of

__all__ = ["count_tokens", "messages"]

_FRONT = Stateless(
    to_chat_body,
    lambda model, body: StreamTranslator(model),
    lambda data, model, body: to_message(data, model),
)


async def messages(request: Request) -> Response:
    try:
        answer = await serve_converted(request, _FRONT)
    except GatewayError as exc:
        answer = counted(request, in_api_shape(request, exc))
    except LlmrouteError as exc:
        answer = counted(request, in_api_shape(request, gateway_error(exc)))
    return answer  # its ``request-id`` (which Anthropic's clients read) is `stamped`


async def count_tokens(request: Request) -> Response:
    """``POST /v1/messages/count_tokens``: ``{"input_tokens": n}``, estimated with the
    packaged tokenizer (within about 15% of hosted models' own counts on English text);
    nothing is routed or sent upstream, and the model named is not checked."""
    gateway = gateway_of(request)
    try:
        body = await read_json_object(request, gateway.max_body_bytes)
        chat = to_chat_body(body, counting=True)
    except GatewayError as exc:
        return counted(request, in_api_shape(request, exc))
    return JSONResponse({"input_tokens": prompt_tokens(chat)})
