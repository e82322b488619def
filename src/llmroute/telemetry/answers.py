"""The text of an answer as the decision log keeps it (`telemetry.responses`)."""

from __future__ import annotations

from typing import Any

from llmroute.state.response_cache import CachedAnswer
from llmroute.telemetry.shadow import answer_text
from llmroute.untrusted_json import loads

__all__ = ["answer_text", "cached_text", "chunk_text", "delta_text"]


def chunk_text(chunk: Any) -> str:
    """The content of choice 0's delta in one parsed chunk (empty for anything else).
    Of several choices (``n``), each chunk says one of them, so the first in its list
    is not choice 0: the text kept is choice 0's, as `answer_text` keeps a whole
    answer's first choice, not every choice's words interleaved."""
    try:
        for choice in chunk["choices"]:
            if choice.get("index", 0) == 0:
                content = choice["delta"].get("content")
                return content if isinstance(content, str) else ""
    except (KeyError, TypeError, AttributeError):
        pass
    return ""


def delta_text(events: bytes) -> str:
    """Choice 0's content in the SSE chunks in `events` (one event, or a stored stream's
    whole payload; empty for anything else), as `chunk_text` reads each."""
    text: list[str] = []
    for line in events.splitlines():
        if not line.startswith(b"data:") or line.endswith(b"[DONE]"):
            continue
        try:
            chunk = loads(line[5:])
        except ValueError:
            continue
        text.append(chunk_text(chunk))
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
