"""A request names one server, once: otherwise a 400, before anything reads its Host.

RFC 9112 makes three cases the server's duty, each of which httptools, the parser
`llmroute serve` uses (`llmroute.server.invalid_http`), passes on (h11, uvicorn's other
parser, refuses the first two itself):

* **More than one Host header** (section 3.2: "A server MUST respond with a 400 ... to
  any HTTP/1.1 request message that ... contains more than one Host header field
  line"). Each reader takes one: the loopback check (`llmroute.server.browsers`) read
  the last, so ``Host: evil.example`` then ``Host: 127.0.0.1`` was answered as a
  request to 127.0.0.1, while a proxy in front may have read, checked or routed by the
  first.
* **No Host header on HTTP/1.1** (the same sentence: "... that lacks a Host header
  field"). HTTP/1.0 has none to send: such a request is left to the checks that read
  the Host, as before.
* **A Host naming no host**, empty or a port alone (the same sentence's "a Host header
  field with an invalid field value": an empty one is only for a target URI without an
  authority, and an ``http`` or ``https`` one always has one, whose host RFC 9110,
  section 4.2.1, says is never empty), on any version: the checks that read the Host
  took it for a name they do not know, or none.
* **An absolute-form target** (``GET http://evil.example/v1/models``) **whose
  authority is not the Host header** (section 3.2.2: the server "MUST ignore the
  received Host header field ... and instead use the host information of the
  request-target"), or which carries user credentials (``user:pass@``, which RFC 9110,
  section 4.2.4, says to treat as an error). uvicorn keeps only the target's path;
  `JsonHttpToolsProtocol` hands its authority on (`TARGET_AUTHORITY`, a scope
  extension). One whose authority is the Host (default ports aside) is served; an
  HTTP/1.0 one without Host is served as if its Host were the authority. A server
  without that protocol (uvicorn run by hand) drops the authority unseen, and the Host
  is what every check reads.

Two readers that disagree on which name a request is for is what host-header attacks
are made of; the gateway answers neither. ``/health`` too: the rules are HTTP's, not an
endpoint's. The answer is the one the parser's refusals get (`invalid_http.ANSWER_CODE`,
OpenAI's shape, the connection closed), saying what was wrong and repeating no name;
counted with them (``llmroute_invalid_http_total``) and logged the same way: the first
of each case, then at most one a minute.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from llmroute.log_every import LogEvery
from llmroute.server.invalid_http import ANSWER_CODE
from llmroute.telemetry.metrics import GatewayMetrics

__all__ = ["TARGET_AUTHORITY", "OneHost"]

log = logging.getLogger("llmroute.server")

# the scope extension of an absolute-form target: {"scheme": str (lower case), "authority": bytes}
TARGET_AUTHORITY = "llmroute.target_authority"
_DEFAULT_PORTS = {"http": b":80", "https": b":443"}
_NO_HOST = (b"", b":")  # how a Host value naming no host starts (an IPv6 one: with "[")


class _Refusal:
    """One case's 400, built once, and the words its log line starts with."""

    __slots__ = ("body", "headers", "said")

    def __init__(self, said: str, message: str) -> None:
        self.said = said
        self.body = json.dumps(
            {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": ANSWER_CODE,
                }
            },
            separators=(",", ":"),
        ).encode()
        self.headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(self.body)),
            (b"connection", b"close"),
        ]


# no name is repeated: which one the client meant is what is unknown
_MANY = _Refusal(
    "a request with more than one Host header",
    "this request has more than one Host header, which HTTP forbids "
    "(RFC 9112, section 3.2): send it with one",
)
_NONE = _Refusal(
    "an HTTP/1.1 request without a Host header",
    "this HTTP/1.1 request has no Host header, which HTTP requires "
    "(RFC 9112, section 3.2): send one naming this server",
)
_EMPTY = _Refusal(
    "a request with an empty Host header (or a port alone)",
    "this request's Host header names no host (it is empty, or a port alone), which HTTP "
    "allows only for a target without a host (RFC 9112, section 3.2): send one naming "
    "this server",
)
_OTHER = _Refusal(
    "a request whose absolute-form target is not its Host",
    "this request's target is an absolute URL whose host is not its Host header's, or "
    "which carries user credentials (RFC 9112, section 3.2.2; RFC 9110, section 4.2.4): "
    "send the path alone, or the same host in both",
)


class OneHost:
    """ASGI middleware: the module docstring's 400. One pass over the headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._log_every = LogEvery(60.0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host: bytes | None = None
        count = 0
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
                count += 1
        refusal = None
        if count > 1:
            refusal = _MANY
        elif count == 0 and scope.get("http_version") == "1.1":
            refusal = _NONE
        elif host is not None and host.strip()[:1] in _NO_HOST:
            refusal = _EMPTY
        else:
            extensions = scope.get("extensions")
            target = None if extensions is None else extensions.get(TARGET_AUTHORITY)
            if target is not None:
                refusal, scope = _by_target(target, host, scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        self._said(scope, refusal)
        await send({"type": "http.response.start", "status": 400, "headers": refusal.headers})
        await send({"type": "http.response.body", "body": refusal.body})

    def _said(self, scope: Scope, refusal: _Refusal) -> None:
        metrics = getattr(scope["app"].state, "metrics", None) if "app" in scope else None
        if isinstance(metrics, GatewayMetrics):
            metrics.invalid_http()
        held = self._log_every.due(refusal.said)
        if held is None:
            return
        client = scope.get("client")
        log.warning(
            "%s from %s: answered 400 %s, connection closed%s",
            refusal.said,
            "(unknown)" if not client else str(client[0])[:64],
            ANSWER_CODE,
            LogEvery.since(held),
        )


def _by_target(
    target: dict[str, Any], host: bytes | None, scope: Scope
) -> tuple[_Refusal | None, Scope]:
    """An absolute-form target's verdict: refused (`_OTHER`) unless its authority is
    `host`'s (case and the target scheme's default port aside) and holds no user
    credentials; an HTTP/1.0 request without Host gets the authority as its Host."""
    authority: bytes = target["authority"].lower()
    if b"@" in authority:
        return _OTHER, scope
    if host is None:
        return None, {**scope, "headers": [*scope["headers"], (b"host", authority)]}
    host = host.lower()
    default = _DEFAULT_PORTS.get(target["scheme"])
    if default is not None:
        authority, host = authority.removesuffix(default), host.removesuffix(default)
    return (None if authority == host else _OTHER), scope
