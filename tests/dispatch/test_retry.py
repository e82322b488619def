"""`backoff_delay`: full jitter under an exponential, capped ceiling; Retry-After honoured."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmroute.dispatch.retry import RETRY_AFTER_JITTER, backoff_ceiling, backoff_delay
from llmroute.registry.schema import RetrySettings

SETTINGS = RetrySettings(backoff_s=0.5, max_backoff_s=4.0, max_retry_after_s=10.0)


def _delays(retry: int, n: int = 2000, retry_after_s: float | None = None) -> list[float]:
    rng = random.Random(7)
    delays = [backoff_delay(retry, SETTINGS, rng, retry_after_s) for _ in range(n)]
    assert all(d is not None for d in delays)
    return [d for d in delays if d is not None]


def test_ceiling_doubles_then_caps() -> None:
    assert [backoff_ceiling(r, SETTINGS) for r in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]


@pytest.mark.parametrize("retry", [0, 1, 2, 3, 6])
def test_full_jitter_spans_zero_to_ceiling(retry: int) -> None:
    ceiling = min(4.0, 0.5 * 2**retry)
    delays = _delays(retry)
    assert all(0.0 <= d <= ceiling for d in delays)
    # Full jitter: the draws cover the whole range, not a band near the ceiling.
    assert min(delays) < 0.05 * ceiling
    assert max(delays) > 0.95 * ceiling
    assert sum(delays) / len(delays) == pytest.approx(ceiling / 2, rel=0.1)


def test_delays_grow_with_retry_number_until_the_cap() -> None:
    means = [sum(_delays(r)) / 2000 for r in range(6)]
    assert means[0] < means[1] < means[2] < means[3]
    assert means[4] == pytest.approx(means[3], rel=0.1)  # capped at max_backoff_s


def test_same_seed_same_delays() -> None:
    a = [backoff_delay(r, SETTINGS, random.Random(3)) for r in range(5)]
    b = [backoff_delay(r, SETTINGS, random.Random(3)) for r in range(5)]
    assert a == b


@pytest.mark.parametrize("retry", [1023, 1024, 5000, 10**9])
def test_huge_retry_numbers_do_not_overflow(retry: int) -> None:
    assert backoff_ceiling(retry, SETTINGS) == 4.0
    delay = backoff_delay(retry, SETTINGS, random.Random(0))
    assert delay is not None and 0.0 <= delay <= 4.0


def test_negative_retry_is_a_bug() -> None:
    with pytest.raises(ValueError, match="retry"):
        backoff_delay(-1, SETTINGS, random.Random(0))


def test_retry_after_is_waited_at_least_and_jittered_up_to_ten_percent() -> None:
    delays = _delays(0, retry_after_s=5.0)
    assert all(5.0 <= d <= 5.0 * (1 + RETRY_AFTER_JITTER) for d in delays)
    assert len(set(delays)) > 1  # clients told the same time do not come back together


def test_retry_after_overrides_a_shorter_or_longer_backoff() -> None:
    # Longer than the backoff cap, but within max_retry_after_s: still honoured.
    assert all(d >= 9.0 for d in _delays(0, n=50, retry_after_s=9.0))
    # Shorter than this retry's backoff ceiling: the upstream's word wins.
    assert all(d <= 0.11 for d in _delays(5, n=50, retry_after_s=0.1))


def test_retry_after_at_the_limit_is_honoured_and_over_it_gives_up() -> None:
    rng = random.Random(1)
    at_limit = backoff_delay(0, SETTINGS, rng, 10.0)
    assert at_limit is not None and at_limit >= 10.0
    assert backoff_delay(0, SETTINGS, rng, 10.01) is None
    assert backoff_delay(0, SETTINGS, rng, 3600.0) is None
    assert backoff_delay(0, SETTINGS, rng, math.inf) is None


@pytest.mark.parametrize("retry_after_s", [0.0, -1.0, math.nan])
def test_meaningless_retry_after_falls_back_to_backoff(retry_after_s: float) -> None:
    delays = _delays(2, n=200, retry_after_s=retry_after_s)
    assert all(0.0 <= d <= 2.0 for d in delays)
    assert max(delays) > 1.0


@given(
    retry=st.integers(min_value=0, max_value=2000),
    backoff_s=st.floats(min_value=1e-3, max_value=100.0),
    max_backoff_s=st.floats(min_value=1e-3, max_value=1000.0),
    retry_after_s=st.none() | st.floats(min_value=1e-3, max_value=100.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_delay_is_always_within_bounds(
    retry: int,
    backoff_s: float,
    max_backoff_s: float,
    retry_after_s: float | None,
    seed: int,
) -> None:
    settings = RetrySettings(backoff_s=backoff_s, max_backoff_s=max_backoff_s)
    delay = backoff_delay(retry, settings, random.Random(seed), retry_after_s)
    if retry_after_s is None:
        assert delay is not None
        assert 0.0 <= delay <= min(max_backoff_s, backoff_s * 2.0 ** min(retry, 1023))
    elif retry_after_s > settings.max_retry_after_s:
        assert delay is None
    else:
        assert delay is not None
        assert retry_after_s <= delay <= retry_after_s * (1 + RETRY_AFTER_JITTER)
