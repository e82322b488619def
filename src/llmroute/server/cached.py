"""``x-llmroute-cache``: whether the answer came from the response cache (``hit``, with
``age`` in seconds), from upstream after a lookup (``miss``), or from upstream because
the client's ``Cache-Control`` asked not to read the cache (``bypass``)."""

from __future__ import annotations

import time

from llmroute.state import CachedAnswer, CacheLookup

__all__ = ["cache_headers", "hit_headers"]


def cache_headers(lookup: CacheLookup | None) -> dict[str, str]:
    """For an answer that came from upstream; none when the request is not cached."""
    if lookup is None:
        return {}
    return {"x-llmroute-cache": "miss" if lookup.directives.lookup else "bypass"}


def hit_headers(answer: CachedAnswer) -> dict[str, str]:
    return {"x-llmroute-cache": "hit", "age": str(int(answer.age_s(time.time())))}
