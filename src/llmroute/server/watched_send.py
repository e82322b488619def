"""An ASGI ``send`` that remembers whether the answer started: the middlewares that
answer a failure in its stead (`errors.AnswerUnhandled`, `shutdown.AnswerCutRequests`)
can do so only before then."""

from __future__ import annotations

from starlette.types import Message, Send

__all__ = ["WatchedSend"]


class WatchedSend:
    __slots__ = ("_send", "started")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    @classmethod
    def of(cls, send: Send) -> WatchedSend:
        """`send` watched: itself when an outer middleware watches it already (the same
        answer starts through both), so that a stream's every event goes through one
        watcher, not one a middleware."""
        return send if isinstance(send, WatchedSend) else cls(send)

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)
