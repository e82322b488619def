"""An ASGI ``send`` that remembers whether the answer started: the middlewares that
answer a failure in its stead (`errors.AnswerUnhandled`, `shutdown.AnswerCutRequests`)
can do so only before then. The outermost one, given the request's scope, also gives
the answer its ``x-request-id`` when it has none (`request_ids.stamped`): the start is
seen here anyway, so a stream's events pay nothing more for it."""

from __future__ import annotations

from starlette.types import Message, Scope, Send

from llmroute.server.request_ids import stamped

__all__ = ["WatchedSend"]


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
