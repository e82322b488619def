"""`joined`: a large join made in a worker thread, the event loop running meanwhile."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from loop_ticks import ticks_while

from llmroute.joined_bytes import JOINED_OFF_LOOP_BYTES, joined


def test_a_large_join_lets_the_event_loop_run() -> None:
    large = b"x" * JOINED_OFF_LOOP_BYTES
    done, ticks = ticks_while(lambda: joined([b"{", large, b"}"]))
    assert done == b"{" + large + b"}"
    assert ticks > 1  # (the task beside it takes one turn before the work starts)


def test_a_small_join_is_made_at_once() -> None:
    done, ticks = ticks_while(lambda: joined([b"a", b"b" * 1000, b"c"]))
    assert done == b"a" + b"b" * 1000 + b"c"
    assert ticks == 1
    assert ticks_while(lambda: joined([]))[0] == b""


def test_a_join_does_not_wait_behind_the_default_executors_blocking_calls() -> None:
    """The loop's default executor runs blocking calls (a remote encoder's round trip for
    each decision, up to its 10 s timeout): a 43 MB answer's join, 48 ms alone, waited
    2 s behind six such calls of 2 s."""
    release = threading.Event()
    large = b"x" * JOINED_OFF_LOOP_BYTES

    async def main() -> bytes:
        with ThreadPoolExecutor(max_workers=1) as busy:
            asyncio.get_running_loop().set_default_executor(busy)
            blocked = asyncio.ensure_future(asyncio.to_thread(release.wait, 60))
            try:
                return await asyncio.wait_for(joined([large, b"}"]), 10)
            finally:
                release.set()
                await blocked

    assert asyncio.run(main()) == large + b"}"
