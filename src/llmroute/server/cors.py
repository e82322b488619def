"""``--cors-origin``: which browser origins may call the gateway, and what their pages'
scripts may read of an answer."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

__all__ = ["cors_middleware"]

# What a browser script may read of an answer: the decision, the request id, the limits.
_EXPOSED = (
    "x-llmroute-decision-id",
    "x-llmroute-route",
    "x-llmroute-model",
    "x-llmroute-confidence",
    "x-llmroute-layer",
    "x-llmroute-deployment",
    "x-llmroute-attempts",
    "x-llmroute-cache",
    "x-llmroute-cache-similarity",
    "x-llmroute-cascade",
    "age",
    "x-request-id",
    "request-id",
    "retry-after",
    "retry-after-ms",
    "x-should-retry",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)


def cors_middleware(origins: Sequence[str]) -> list[Middleware]:
    """CORS for `origins`, to go outermost, so a browser's preflight is answered before
    the key check (a preflight carries no key); none without origins."""
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["*"],
            expose_headers=list(_EXPOSED),
            max_age=600,
        )
    ]
