"""A request with more than one ``Host`` header is a 400, before anything reads it.

RFC 9112 (section 3.2) makes it the server's duty: "A server MUST respond with a 400
(Bad Request) status code to any HTTP/1.1 request message that ... contains more than
one Host header field line". uvicorn's httptools parser, which `llmroute serve` uses
(`llmroute.server.invalid_http`), passes both on (h11, uvicorn's other parser, refuses
them), and each reader takes one: the loopback check (`llmroute.server.browsers`) read
the last, so ``Host: evil.example`` then ``Host: 127.0.0.1`` was answered as a request to
127.0.0.1, while a proxy in front may have read, checked or routed by the first. Two
readers that disagree on which name a request is for is what host-header attacks are
made of; the gateway answers neither.

The answer is the one the parser's refusals get (`invalid_http.ANSWER_CODE`, OpenAI's
shape, the connection closed), saying what was wrong; counted with them
(``llmroute_invalid_http_total``) and logged the same way: the first, then at most one
a minute. ``/health`` too: the rule is HTTP's, not an endpoint's. A request without
``Host`` is left to the checks that read it (HTTP/1.0 has none to send).
"""

from __future__ import annotations

import json
import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from llmroute.log_every import LogEvery
from llmroute.server.invalid_http import ANSWER_CODE
from llmroute.telemetry.metrics import GatewayMetrics

__all__ = ["OneHost"]

log = logging.getLogger("llmroute.server")

_BODY = json.dumps(
    {
        "error": {
            # neither name is repeated: which one the client meant is what is unknown
            "message": "this request has more than one Host header, which HTTP forbids "
            "(RFC 9112, section 3.2): send it with one",
            "type": "invalid_request_error",
            "param": None,
            "code": ANSWER_CODE,
        }
    },
    separators=(",", ":"),
).encode()
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", b"%d" % len(_BODY)),
    (b"connection", b"close"),
]


class OneHost:
    """ASGI middleware: the module docstring's 400. One pass over the headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._log_every = LogEvery(60.0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _hosts(scope) < 2:
            await self.app(scope, receive, send)
            return
        self._said(scope)
        await send({"type": "http.response.start", "status": 400, "headers": _HEADERS})
        await send({"type": "http.response.body", "body": _BODY})

    def _said(self, scope: Scope) -> None:
        metrics = getattr(scope["app"].state, "metrics", None) if "app" in scope else None
        if isinstance(metrics, GatewayMetrics):
            metrics.invalid_http()
        held = self._log_every.due("host")
        if held is None:
            return
        client = scope.get("client")
        log.warning(
            "a request with more than one Host header from %s: answered 400 %s, "
            "connection closed%s",
            "(unknown)" if not client else str(client[0])[:64],
            ANSWER_CODE,
            LogEvery.since(held),
        )


def _hosts(scope: Scope) -> int:
    count = 0
    for name, _ in scope["headers"]:
        if name == b"host":
            count += 1
    return count
