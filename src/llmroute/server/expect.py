"""Closing the connection after an answer given to ``Expect: 100-continue`` before the
body was asked for: a 413 by Content-Length, a quota's 429, a 401.

uvicorn sends ``100 Continue`` when the app first reads the body; one that answers
without reading it leaves the connection open, waiting for a body the client will not
send (it was told the outcome), and a client that reuses the connection for its next
request hangs, or has that request read as the body. RFC 9110 (10.1.1) asks a server
that answers before reading the content to say whether it closes the connection or
reads on: such an answer says ``Connection: close``, and uvicorn closes it once sent.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CloseUnasked", "expects_continue"]

_EXPECT = (b"expect", b"100-continue")


class CloseUnasked:
    """ASGI middleware: ``Connection: close`` on an answer to ``Expect: 100-continue``
    that started before the body was read. Requests without the header (nearly all)
    pass through unwrapped."""

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not expects_continue(scope):
            await self.app(scope, receive, send)
            return
        asked = False

        async def noted() -> Message:
            nonlocal asked
            asked = True
            return await receive()

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start" and not asked:
                headers = [*message.get("headers", ()), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, noted, closing)


def expects_continue(scope: Scope) -> bool:
    """Whether the request waits for ``100 Continue`` to send a body: one without (a GET,
    a HEAD, ``Content-Length: 0``) has nothing left unread, and its connection stays."""
    expects = has_body = False
    for name, value in scope["headers"]:
        if name == _EXPECT[0]:
            expects = expects or value.strip().lower() == _EXPECT[1]
        elif name == b"transfer-encoding" or name == b"content-length":
            has_body = has_body or value.strip() not in (b"", b"0")
    return expects and has_body
