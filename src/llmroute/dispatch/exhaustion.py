"""The status of a request no model answered: one rule for a chain exhausted
(`Dispatcher`'s `_exhausted`), for a held stream whose own model failed and then every
model after it (`_every_failed`), and for a cascade whose every tier failed, so that
the three cannot drift apart. The failures are those of the models tried (`counted`);
each model's last."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from llmroute.errors import (
    AllFallbacksFailed,
    BeyondModel,
    CircuitOpen,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    UnsupportedRequest,
)

__all__ = ["counted", "flattened", "status_of", "unavailable"]


def counted(failures: Iterable[ProviderError]) -> list[ProviderError]:
    """The failures an exhausted chain's status is decided from: those of the models
    tried, not of those skipped for what the request holds (nothing was sent)."""
    return [e for e in failures if not isinstance(e, UnsupportedRequest | BeyondModel)]


def flattened(failures: Iterable[ProviderError]) -> list[ProviderError]:
    """`failures` with each `AllFallbacksFailed` (a cascade tier's chain) in place of the
    failures its status was decided from, when it carries them."""
    flat: list[ProviderError] = []
    for failure in failures:
        inner = failure.errors if isinstance(failure, AllFallbacksFailed) else ()
        flat.extend(inner or (failure,))
    return flat


def status_of(errors: Sequence[ProviderError]) -> tuple[int, float | None]:
    """The status of a chain whose every model tried failed with `errors`, and its
    ``Retry-After``: 504 when every one timed out, 429 when every one was rate limited
    upstream (an OpenAI client's and LiteLLM's rate-limit error: a wait, not an
    outage), 503 when every one was unavailable (`unavailable`), else 502; with 429
    and 503, the soonest wait when each failure said one (when the first could
    answer)."""
    if all(isinstance(e, ProviderTimeout) for e in errors):
        status = 504
    elif all(isinstance(e, RateLimited) for e in errors):
        status = 429
    elif all(unavailable(e) for e in errors):
        status = 503
    else:
        return 502, None
    waits = [e.retry_after_s for e in errors if e.retry_after_s is not None]
    if status in (429, 503) and waits and len(waits) == len(errors):
        return status, min(waits)
    return status, None


def unavailable(error: ProviderError) -> bool:
    """Whether `error` says its model cannot answer for now: its breaker open or its
    limits reached (nothing sent), rate limited upstream, or an upstream's 503 with a
    ``Retry-After`` (its word on when to come back; one longer than
    ``max_retry_after_s`` the gateway did not wait out). A chain of them all is the
    client's 503 with the soonest wait, which its client waits out, not a 502 that
    says not to retry (a 503 without a wait stays a failure like a 500)."""
    if isinstance(error, CircuitOpen | RateLimited):
        return True
    return error.status == 503 and error.retry_after_s is not None
