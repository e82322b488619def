"""Anthropic-style ``cache_control`` prompt-cache markers, removed from a chat body for
servers that refuse fields they do not know (OpenAI's own API validates content parts).

They reach a chat body from ``POST /v1/messages`` or from a client that sets them; an
Anthropic provider turns them into cache breakpoints, an OpenAI-protocol provider sends
them on only with ``cache_control: send`` (OpenRouter honours them there).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["has_cache_markers", "without_cache_markers"]

_KEY = "cache_control"


def _marked(item: Any) -> bool:
    return isinstance(item, Mapping) and _KEY in item


def has_cache_markers(body: Mapping[str, Any]) -> bool:
    """Whether a message, a content part or a tool carries a marker."""
    messages, tools = body.get("messages"), body.get("tools")
    for message in messages if isinstance(messages, list) else ():
        if _marked(message):
            return True
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, list) and any(_marked(part) for part in content):
            return True
    return isinstance(tools, list) and any(_marked(tool) for tool in tools)


def _unmarked(item: Any) -> Any:
    if not _marked(item):
        return item
    return {k: v for k, v in item.items() if k != _KEY}


def _message(message: Any) -> Any:
    message = _unmarked(message)
    content = message.get("content") if isinstance(message, Mapping) else None
    if isinstance(content, list) and any(_marked(part) for part in content):
        return {**message, "content": [_unmarked(part) for part in content]}
    return message


def without_cache_markers(body: dict[str, Any]) -> dict[str, Any]:
    """`body` without markers; `body` itself when it has none (the common case costs one
    scan). Never mutates `body`."""
    if not has_cache_markers(body):
        return body
    out = dict(body)
    if isinstance(body.get("messages"), list):
        out["messages"] = [_message(m) for m in body["messages"]]
    if isinstance(body.get("tools"), list):
        out["tools"] = [_unmarked(tool) for tool in body["tools"]]
    return out
