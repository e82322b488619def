"""A streamed response that ends what it streams, however the response ends.

Starlette leaves a stream's body iterator as it was when the client goes away: cancelled
while it sends an event, the iterator stays suspended, and what it holds (the upstream
connection, a deployment's in-flight slot, a budget hold, the request's log record)
waits for the garbage collector, which may be never while a reference cycle holds it.
`EndedStream` closes the iterator as the response ends, and then runs its `closers`:
those end what a body never read at all holds (a client gone as the headers went out),
since closing a generator that never started runs none of its cleanup.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

__all__ = ["END_S", "STREAM_HEADERS", "Closer", "EndedStream", "closers_of"]

log = logging.getLogger("llmroute.server")

Closer = Callable[[], Awaitable[None]]

# what ending a stream may take (Redis calls bounded by their own timeouts): past it
# the gateway moves on, so that a stuck close never holds a server that is stopping
# (the same 5 s the app gives requests to unwind as it stops)
END_S = 5.0

# every event stream's headers: no cache keeps it, and nginx (which buffers a proxied
# answer by default, holding a stream's events until it ends) passes it on as it comes
STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class EndedStream(StreamingResponse):
    """A `StreamingResponse` whose body iterator is closed, and `closers` run, when it
    ends: read whole, broken, or left by its client."""

    closers: tuple[Closer, ...] = ()

    def __init__(self, content: Any, *, closers: tuple[Closer, ...] = (), **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.closers = closers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.end()

    async def end(self) -> None:
        """Close the body iterator, then run the closers; shielded from a cancellation
        of the request (a client gone, a server stopping) and bounded by `END_S`."""
        with anyio.move_on_after(END_S, shield=True):
            for close in (self._close_body, *self.closers):
                try:
                    await close()
                except Exception:  # the answer has gone out: nothing to tell the client
                    log.exception("ending a stream failed")

    async def _close_body(self) -> None:
        aclose = getattr(self.body_iterator, "aclose", None)
        if aclose is not None:
            await aclose()


def closers_of(response: object) -> tuple[Closer, ...]:
    """The closers of `response` when it is an `EndedStream`, for a response made from
    its body (a front's translation, a keep-alive wrapper) to carry on."""
    return getattr(response, "closers", ()) if isinstance(response, EndedStream) else ()
