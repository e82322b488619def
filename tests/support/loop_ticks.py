"""How many turns a task beside some work gets on the event loop while it runs: a step
that gives the loop back lets it run (a count, not a time: no timing in unit tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

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
