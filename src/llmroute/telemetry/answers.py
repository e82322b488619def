"""The text of an answer as the decision log keeps it (`telemetry.responses`)."""

from __future__ import annotations

from llmroute.state.response_cache import CachedAnswer
from llmroute.telemetry.shadow import answer_text
from llmroute.untrusted_json import loads

__all__ = ["answer_text", "cached_text"]


def cached_text(answer: CachedAnswer) -> str | None:
    """A stored answer's text (a stored stream's is not kept: None)."""
    if answer.stream:
        return None
    try:
        data = loads(answer.payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return answer_text(data) if isinstance(data, dict) else None
