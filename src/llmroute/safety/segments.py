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

__all__ = ["Place", "Segment", "new_turn", "replace_texts", "segments_of"]

# OpenAI's legacy "function" results and "developer" instructions count as their modern
# equivalents for the `scan` setting.
_ROLE_ALIASES = {"function": "tool", "developer": "system"}


@dataclass(frozen=True, slots=True)
class Segment:
    """One text of the request: message `message` (part `part`, or None for a string
    content; with `call`, the arguments of that tool call of an assistant message), with
    the role it was sent under. A plain-string request is message -1."""

    message: int
    part: int | None
    role: str
    text: str
    call: int | None = None

    @property
    def place(self) -> tuple[int, int | None, int | None]:
        """Where the text is in the body, for `replace_texts`."""
        return self.message, self.part, self.call


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
        found.extend(_call_arguments(index, role, message.get("tool_calls")))
    return found


def _call_arguments(index: int, role: str, calls: object) -> list[Segment]:
    """The arguments of an assistant message's tool calls: what the model wrote into
    them (an address, a card number) goes back to it, and to the provider, on every later
    turn of an agent's conversation."""
    if not isinstance(calls, Sequence) or isinstance(calls, str | bytes):
        return []
    found = []
    for call_index, call in enumerate(calls):
        function = call.get("function") if isinstance(call, Mapping) else None
        arguments = function.get("arguments") if isinstance(function, Mapping) else None
        if isinstance(arguments, str) and arguments:
            found.append(Segment(index, None, role, arguments, call_index))
    return found


def new_turn(segments: Sequence[Segment], request: RouteRequest) -> list[Segment]:
    """The segments after the last assistant message: what this request adds to the
    conversation (the user's new turn, tool results). Earlier turns were scanned when
    they were new. The last assistant message is found among the messages, not the
    texts: one that only calls tools (no content) ends a turn too."""
    last_assistant = _last_assistant(request)
    return [s for s in segments if s.message > last_assistant and s.role != "assistant"]


def _last_assistant(request: RouteRequest) -> int:
    body = request.body
    messages = None if body is None else body.get("messages")
    if not isinstance(messages, Sequence) or isinstance(messages, str | bytes):
        return -2
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, Mapping) and message.get("role") == "assistant":
            return index
    return -2


Place = tuple[int, int | None, int | None]  # message, part, tool call (`Segment.place`)


def replace_texts(body: Mapping[str, Any], replacements: Mapping[Place, str]) -> dict[str, Any]:
    """A copy of `body` with the texts at each place replaced; the caller's body and its
    messages are left untouched (they may be logged or retried as sent)."""
    messages = list(body["messages"])
    for (index, part, call), text in replacements.items():
        message = dict(messages[index])
        if call is not None:
            calls = list(message["tool_calls"])
            function = {**calls[call]["function"], "arguments": text}
            calls[call] = {**calls[call], "function": function}
            message["tool_calls"] = calls
        elif part is None:
            message["content"] = text
        else:
            parts = list(message["content"])
            parts[part] = {**parts[part], "text": text}
            message["content"] = parts
        messages[index] = message
    return {**body, "messages": messages}
