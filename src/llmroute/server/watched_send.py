"""An ASGI ``send`` that remembers whether the answer started: the middlewares that
answer a failure in its stead (`errors.AnswerUnhandled`, `shutdown.AnswerCutRequests`)
can do so only before then. The outermost one (`StampRequestIds`), given the request's
scope, also gives the answer its ``x-request-id`` when it has none
(`request_ids.stamped`): the start is seen here anyway, so a stream's events pay nothing
more for it."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmroute.server.request_ids import stamped

__all__ = ["StampRequestIds", "WatchedSend"]


class WatchedSend:
    __slots__ = ("_scope", "_send", "started")

    def __init__(self, send: Send, scope: Scope | None = None) -> None:
        self._send = send
        self._scope = scope
        self.started = False

    @classmethod
    def of(cls, send: Send, scope: Scope | None = None) -> WatchedSend:
        """`send` watched: itself when an outer middleware watches it already (the same
        answer starts through both), so that a stream's every event goes through one
        watcher, not one a middleware. With `scope`, answers get a request id."""
        return send if isinstance(send, WatchedSend) else cls(send, scope)

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            if self._scope is not None:
                self._send = stamped(message, self._scope, self._send)
        await self._send(message)


class StampRequestIds:
    """ASGI middleware, outermost but for the root path's (whose copy of the scope the
    id is kept in, `request_ids.request_id_of`): every answer gets an ``x-request-id``,
    those of the layers outside `errors.AnswerUnhandled` too: CORS answers a preflight
    (its grant, or a 400 for another origin) without calling further in. Its watcher is
    the one the inner middlewares watch through (`WatchedSend.of`) when nothing between
    wraps the `send`, so a stream's events still go through one."""

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, WatchedSend(send, scope))
