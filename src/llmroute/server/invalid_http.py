"""uvicorn's answer to what is not an HTTP request, in OpenAI's error JSON.

A request uvicorn's parser cannot read (a malformed request line, a header byte HTTP
forbids, a ``Content-Length`` that is not a number or one beside ``Transfer-Encoding``,
a broken chunked body, an unknown transfer coding, TLS or HTTP/2 sent to this plain
HTTP/1.1 port) never reaches the app: uvicorn logs ``Invalid HTTP request received.``,
answers a plain-text 400 saying the same, and closes the connection. `http_protocol`
is the protocol class `llmroute serve` gives uvicorn: its own httptools one (what its
``auto`` picks, httptools being installed with llmroute), whose 400 is the error JSON
every other client error of the gateway is, with code ``invalid_http_request``; the
log line and the closed connection stay uvicorn's.

The hook, ``send_400_response``, is not documented uvicorn API (it is the same from
uvicorn 0.30, the lowest this package allows, to 0.55): a uvicorn without it, or without
what the answer is built from, answers as it always did, plain text.
"""

from __future__ import annotations

import asyncio
import json

__all__ = ["ANSWER_CODE", "http_protocol"]

ANSWER_CODE = "invalid_http_request"
_BODY = json.dumps(
    {
        "error": {
            # nothing of the request is repeated: it may be anything (it is not HTTP)
            "message": "this is not a valid HTTP/1.1 request (a malformed request line or "
            "header, a bad Content-Length, a broken chunked body, or another protocol, "
            "such as TLS or HTTP/2, sent to this plain HTTP port); it was not read",
            "type": "invalid_request_error",
            "param": None,
            "code": ANSWER_CODE,
        }
    },
    separators=(",", ":"),
).encode()
_HEAD = (
    b"content-type: application/json\r\n"
    + b"content-length: %d\r\n" % len(_BODY)
    + b"connection: close\r\n\r\n"
)


def http_protocol() -> type[asyncio.Protocol] | str:
    """What `llmroute serve` passes uvicorn as ``http``: the protocol class whose 400
    is the error JSON, or ``"auto"`` (uvicorn's own choice, and answer) when this
    uvicorn has no httptools protocol where 0.30 to 0.55 have it."""
    try:
        from llmroute.server._json_httptools import JsonHttpToolsProtocol
    except ImportError:
        return "auto"
    return JsonHttpToolsProtocol


def answer(default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """The whole 400 as sent: status line, uvicorn's default headers (``date``,
    ``server``), the JSON's."""
    lines = [b"HTTP/1.1 400 Bad Request\r\n"]
    lines += [name + b": " + value + b"\r\n" for name, value in default_headers]
    return b"".join(lines) + _HEAD + _BODY
