"""The text of an answer as the decision log keeps it (`telemetry.responses`)."""

from __future__ import annotations

from llmroute.state.response_cache import CachedAnswer
from llmroute.telemetry.shadow import answer_text
from llmroute.untrusted_json import loads

__all__ = ["answer_text", "cached_text", "delta_text"]


def delta_text(events: bytes) -> str:
    """The content of the first choice of the SSE chunks in `events` (one event, or a
    stored stream's whole payload; empty for anything else)."""
    text: list[str] = []
    for line in events.splitlines():
        if not line.startswith(b"data:") or line.endswith(b"[DONE]"):
            continue
        try:
            chunk = loads(line[5:])
            content = chunk["choices"][0]["delta"].get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            continue
        if isinstance(content, str):
            text.append(content)
    return "".join(text)


def cached_text(answer: CachedAnswer) -> str | None:
    """A stored answer's text: a whole answer's content, or a stored stream's deltas."""
    if answer.stream:
        return delta_text(answer.payload)
    try:
        data = loads(answer.payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return answer_text(data) if isinstance(data, dict) else None
