"""How many turns a task beside some work gets on the event loop while it runs: a step
that gives the loop back lets it run (a count, not a time: no timing in unit tests);
`longest_wait_share`, where a count cannot tell work that keeps the GIL in a worker
thread from work done in steps, compares two times of one run instead."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from llmroute import joined_bytes

T = TypeVar("T")


def ticks_while(work: Callable[[], Awaitable[T]]) -> tuple[T, int]:
    """What `work()` gives, and how many turns a task beside it got on the event loop
    meanwhile."""
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async def main() -> T:
        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0)
        try:
            return await work()
        finally:
            ticker.cancel()

    done = asyncio.run(main())
    return done, ticks


def longest_wait_share(work: Callable[[], Awaitable[T]]) -> tuple[T, float]:
    """What `work()` gives, and the longest wait between two turns of a task beside it
    as a share of `work`'s own time (1.0: it held the loop throughout; a thread that
    keeps the GIL comes close to that too, though the ticker turns around its hand-off)."""
    stamps: list[float] = []

    async def tick() -> None:
        while True:
            stamps.append(time.perf_counter())
            await asyncio.sleep(0)

    async def main() -> tuple[T, float]:
        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0)
        began = time.perf_counter()
        try:
            done = await work()
        finally:
            ended = time.perf_counter()
            ticker.cancel()
        points = [began, *(at for at in stamps if began < at < ended), ended]
        longest = max(later - at for at, later in itertools.pairwise(points))
        return done, longest / (ended - began)

    return asyncio.run(main())


def joins_off_loop(work: Callable[[], Awaitable[T]]) -> tuple[T, list[tuple[int, bool]]]:
    """What `work()` gives, and the ``bytes.join`` calls it handed to `joined`'s worker
    threads: each one's size and whether its pieces were all `bytes`, the only pieces
    for which the join lets go of the GIL (the event loop runs meanwhile)."""
    joins: list[tuple[int, bool]] = []

    class Recording(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
            if fn == b"".join:
                pieces = args[0]
                joins.append((sum(map(len, pieces)), all(type(p) is bytes for p in pieces)))
            return super().submit(fn, *args, **kwargs)

    with Recording(max_workers=2) as executor:
        kept, joined_bytes._JOINS = joined_bytes._JOINS, executor
        try:
            return asyncio.run(work()), joins
        finally:
            joined_bytes._JOINS = kept


def while_default_executor_blocked(work: Callable[[], Awaitable[T]], within: float = 20) -> T:
    """What `work()` gives, run while the loop's default executor (one thread) is busy
    with a blocking call, as a remote encoder's round trips keep it (up to its timeout):
    `TimeoutError` after `within` seconds if `work` waits for that executor."""
    release = threading.Event()

    async def main() -> T:
        with ThreadPoolExecutor(max_workers=1) as busy:
            asyncio.get_running_loop().set_default_executor(busy)
            blocked = asyncio.ensure_future(asyncio.to_thread(release.wait, 60))
            try:
                return await asyncio.wait_for(work(), within)
            finally:
                release.set()
                await blocked

    return asyncio.run(main())
