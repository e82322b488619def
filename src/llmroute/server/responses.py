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

from starlette.requests import Request
from starlette.responses import Response

from llmroute.server.errors import GatewayError
from llmroute.server.fronts import serve_converted
from llmroute.server.responses_convert import to_chat_body, to_response
from llmroute.server.responses_stream import ResponsesStream

__all__ = ["responses", "stored_response"]


async def responses(request: Request) -> Response:
    return await serve_converted(request, to_chat_body, ResponsesStream, to_response)


async def stored_response(request: Request) -> Response:
    """``GET`` / ``DELETE /v1/responses/{id}`` (and ``…/cancel``, ``…/input_items``): the
    gateway stores no response, so there is none to return, delete or cancel."""
    raise GatewayError(
        404,
        "this gateway stores no responses (every answer says store: false): "
        "keep the response you received, and send the whole conversation in 'input'",
        code="response_not_found",
    )
