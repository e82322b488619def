"""Tool-call ids cut to the length a provider takes.

A conversation the router moved between providers carries the ids the earlier ones
wrote (or its client did), and each API caps them: Anthropic's at 64 characters
(`_anthropic_convert`), OpenAI's at 40 (a longer ``messages[].tool_calls[].id`` or
``tool_call_id`` is a 400 "string too long", on every later turn of the conversation).
An id is opaque to the model: it only has to match between a call and its result. So
an over-long one keeps its start and a hash of the whole id, a function of the id alone:
the call and its result get the same, on every turn, and two ids stay two.
"""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["CUT_DIGEST", "OPENAI_TOOL_ID_MAX", "cut_id", "openai_tool_ids"]

CUT_DIGEST = 16  # hex digits of the whole id's hash kept beside a cut one: 64 bits
OPENAI_TOOL_ID_MAX = 40  # OpenAI's (and Azure OpenAI's) longest tool call id


def cut_id(written: str, most: int, whole: str | None = None) -> str:
    """`written` cut to `most` characters: its start, ``_`` and `CUT_DIGEST` hex digits of
    the hash of `whole` (the id as the client sent it; `written` when None)."""
    digest = hashlib.sha256((written if whole is None else whole).encode()).hexdigest()
    return f"{written[: most - CUT_DIGEST - 1]}_{digest[:CUT_DIGEST]}"


def openai_tool_ids(body: dict[str, Any], most: int = OPENAI_TOOL_ID_MAX) -> dict[str, Any]:
    """`body` (a chat completions request) with each tool call id longer than `most`, in
    an assistant message's ``tool_calls`` and a tool message's ``tool_call_id``, cut
    (`cut_id`); `body` itself when none is. Never mutates `body`."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not any(_too_long(m, most) for m in messages):
        return body
    return {**body, "messages": [_cut(m, most) if _too_long(m, most) else m for m in messages]}


def _long(value: Any, most: int) -> bool:
    return isinstance(value, str) and len(value) > most


def _too_long(message: Any, most: int) -> bool:
    if not isinstance(message, dict):
        return False
    if _long(message.get("tool_call_id"), most):
        return True
    calls = message.get("tool_calls")
    return isinstance(calls, list) and any(
        isinstance(c, dict) and _long(c.get("id"), most) for c in calls
    )


def _cut(message: dict[str, Any], most: int) -> dict[str, Any]:
    cut = dict(message)
    said = message.get("tool_call_id")
    if isinstance(said, str) and len(said) > most:
        cut["tool_call_id"] = cut_id(said, most)
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        cut["tool_calls"] = [
            {**c, "id": cut_id(c["id"], most)}
            if isinstance(c, dict) and _long(c.get("id"), most)
            else c
            for c in calls
        ]
    return cut
