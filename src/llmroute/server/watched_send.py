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

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)
