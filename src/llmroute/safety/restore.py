"""Placeholders in an answer swapped back for the values they stand for (a safety
profile's ``restore: true``; docs/safety.md).

Redaction keeps PII from the provider, but the model then answers in placeholders: "I
have written to <EMAIL_1>". The client sent those values, so it may have them back: the
gateway replaces each placeholder this request's redaction issued by its value in the
answer (text, refusals and tool-call arguments), after the cache, the decision log and
the shadow judge saw the answer as the provider wrote it. A placeholder the request did
not issue (one the model made up) is left as it is.

A stream's placeholder may arrive in pieces (``<EMA`` then ``IL_1>``): what could be the
start of one is held back until the next piece of the same choice says, and sent at the
latest with the choice's finish reason or the stream's end.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from llmroute.untrusted_json import loads

__all__ = ["StreamRestorer", "restore_completion", "restore_text"]

_PLACEHOLDER = re.compile(r"<[A-Z][A-Z_]*_\d+>")
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

    return _PLACEHOLDER.sub(value, text)


def restore_completion(data: Any, values: Mapping[str, str]) -> Any:
    """A chat completion with its choices' content, refusal and tool-call arguments
    restored, in place; anything not shaped like one is returned as it is."""
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
    for key in ("content", "refusal"):
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


class StreamRestorer:
    """Restores a chat-completions SSE stream event by event (`feed`, then `close`),
    holding back a possible placeholder's start per choice and tool call. Events it
    cannot read pass through unchanged."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values
        self._buffer = b""  # the start of an event whose end has not come yet
        self._held: dict[tuple[int, str, int], str] = {}  # (choice, field, call) -> text
        self._last: dict[str, Any] | None = None  # the last chunk, for a closing one

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The restored events of `data`, a piece of the stream (whole events or not)."""
        self._buffer += data
        *events, self._buffer = self._buffer.split(b"\n\n")
        for event in events:
            yield from self._event(event)

    def close(self) -> Iterator[bytes]:
        """The end: a last chunk with whatever is still held (a stream that ended on
        ``<EMA``), then the rest of an event that never ended, as it came."""
        yield from self._release()
        if self._buffer:
            rest, self._buffer = self._buffer, b""
            yield rest

    def _event(self, event: bytes) -> Iterator[bytes]:
        lines = event.split(b"\n")
        for i, line in enumerate(lines):
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                yield from self._release()
                continue
            try:
                chunk = loads(data)
            except ValueError:
                continue
            if isinstance(chunk, dict):
                self._chunk(chunk)
                lines[i] = b"data: " + json.dumps(chunk, ensure_ascii=False).encode()
        yield b"\n".join(lines) + b"\n\n"

    def _release(self) -> Iterator[bytes]:
        """A chunk with every held text, restored as it is (no more pieces will come)."""
        if not self._held or self._last is None:
            self._held.clear()
            return
        choices: dict[int, dict[str, Any]] = {}
        for (index, field, call), text in sorted(self._held.items()):
            delta = choices.setdefault(index, {"index": index, "delta": {}})["delta"]
            restored = restore_text(text, self._values, in_json=field == "arguments")
            if field == "arguments":
                calls = delta.setdefault("tool_calls", [])
                calls.append({"index": call, "function": {"arguments": restored}})
            else:
                delta[field] = restored
        self._held.clear()
        chunk: dict[str, Any] = {
            k: self._last[k] for k in ("id", "object", "created", "model") if k in self._last
        }
        chunk["choices"] = list(choices.values())
        yield b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"

    def _chunk(self, chunk: dict[str, Any]) -> None:
        self._last = chunk
        choices = chunk.get("choices")
        for position, choice in enumerate(choices if isinstance(choices, list) else ()):
            if not isinstance(choice, dict) or not isinstance(choice.get("delta"), dict):
                continue
            index = choice["index"] if isinstance(choice.get("index"), int) else position
            final = choice.get("finish_reason") is not None
            delta = choice["delta"]
            for field in ("content", "refusal"):
                if isinstance(delta.get(field), str) or (final and (index, field, 0) in self._held):
                    delta[field] = self._pass((index, field, 0), delta.get(field) or "", final)
            calls = delta.get("tool_calls")
            for slot, call in enumerate(calls if isinstance(calls, list) else ()):
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    number = call["index"] if isinstance(call.get("index"), int) else slot
                    key = (index, "arguments", number)
                    function["arguments"] = self._pass(key, function["arguments"], final)
            if final:  # arguments still held for a call this chunk did not carry
                self._flush_calls(index, delta)

    def _pass(self, key: tuple[int, str, int], text: str, final: bool) -> str:
        """What of `text` (after what was held for `key`) may go out now, restored."""
        text = self._held.pop(key, "") + text
        if not final:
            tail = _OPEN_TAIL.search(text)
            if tail is not None and len(text) - tail.start() <= _MAX_PLACEHOLDER:
                self._held[key] = text[tail.start() :]
                text = text[: tail.start()]
        return restore_text(text, self._values, in_json=key[1] == "arguments")

    def _flush_calls(self, index: int, delta: dict[str, Any]) -> None:
        held = sorted(k for k in self._held if k[0] == index and k[1] == "arguments")
        if not held:
            return
        calls = delta.setdefault("tool_calls", [])
        for key in held:
            text = restore_text(self._held.pop(key), self._values, in_json=True)
            calls.append({"index": key[2], "function": {"arguments": text}})
