"""`EndedStream`: a streamed response ends what it streams however the response ends.
A client that stops reading and hangs up cancels the response while it sends (its body
iterator is left suspended, which Starlette never closes) or before its first event
(the body never started, so closing it runs none of its cleanup); either way the body
is closed and the closers run as the response returns, not when the garbage collector
finds them (the tests hold every reference, so it never does)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.responses import StreamingResponse
from starlette.types import Message

from llmroute.server.ended_stream import EndedStream
from llmroute.server.keepalive import with_keepalive

_SCOPE = {"type": "http", "asgi": {"spec_version": "2.3"}}


class _Body:
    def __init__(self) -> None:
        self.sent = 0
        self.closed = False

    async def events(self) -> AsyncIterator[bytes]:
        try:
            while True:
                self.sent += 1
                yield b"data: x\n\n"
        finally:
            self.closed = True


async def _hung_up(response: StreamingResponse, stuck_on: str) -> None:
    """`response` sent to a client that stops reading at its first `stuck_on` message
    (``http.response.start`` or ``http.response.body``), then hangs up."""
    stuck = asyncio.Event()

    async def send(message: Message) -> None:
        if message["type"] == stuck_on:
            stuck.set()
            await asyncio.Event().wait()  # the socket's buffer is full: never returns

    async def receive() -> dict[str, Any]:
        await stuck.wait()
        return {"type": "http.disconnect"}

    await asyncio.wait_for(response(_SCOPE, receive, send), 5)


def _after_hang_up(response: StreamingResponse, stuck_on: str, body: _Body) -> bool:
    """Whether `body` is closed as the response has returned (asked then: the loop's
    own end closes every generator left open)."""

    async def go() -> bool:
        await _hung_up(response, stuck_on)
        return body.closed

    return asyncio.run(go())


@pytest.mark.parametrize("kept_alive", [False, True])
def test_a_body_left_suspended_in_its_send_is_closed_and_its_closers_run(
    kept_alive: bool,
) -> None:
    body, ended = _Body(), []

    async def end() -> None:
        await asyncio.sleep(0)  # closers may await (Redis calls)
        ended.append("closer")

    response = with_keepalive(EndedStream(body.events(), closers=(end,)), 30 if kept_alive else 0)
    assert _after_hang_up(response, "http.response.body", body)
    assert body.sent == 1 and ended == ["closer"]


def test_a_body_never_read_has_its_closers_run() -> None:
    body, ended = _Body(), []

    async def end() -> None:
        ended.append("closer")

    response = EndedStream(body.events(), closers=(end,))
    assert not _after_hang_up(response, "http.response.start", body)
    assert body.sent == 0 and ended == ["closer"]


def test_starlette_alone_leaves_the_body_suspended() -> None:
    """What `EndedStream` is for: the plain response leaves the same body open."""
    body = _Body()
    assert not _after_hang_up(StreamingResponse(body.events()), "http.response.body", body)
    assert body.sent == 1


def test_a_failing_closer_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    body, ended = _Body(), []

    async def broken() -> None:
        raise RuntimeError("Redis said no")

    async def end() -> None:
        ended.append("closer")

    response = EndedStream(body.events(), closers=(broken, end))
    assert _after_hang_up(response, "http.response.body", body)
    assert ended == ["closer"]
    assert "ending a stream failed" in caplog.text
