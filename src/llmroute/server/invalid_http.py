"""uvicorn's answer to what is not an HTTP request, in OpenAI's error JSON.

A request uvicorn's parser cannot read (a malformed request line, a header byte HTTP
forbids, a ``Content-Length`` that is not a number or one beside ``Transfer-Encoding``,
a broken chunked body, an unknown transfer coding, TLS or HTTP/2 sent to this plain
HTTP/1.1 port) never reaches the app: uvicorn logs ``Invalid HTTP request received.``,
answers a plain-text 400 saying the same, and closes the connection. `http_protocol`
is the protocol class `llmroute serve` and `llmroute dashboard` give uvicorn: its own
httptools one (what its ``auto`` picks, httptools being installed with llmroute), whose
400 is the error JSON every other client error of the gateway is, with code
``invalid_http_request``; the closed connection stays uvicorn's. (The dashboard has no
metrics: it counts nothing.)

Each is counted (``llmroute_invalid_http_total``, in the metrics of the app uvicorn
serves) and logged on ``llmroute.server`` with the client's address: the first at once,
then at most one a minute saying how many were not (`llmroute.log_every`), for whoever
can connect can send such bytes as fast as they like. uvicorn's own warning, one a
request, is held back (`quiet_uvicorn`) while this protocol answers. So are its two
warnings about a request asking to upgrade to what the gateway does not serve (``h2c``,
a WebSocket): that request is served as HTTP/1.1, and the warnings are said for the
first, then at most once a minute.

The hook, ``send_400_response``, is not documented uvicorn API (it is the same from
uvicorn 0.30, the lowest this package allows, to 0.55): a uvicorn without it, or without
what the answer is built from, answers as it always did, plain text.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from llmroute.log_every import LogEvery

if TYPE_CHECKING:
    import asyncio

    from llmroute.telemetry.metrics import GatewayMetrics

__all__ = ["ANSWER_CODE", "http_protocol"]

log = logging.getLogger("llmroute.server")

ANSWER_CODE = "invalid_http_request"
_UVICORN_SAYS = "Invalid HTTP request received."  # uvicorn.error's warning, one a request
# uvicorn.error's warnings for a request asking to upgrade to what is not served (h2c;
# a WebSocket: no WebSocket library is installed), two a request
_UPGRADE_SAYS = ("Unsupported upgrade request.", "No supported WebSocket library detected.")
_LOG_EVERY = LogEvery(60.0)  # one server a process: one period for all its connections
_WRAPPERS_MOST = 8  # uvicorn's middleware around the app (proxy headers, trace logging)
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
    """What `llmroute serve` and `dashboard` pass uvicorn as ``http``: the protocol
    class whose 400 is the error JSON, or ``"auto"`` (uvicorn's own choice, and answer)
    when this uvicorn has no httptools protocol where 0.30 to 0.55 have it."""
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


def said(app: object, client: tuple[str, int] | None) -> None:
    """Count bytes that were not HTTP in `app`'s metrics (the app as uvicorn loaded it,
    in its middleware) and log them when `_LOG_EVERY` says so."""
    metrics = _metrics_of(app)
    if metrics is not None:
        metrics.invalid_http()
    held = _LOG_EVERY.due(ANSWER_CODE)
    if held is not None:
        log.warning(
            "not an HTTP/1.1 request from %s: answered 400 %s, connection closed%s",
            "(unknown)" if not client else str(client[0])[:64],
            ANSWER_CODE,
            LogEvery.since(held),
        )


def _metrics_of(app: object) -> GatewayMetrics | None:
    """The gateway's metrics (``app.state.metrics``) under uvicorn's middleware, each
    of which holds the next as ``.app``; None for another app or before its start.
    (Imported here: every CLI command imports this module, and few need metrics.)"""
    from llmroute.telemetry.metrics import GatewayMetrics

    for _ in range(_WRAPPERS_MOST):
        state = getattr(app, "state", None)
        if state is not None:
            metrics = getattr(state, "metrics", None)
            return metrics if isinstance(metrics, GatewayMetrics) else None
        app = getattr(app, "app", None)
        if app is None:
            break
    return None


class _HoldUvicornsLine(logging.Filter):
    """Held on ``uvicorn.error``: drops uvicorn's per-request warning, which `said`
    replaces, and lets its warnings about an upgrade it does not take (any client may
    ask for one) through as `said` does: the first, then at most one a minute."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        if msg == _UVICORN_SAYS:
            return False
        if not isinstance(msg, str):
            return True
        kind = next((said for said in _UPGRADE_SAYS if msg.startswith(said)), None)
        if kind is None:
            return True
        held = _LOG_EVERY.due(kind)
        if held is None:
            return False
        record.msg = msg + LogEvery.since(held)
        return True


_HOLD = _HoldUvicornsLine()


def quiet_uvicorn() -> None:
    """Hold uvicorn's own line back (once a process; adding it again is a no-op)."""
    logging.getLogger("uvicorn.error").addFilter(_HOLD)
