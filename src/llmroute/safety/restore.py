"""Placeholders in an answer swapped back for the values they stand for (a safety
profile's ``restore: true``; docs/safety.md).

Redaction keeps PII from the provider, but the model then answers in placeholders: "I
have written to <EMAIL_1>". The client sent those values, so it may have them back: the
gateway replaces each placeholder this request's redaction issued by its value in the
answer (text, refusals, tool-call arguments and the model's ``reasoning_content``; not
Anthropic's signed ``thinking_blocks``, which go back to it as they came), after the
cache, the decision log and the shadow judge saw the answer as the provider wrote it. A
placeholder the request did not issue (one the model made up) is left as it is.

A stream's placeholder may arrive in pieces (``<EMA`` then ``IL_1>``): what could be the
start of one is held back until the next piece of the same choice says, and sent at the
latest with the choice's finish reason or the stream's end.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from llmroute.safety.pii import PLACEHOLDER
from llmroute.safety.stream_edit import Key, StreamEdit

__all__ = ["StreamRestorer", "restore_completion", "restore_text"]

# The end of a text that may be the start of a placeholder: "<", "<EMA", "<EMAIL_1".
_OPEN_TAIL = re.compile(r"<[A-Z_]*\d*$")
_MAX_PLACEHOLDER = 40  # characters; a longer "<…" tail is no placeholder of ours


def restore_text(text: str, values: Mapping[str, str], *, in_json: bool = False) -> str:
    """`text` with every placeholder of `values` replaced by its value; `in_json`: the
    text is JSON (tool-call arguments), so each value is escaped as a string's content."""
    if "<" not in text:
        return text

    def value(match: re.Match[str]) -> str:
        found = values.get(match.group(0))
        if found is None:
            return match.group(0)
        return json.dumps(found, ensure_ascii=False)[1:-1] if in_json else found

    return PLACEHOLDER.sub(value, text)


def restore_completion(data: Any, values: Mapping[str, str]) -> Any:
    """A chat completion with its choices' content, refusal, reasoning and tool-call
    arguments restored, in place; anything not shaped like one is returned as it is."""
    for message in _each(data, "message"):
        _restore_fields(message, values)
    return data


def _each(data: Any, key: str) -> Iterator[dict[str, Any]]:
    choices = data.get("choices") if isinstance(data, dict) else None
    for choice in choices if isinstance(choices, list) else ():
        inner = choice.get(key) if isinstance(choice, dict) else None
        if isinstance(inner, dict):
            yield inner


def _restore_fields(message: dict[str, Any], values: Mapping[str, str]) -> None:
    for key in StreamRestorer.fields:
        if isinstance(message.get(key), str):
            message[key] = restore_text(message[key], values)
    for function in _functions(message):
        if isinstance(function.get("arguments"), str):
            function["arguments"] = restore_text(function["arguments"], values, in_json=True)


def _functions(message: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            yield function


class StreamRestorer(StreamEdit):
    """Restores a chat-completions SSE stream, holding back a possible placeholder's
    start per choice and tool call."""

    fields = ("content", "refusal", "reasoning_content")

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__()
        self._values = values

    def _split(self, text: str, key: Key, final: bool) -> tuple[str, str]:
        hold = ""
        if not final:
            tail = _OPEN_TAIL.search(text)
            if tail is not None and len(text) - tail.start() <= _MAX_PLACEHOLDER:
                text, hold = text[: tail.start()], text[tail.start() :]
        return restore_text(text, self._values, in_json=key[1] == "arguments"), hold
