"""`LogEvery`: the first event of a kind is logged, then one a period, saying how many
were held back; kinds are apart."""

from __future__ import annotations

import pytest

from llmroute.log_every import LogEvery


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_first_then_one_a_period_with_the_count_held_back() -> None:
    clock = Clock()
    every = LogEvery(60.0, clock=clock)
    assert every.due("invalid_host") == 0  # the first: at once
    assert [every.due("invalid_host") for _ in range(5)] == [None] * 5
    assert every.due("cross_origin_forbidden") == 0  # another kind: its own first
    clock.now += 59.9
    assert every.due("invalid_host") is None
    clock.now += 0.1
    assert every.due("invalid_host") == 6  # a period on: logged, with what was held back
    assert every.due("invalid_host") is None
    clock.now += 600
    assert every.due("invalid_host") == 1
    assert every.due("cross_origin_forbidden") == 0


def test_since_says_the_count_only_when_some_were_held_back() -> None:
    assert LogEvery.since(0) == ""
    assert LogEvery.since(6) == " (6 more since the last)"


def test_the_period_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LogEvery(0)
