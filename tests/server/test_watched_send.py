"""`WatchedSend`: the middlewares that answer a failure in the answer's stead
(`errors.AnswerUnhandled`, `shutdown.AnswerCutRequests`) watch whether it started."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from llmroute.server.errors import AnswerUnhandled
from llmroute.server.shutdown import AnswerCutRequests
from llmroute.server.watched_send import WatchedSend


def test_the_middlewares_watch_through_one_watcher_and_still_see_the_start() -> None:
    """Each wrapped `send` in a watcher of its own, one inside the other: every event of
    a stream went through both. The inner one watches through the outer's; a failure
    after the start still goes on (the answer cannot be replaced)."""
    seen: list[Any] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(send)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("after the start")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    stack = AnswerUnhandled(AnswerCutRequests(app))
    with pytest.raises(RuntimeError, match="after the start"):
        asyncio.run(stack({"type": "http", "path": "/"}, receive, send))
    (watched,) = seen
    assert isinstance(watched, WatchedSend) and watched._send is send
    assert watched.started and [m["type"] for m in sent] == ["http.response.start"]
