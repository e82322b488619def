"""SSE keep-alive comments on streams that go quiet.

A reasoning model thinks for minutes before its first words; an agent's tool call can
stall a stream as long. Proxies and load balancers in front of the gateway close a
connection that carried nothing for a while (60 s is a common default: AWS ALB, nginx's
``proxy_read_timeout``), and the client's answer is lost. So a stream that has sent
nothing for `every_s` gets a comment line (``: keep-alive``), which every SSE client
ignores (the OpenAI and Anthropic SDKs included), until its next event comes.

The stream itself is relayed as Starlette relays any: its events are read where they
are sent, so an event costs one clock reading more, not a hand-over between tasks (which
cost ~10 µs an event, measured). A second task wakes once per `every_s` and sends the
comment when nothing went out meanwhile; a comment is a whole SSE event, so it may go
out before or after an event sent at the same moment without breaking either.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Send

from llmroute.server.ended_stream import EndedStream, closers_of
from llmroute.server.settings import DEFAULT_SSE_KEEPALIVE_S

__all__ = ["COMMENT", "KeptAlive", "keepalive_of", "with_keepalive"]

COMMENT = b": keep-alive\n\n"


def keepalive_of(request: Request) -> float:
    """The server's keep-alive interval (``--sse-keepalive``)."""
    settings = getattr(request.app.state, "serve_settings", None)
    every_s = getattr(settings, "sse_keepalive_s", DEFAULT_SSE_KEEPALIVE_S)
    return float(every_s)


def with_keepalive(response: Response, every_s: float) -> Response:
    """`response` kept alive (`KeptAlive`) when it is a stream and `every_s` > 0; else
    as it is."""
    if every_s <= 0 or not isinstance(response, StreamingResponse):
        return response
    return KeptAlive(response, every_s)


class KeptAlive(EndedStream):
    """`streamed` (its events, status, headers, background task and closers), with
    `COMMENT` sent whenever it has sent nothing for `every_s`."""

    def __init__(self, streamed: StreamingResponse, every_s: float) -> None:
        self.body_iterator = streamed.body_iterator
        self.closers = closers_of(streamed)
        self.status_code = streamed.status_code
        self.media_type = streamed.media_type
        self.background = streamed.background
        self.raw_headers = streamed.raw_headers
        self.every_s = every_s
        self._sent_at = 0.0

    async def stream_response(self, send: Send) -> None:
        loop = asyncio.get_running_loop()
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        self._sent_at = loop.time()
        beat = asyncio.create_task(self._beat(send))
        try:
            async for chunk in self.body_iterator:
                if not isinstance(chunk, bytes | memoryview):
                    chunk = chunk.encode(self.charset)
                self._sent_at = loop.time()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            beat.cancel()
            await asyncio.wait({beat})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _beat(self, send: Send) -> None:
        loop = asyncio.get_running_loop()
        while True:
            wait = self._sent_at + self.every_s - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._sent_at = loop.time()
            try:
                await send({"type": "http.response.body", "body": COMMENT, "more_body": True})
            except Exception:  # the client is gone: the stream's own send will say so
                return
