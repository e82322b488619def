"""The text of an answer as the decision log keeps it (`telemetry.responses`)."""

from __future__ import annotations

from llmroute.state.response_cache import CachedAnswer
from llmroute.telemetry.shadow import StreamedAnswer, answer_text
from llmroute.untrusted_json import loads

__all__ = ["StreamedAnswer", "answer_text", "cached_text"]


def cached_text(answer: CachedAnswer) -> str | None:
    """A stored answer's text: a whole answer's (`answer_text`), or a stored stream's
    read as the relayed stream was (`StreamedAnswer`; one event a line)."""
    if answer.stream:
        streamed = StreamedAnswer()
        for line in answer.payload.splitlines():
            streamed.observe(line)
        return streamed.text()
    try:
        data = loads(answer.payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return answer_text(data) if isinstance(data, dict) else None
