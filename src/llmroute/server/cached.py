"""``x-llmroute-cache``: whether the answer came from the response cache (``hit``, with
``age`` in seconds, and ``x-llmroute-cache-similarity`` when the semantic lookup found
it), from upstream after a lookup (``miss``), or from upstream because the client's
``Cache-Control`` asked not to read the cache (``bypass``)."""

from __future__ import annotations

import time

from llmroute.state import CachedAnswer, CacheLookup

__all__ = ["cache_headers", "hit_headers"]


def cache_headers(lookup: CacheLookup | None) -> dict[str, str]:
    """For an answer that came from upstream; none when the request is not cached."""
    if lookup is None:
        return {}
    return {"x-llmroute-cache": "miss" if lookup.directives.lookup else "bypass"}


def hit_headers(answer: CachedAnswer, similarity: float | None = None) -> dict[str, str]:
    """A hit's headers; a semantic hit also says how similar the stored request was
    (``x-llmroute-cache-similarity``, cosine, 4 decimals)."""
    headers = {"x-llmroute-cache": "hit", "age": str(int(answer.age_s(time.time())))}
    if similarity is not None:
        headers["x-llmroute-cache-similarity"] = f"{similarity:.4f}"
    return headers
