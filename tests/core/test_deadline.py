"""`Deadline`: the arithmetic the gateway's shutdown steps share one deadline by."""

from __future__ import annotations

import math
import time

import pytest

from llmroute.deadline import NEVER, Deadline


def test_a_step_takes_its_own_bound_or_what_is_left_whichever_is_less() -> None:
    far = Deadline(time.monotonic() + 3600)
    assert far.bounded(5.0) == 5.0
    passed = Deadline(time.monotonic() - 1)
    assert passed.left() == 0.0 and passed.bounded(5.0) == 0.0  # never negative
    assert passed.timeout() == 0.0
    assert 3500 < far.bounded(math.inf) <= 3600


def test_earlier_keeps_time_for_the_steps_after() -> None:
    closing = Deadline(1000.0)
    settles_by = closing.earlier(2.0)
    assert settles_by.at == 998.0 and settles_by.earlier(2.0).at == 996.0
    assert closing.at == 1000.0  # a value: the first is unchanged
    now = time.monotonic()
    soon = Deadline(now + 1.0)
    assert soon.earlier(2.0).bounded(5.0) == 0.0  # what it keeps is more than is left


def test_never_gives_each_step_its_own_bound() -> None:
    assert NEVER.left() == math.inf and NEVER.earlier(2.0).left() == math.inf
    assert NEVER.bounded(5.0) == 5.0
    assert NEVER.timeout() is None  # asyncio.wait's "no limit"


@pytest.mark.parametrize("seconds", [0.0, 9.0])
def test_within_is_that_many_seconds_from_now(seconds: float) -> None:
    before = time.monotonic()
    deadline = Deadline.within(seconds)
    assert before + seconds <= deadline.at <= time.monotonic() + seconds
