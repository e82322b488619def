"""`joined`: a large join made in a worker thread, the event loop running meanwhile."""

from __future__ import annotations

import contextvars
import threading

from loop_ticks import ticks_while, while_default_executor_blocked

from llmroute.joined_bytes import JOINED_OFF_LOOP_BYTES, joined, off_loop


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
    large = b"x" * JOINED_OFF_LOOP_BYTES
    assert while_default_executor_blocked(lambda: joined([large, b"}"])) == large + b"}"


_CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="none")


def test_other_work_runs_in_the_joins_threads_in_the_callers_context() -> None:
    def where(suffix: str, *, sep: str) -> str:
        return threading.current_thread().name + sep + _CALLER.get() + suffix

    async def work() -> str:
        _CALLER.set("request")
        return await off_loop(where, "!", sep=" ")

    done = while_default_executor_blocked(work)
    assert done.startswith("llmroute-join") and done.endswith(" request!")
