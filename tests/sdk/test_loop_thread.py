"""`LoopThread.stop`: the callers' calls still running are cancelled, the background
work they started (a cache write, a usage charge) is not: closing what holds it (a
parked async generator, as the SDK's dispatcher keepers are) waits for it first."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncGenerator

import pytest

from llmroute.sdk.loop import LoopThread


def test_stop_cancels_the_calls_but_lets_their_background_work_finish() -> None:
    thread = LoopThread("llmroute-sdk-test")
    written: list[str] = []
    started = threading.Event()

    async def write() -> None:
        await asyncio.sleep(0.2)
        written.append("stored")

    async def keeper(work: asyncio.Task[None]) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await work  # as closing a cache waits for its writes

    async def call() -> None:
        work = asyncio.get_running_loop().create_task(write())
        kept = keeper(work)
        await anext(kept)  # registered with the loop's shutdown_asyncgens
        kept_alive.append(kept)

    async def waiting() -> None:
        started.set()
        await asyncio.sleep(60)

    kept_alive: list[AsyncGenerator[None, None]] = []
    thread.run(call())
    pending = thread.submit(waiting())
    assert started.wait(5)
    thread.stop()
    assert not thread.alive
    assert written == ["stored"]
    with pytest.raises(concurrent.futures.CancelledError):
        pending.result(timeout=0)


def test_stop_cancels_background_work_still_left_once_the_generators_are_closed() -> None:
    thread = LoopThread("llmroute-sdk-test")
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def call() -> None:
        left.append(asyncio.get_running_loop().create_task(forever()))

    left: list[asyncio.Task[None]] = []
    thread.run(call())
    thread.stop()
    assert not thread.alive and cancelled.is_set()
