"""A chat-completions stream event as it travels inside the gateway: one line,
``data: <JSON>\n\n`` (or ``data: [DONE]\n\n``). Providers make every upstream's events
so (`llmroute.providers._http.plain_event`); what reads or writes one inside does it
here, so that there is one parser, not one per consumer."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from llmroute.untrusted_json import loads

__all__ = ["DONE", "chunk_of", "event_of"]

DONE = b"data: [DONE]\n\n"


def chunk_of(event: bytes) -> dict[str, Any] | None:
    """The JSON object an event carries; None for ``[DONE]``, comments and anything that
    is not an object."""
    if not event.startswith(b"data: {"):
        return None
    try:
        chunk = loads(event[6:])
    except (ValueError, UnicodeDecodeError):
        return None
    return chunk if isinstance(chunk, dict) else None


def event_of(chunk: Mapping[str, Any]) -> bytes:
    """`chunk` as one event, compact, non-ASCII kept as it is."""
    text = json.dumps(chunk, separators=(",", ":"), ensure_ascii=False)
    return b"data: " + text.encode() + b"\n\n"
