"""A chat-completions SSE stream edited field by field on its way to the client: the
machinery `llmroute.safety.restore.StreamRestorer` (placeholders swapped back) and
`llmroute.safety.answer_pii.StreamMask` (PII in answers redacted) share.

The stream may come in any pieces (events cut anywhere); each choice's text, refusal
and tool-call arguments are edited as they pass, and an edit may hold back the end of
what it has (a placeholder's or a PII span's start) until the next piece of the same
field says more, or until the choice's finish reason, ``[DONE]`` or the stream's end;
the model's reasoning (``reasoning_content``) at the latest when its answer starts.
Events it cannot read pass through as they came.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

from llmroute.untrusted_json import loads

__all__ = ["StreamEdit"]

Key = tuple[int, str, int]  # (choice index, field, tool call index): "arguments" or 0
# the model's thinking, which comes before its answer: what of it is held goes out when
# the answer starts, not after it with the finish reason
_REASONING = "reasoning_content"


class StreamEdit(ABC):
    """Edits a chat-completions SSE stream (`feed` each piece, then `close`)."""

    edits_arguments = True  # whether tool-call arguments are edited too
    fields: tuple[str, ...] = ("content", "refusal")  # the delta's texts edited
    dropped: tuple[str, ...] = ()  # delta fields left out (what cannot be edited)

    def __init__(self) -> None:
        self._buffer = b""  # the start of an event whose end has not come yet
        self._held: dict[Key, str] = {}  # what each field holds back
        self._last: dict[str, Any] | None = None  # the last chunk, for a closing one

    @abstractmethod
    def _split(self, text: str, key: Key, final: bool) -> tuple[str, str]:
        """`text` (what `key` held, then its new piece) as (edited text that may go out
        now, raw text to hold back); with `final` nothing may be held."""

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The edited events of `data`, a piece of the stream (whole events or not)."""
        self._buffer += data
        *events, self._buffer = self._buffer.split(b"\n\n")
        for event in events:
            yield from self._event(event)

    def close(self) -> Iterator[bytes]:
        """The end: a last chunk with whatever is still held, then the rest of an event
        that never ended, as it came."""
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
            if isinstance(chunk, dict) and "error" in chunk:
                # the stream's end (broken off, or a bug): what is held goes out first
                yield from self._release()
            elif isinstance(chunk, dict):
                self._chunk(chunk)
                lines[i] = b"data: " + json.dumps(chunk, ensure_ascii=False).encode()
        yield b"\n".join(lines) + b"\n\n"

    def _release(self) -> Iterator[bytes]:
        """A chunk with every held text, edited as it is (no more pieces will come)."""
        if not self._held or self._last is None:
            self._held.clear()
            return
        choices: dict[int, dict[str, Any]] = {}
        for key in sorted(self._held):
            index, field, call = key
            delta = choices.setdefault(index, {"index": index, "delta": {}})["delta"]
            text = self._pass(key, "", final=True)
            if field == "arguments":
                calls = delta.setdefault("tool_calls", [])
                calls.append({"index": call, "function": {"arguments": text}})
            else:
                delta[field] = text
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
            for field in self.dropped:
                delta.pop(field, None)
            answering = _answers(delta)
            for field in self.fields:
                ends = final or (answering and field == _REASONING)
                if isinstance(delta.get(field), str) or (ends and (index, field, 0) in self._held):
                    delta[field] = self._pass((index, field, 0), delta.get(field) or "", ends)
            if answering and delta.get(_REASONING):  # the thinking's end, then the answer
                choice["delta"] = delta = {_REASONING: delta.pop(_REASONING), **delta}
            if self.edits_arguments:
                self._calls(index, delta, final)

    def _calls(self, index: int, delta: dict[str, Any], final: bool) -> None:
        calls = delta.get("tool_calls")
        for slot, call in enumerate(calls if isinstance(calls, list) else ()):
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                number = call["index"] if isinstance(call.get("index"), int) else slot
                key = (index, "arguments", number)
                function["arguments"] = self._pass(key, function["arguments"], final)
        if not final:
            return
        held = sorted(k for k in self._held if k[0] == index and k[1] == "arguments")
        for key in held:  # arguments still held for a call this chunk did not carry
            text = self._pass(key, "", final=True)
            delta.setdefault("tool_calls", []).append(
                {"index": key[2], "function": {"arguments": text}}
            )

    def _pass(self, key: Key, text: str, final: bool) -> str:
        """What of `text` (after what `key` held) goes out now, edited."""
        out, hold = self._split(self._held.pop(key, "") + text, key, final)
        if hold:
            self._held[key] = hold
        return out


def _answers(delta: dict[str, Any]) -> bool:
    """Whether `delta` carries the answer itself: text, a refusal or tool calls."""
    return bool(
        (isinstance(delta.get("content"), str) and delta["content"])
        or (isinstance(delta.get("refusal"), str) and delta["refusal"])
        or (isinstance(delta.get("tool_calls"), list) and delta["tool_calls"])
    )
