"""The module-wide registries of `llmroute.sdk.streams`, shared by every loop and thread:
a loop closed with a stream still open is not kept alive by them, and a stream opened on
one thread while another lists the open ones (its loop stopping) breaks neither."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from llmroute import Router
from llmroute.dispatch import Opened
from llmroute.sdk import streams
from llmroute.sdk.streams import AsyncStream, close_streams

DROPPED = """
encoder: builtin:static
providers:
  echo: {kind: echo}
models:
  said: {provider: echo, model: said}
routes:
  - {name: r, examples: [hello], target: said}
default: {target: said}
"""
WORDS = [{"role": "user", "content": " ".join(f"w{i}" for i in range(30))}]
CHUNK = b'data: {"id": "c1", "object": "chat.completion.chunk", "choices": []}\n\n'


async def _events() -> AsyncIterator[bytes]:
    """An upstream that sends one event, then nothing (the stream stays open)."""
    yield CHUNK
    await asyncio.Event().wait()


async def _open(read: int = 0) -> AsyncStream:
    opened = Opened(model="m", deployment="d", events=_events())
    stream = AsyncStream(opened, {"provider": "d", "model": "m"}, None)
    for _ in range(read):
        await anext(stream)
    return stream


@pytest.mark.parametrize("read", [0, 1])
def test_a_loop_closed_with_a_stream_open_is_freed(
    read: int, caplog: pytest.LogCaptureFixture
) -> None:
    """``loop.close()`` without a runner cancelling its tasks: the streams' guard on it
    never runs again. `_GUARDS` held it (and so the loop, its selector and everything
    on it) for the life of the process; now it goes with the stream, quietly."""
    loop = asyncio.new_event_loop()
    stream = loop.run_until_complete(_open(read))
    assert loop in streams._GUARDS
    loop.close()
    freed = weakref.ref(loop)
    del loop, stream
    gc.collect()
    assert freed() is None
    assert not [key for key in list(streams._GUARDS.keys()) if key.is_closed()]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_a_stream_opened_while_another_loop_lists_the_open_ones() -> None:
    """`close_streams` lists the open streams (every loop's) while another thread opens
    one on its own loop: the set changed under the listing ("Set changed size during
    iteration") and the stopping loop's streams were left to ``shutdown_asyncgens``.

    The other thread opens its stream at the one moment that matters: from a trace hook
    on the listing, once it has begun, which then waits for the opening to finish (for
    a second at most: with the listing locked, the opening waits for it instead)."""
    listing = threading.Event()
    opened = threading.Event()
    hooked: list[bool] = []

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        if event != "call" or frame.f_code is not weakref.WeakSet.__iter__.__code__:
            return None
        if frame.f_locals.get("self") is not streams._OPEN or hooked:
            return None

        def line(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "line" and not hooked and "itemref" in frame.f_locals:
                hooked.append(True)
                listing.set()
                opened.wait(1.0)
            return line

        return line

    async def stop_own_loop() -> None:
        own = await _open()  # listed, so the listing has an item to stop at
        previous = sys.gettrace()
        sys.settrace(trace)
        try:
            await close_streams(asyncio.get_running_loop())
        finally:
            sys.settrace(previous)
        assert own._ending.ended  # closed in order, as the loop stops

    async def open_elsewhere() -> None:
        assert await asyncio.to_thread(listing.wait, 10)
        other = await _open()
        opened.set()
        await other.aclose()

    errors: list[BaseException] = []

    def run_other() -> None:
        try:
            asyncio.run(open_elsewhere())
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    other = threading.Thread(target=run_other)
    other.start()
    try:
        asyncio.run(stop_own_loop())
    finally:
        listing.set()
        other.join(10)
    assert hooked and not errors


def test_a_dropped_stream_whose_end_is_due_on_a_loop_then_closed_frees_the_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A router's stream (an echo provider: a real one, in this process) read in part and
    dropped unclosed, its loop run one more step (its end scheduled as a task), then
    closed by hand: the end never runs. `_DROPPED` held that task for the life of the
    process, and with it the loop, the stream and the router's clients on it; now they
    are freed, quietly (no "Task was destroyed but it is pending!", no "never awaited":
    warnings are errors here). Closed on a loop with an HTTP upstream's connection
    open, aiohttp warns of that connection as it is freed: it was open, and so is
    kept out of this test."""
    path = tmp_path / "registry.yaml"
    path.write_text(DROPPED)
    router = Router.from_yaml(path)
    loop = asyncio.new_event_loop()
    kept: list[Any] = []

    async def read_one() -> None:
        stream = await router.chat.completions.acreate(messages=WORDS, stream=True)
        await anext(stream)
        kept.append(stream)

    loop.run_until_complete(read_one())
    kept.clear()  # dropped: its end is scheduled on its loop ...
    loop.call_soon(loop.stop)
    loop.run_forever()  # ... and made a task there, one step
    assert len(streams._DROPPED) == 1
    loop.close()
    router.close()
    freed = weakref.ref(loop)
    del loop
    gc.collect()
    gc.collect()  # the end's coroutine, closed as its task went, goes in a second pass
    assert freed() is None and not streams._DROPPED
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
