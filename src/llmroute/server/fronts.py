"""Another API's request served as a chat completion: the part the Messages
(`llmroute.server.messages`) and Responses (`llmroute.server.responses`) fronts share.

The request is read and converted to a chat body, served by `serve_chat` exactly as
``/v1/chat/completions`` serves it, and the answer converted back: a stream through the
front's `ChunkTranslator`, a whole answer through its converter. The decision, cache and
cascade headers come along. Errors are raised for the front to render in its API's
format.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from llmroute.server.body import read_json_object
from llmroute.server.chat import CLIENT_CLOSED, serve_chat
from llmroute.server.chunk_translation import ChunkTranslator, translated
from llmroute.server.state import gateway_of

__all__ = ["passed_on", "serve_converted"]

Body = dict[str, Any]


async def serve_converted(
    request: Request,
    to_chat: Callable[[Body], Body],
    stream_of: Callable[[str, Body], ChunkTranslator],
    answer_of: Callable[[Body, str, Body], Body],
) -> Response:
    """`to_chat` converts the request body; `stream_of(model, body)` translates a stream
    and `answer_of(data, model, body)` a whole answer, `model` being the pool model that
    served."""
    ts, started_ns = time.time(), time.perf_counter_ns()
    gateway = gateway_of(request)
    body = await read_json_object(request, gateway.max_body_bytes)
    chat = to_chat(body)
    answer = await serve_chat(request, gateway, chat, ts, started_ns)
    if answer.status_code == CLIENT_CLOSED:
        return answer  # nobody to convert it for
    headers = passed_on(answer.headers)
    model = answer.headers.get("x-llmroute-model", str(chat["model"]))
    if isinstance(answer, StreamingResponse):
        events = translated(answer.body_iterator, stream_of(model, body))
        return StreamingResponse(
            events, media_type="text/event-stream", headers=headers, status_code=answer.status_code
        )
    data = json.loads(bytes(answer.body))
    return JSONResponse(answer_of(data, model, body), headers=headers)


def passed_on(headers: Mapping[str, str]) -> dict[str, str]:
    """The decision, cache and cascade headers of the chat answer."""
    kept = {k: v for k, v in headers.items() if k.startswith("x-llmroute-") or k == "x-request-id"}
    if "cache-control" in headers:
        kept["cache-control"] = headers["cache-control"]
    return kept
