"""The texts of a request that the safety layer scans, and the body with some replaced.

A chat body is a list of messages whose content is a string or a list of parts; the
detectors see each text once, tagged with its role and position, so that a redaction can
be written back to exactly that place without touching anything else in the body.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmroute.request import RouteRequest

__all__ = ["Segment", "new_turn", "replace_texts", "segments_of"]

# OpenAI's legacy "function" results and "developer" instructions count as their modern
# equivalents for the `scan` setting.
_ROLE_ALIASES = {"function": "tool", "developer": "system"}


@dataclass(frozen=True, slots=True)
class Segment:
    """One text of the request: message `message` (part `part`, or None for a string
    content), with the role it was sent under. A plain-string request is message -1."""

    message: int
    part: int | None
    role: str
    text: str


def segments_of(request: RouteRequest) -> list[Segment]:
    """Every non-empty text of the request, in order."""
    body = request.body
    messages = None if body is None else body.get("messages")
    if not isinstance(messages, Sequence) or isinstance(messages, str | bytes):
        return [Segment(-1, None, "user", request.text)] if request.text else []
    found: list[Segment] = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            continue
        raw_role = message.get("role")
        role = _ROLE_ALIASES.get(str(raw_role), str(raw_role))
        content = message.get("content")
        if isinstance(content, str):
            if content:
                found.append(Segment(index, None, role, content))
        elif isinstance(content, Sequence):
            for part_index, part in enumerate(content):
                if isinstance(part, Mapping) and isinstance(text := part.get("text"), str) and text:
                    found.append(Segment(index, part_index, role, text))
    return found


def new_turn(segments: Sequence[Segment]) -> list[Segment]:
    """The segments after the last assistant message: what this request adds to the
    conversation (the user's new turn, tool results). Earlier turns were scanned when
    they were new."""
    last_assistant = max(
        (s.message for s in segments if s.role == "assistant"),
        default=-2,
    )
    return [s for s in segments if s.message > last_assistant and s.role != "assistant"]


def replace_texts(
    body: Mapping[str, Any], replacements: Mapping[tuple[int, int | None], str]
) -> dict[str, Any]:
    """A copy of `body` with the texts at (message, part) replaced; the caller's body and
    its messages are left untouched (they may be logged or retried as sent)."""
    messages = list(body["messages"])
    for (index, part), text in replacements.items():
        message = dict(messages[index])
        if part is None:
            message["content"] = text
        else:
            parts = list(message["content"])
            parts[part] = {**parts[part], "text": text}
            message["content"] = parts
        messages[index] = message
    return {**body, "messages": messages}
