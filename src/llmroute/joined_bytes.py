"""`joined`: pieces of bytes made one without copying a large answer on the event loop;
`off_loop`: other work on a large answer (its parse) in the same worker threads.

A 43 MB answer joined to its batch line, then to the part of the output file it is
written in, held the event loop 20-40 ms a copy. ``bytes.join`` lets go of the GIL while
it copies a megabyte or more, so in a worker thread the loop runs meanwhile.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["JOINED_OFF_LOOP_BYTES", "joined", "off_loop"]

JOINED_OFF_LOOP_BYTES = 1 << 20  # a smaller join costs less than a thread's hand-off

# Threads of their own: in the loop's default executor a join (tens of milliseconds)
# waited behind the blocking calls made there (a remote encoder's round trip for each
# decision, up to its timeout), a large answer held up for seconds.
_JOINS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="llmroute-join")

P = ParamSpec("P")
T = TypeVar("T")


async def joined(pieces: Sequence[bytes]) -> bytes:
    """``b"".join(pieces)``, in a worker thread when it comes to `JOINED_OFF_LOOP_BYTES`
    or more."""
    if sum(map(len, pieces)) < JOINED_OFF_LOOP_BYTES:
        return b"".join(pieces)
    return await asyncio.get_running_loop().run_in_executor(_JOINS, b"".join, pieces)


async def off_loop(func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``func(*args, **kwargs)`` in the joins' worker threads, in a copy of the caller's
    context (as `asyncio.to_thread`): work on a large answer (a chat answer's logprobs
    parsed, ~0.4 s for 12 MB) that `asyncio.to_thread` queued behind the default
    executor's blocking calls, as a join did."""
    call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_JOINS, call)
