"""`joined`: a large join made in a worker thread, the event loop running meanwhile."""

from __future__ import annotations

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
