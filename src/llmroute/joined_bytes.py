"""`joined`: pieces of bytes made one without copying a large answer on the event loop.

A 43 MB answer joined to its batch line, then to the part of the output file it is
written in, held the event loop 20-40 ms a copy. ``bytes.join`` lets go of the GIL while
it copies a megabyte or more, so in a worker thread the loop runs meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

__all__ = ["JOINED_OFF_LOOP_BYTES", "joined"]

JOINED_OFF_LOOP_BYTES = 1 << 20  # a smaller join costs less than a thread's hand-off

# Threads of their own: in the loop's default executor a join (tens of milliseconds)
# waited behind the blocking calls made there (a remote encoder's round trip for each
# decision, up to its timeout), a large answer held up for seconds.
_JOINS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="llmroute-join")


async def joined(pieces: Sequence[bytes]) -> bytes:
    """``b"".join(pieces)``, in a worker thread when it comes to `JOINED_OFF_LOOP_BYTES`
    or more."""
    if sum(map(len, pieces)) < JOINED_OFF_LOOP_BYTES:
        return b"".join(pieces)
    return await asyncio.get_running_loop().run_in_executor(_JOINS, b"".join, pieces)
