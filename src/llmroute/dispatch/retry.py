"""How long to wait before retrying a model: exponential backoff with full jitter, or the
upstream's ``Retry-After`` when it sent one.

Full jitter (a uniform draw from zero to the exponential ceiling) spreads the retries of
many clients that failed together, so they do not hit a recovering upstream in lockstep.
"""

from __future__ import annotations

import random

from llmroute.registry.schema import RetrySettings

__all__ = ["RETRY_AFTER_JITTER", "backoff_ceiling", "backoff_delay"]

RETRY_AFTER_JITTER = 0.1  # at most this share of Retry-After is added, never subtracted
_MAX_EXPONENT = 1023  # 2.0**1024 overflows; far beyond any cap anyway


def backoff_delay(
    retry: int,
    settings: RetrySettings,
    rng: random.Random,
    retry_after_s: float | None = None,
) -> float | None:
    """Seconds to wait before retry number `retry` (0 = the first retry), or None when
    the upstream asked for a wait over ``max_retry_after_s``: the fallback is faster.

    A positive Retry-After is honoured (plus up to 10 % jitter, so clients told the same
    time do not return together); zero, negative or NaN tells nothing, so the ordinary
    backoff applies.
    """
    if retry < 0:
        raise ValueError(f"retry must be >= 0, got {retry}")
    if retry_after_s is not None and retry_after_s > 0:
        if retry_after_s > settings.max_retry_after_s:
            return None
        return retry_after_s + rng.uniform(0.0, RETRY_AFTER_JITTER * retry_after_s)
    return rng.uniform(0.0, backoff_ceiling(retry, settings))


def backoff_ceiling(retry: int, settings: RetrySettings) -> float:
    """The most `backoff_delay` may wait before retry `retry` without a Retry-After."""
    growth = settings.backoff_s * 2.0 ** min(retry, _MAX_EXPONENT)  # inf at worst, not an error
    return min(settings.max_backoff_s, growth)
