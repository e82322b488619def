"""A chat-completions stream event as it travels inside the gateway: one line,
``data: <JSON>\n\n`` (or ``data: [DONE]\n\n``). Providers make every upstream's events
so (`llmroute.providers._http.plain_event`); what reads or writes one inside does it
here, so that there is one parser, not one per consumer."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from llmroute.untrusted_json import loads

__all__ = ["DONE", "choice_zero", "chunk_of", "event_of", "parsed"]

DONE = b"data: [DONE]\n\n"

# The last event a provider parsed (or, translating another API's stream, wrote), and its
# object, for the next `chunk_of` of that same event (the stream's meter, right after):
# every upstream event was parsed twice, about 7 % of a stream's CPU in the gateway. One
# slot, set and taken as one reference (a tuple), so threads (the SDK's loop, the
# gateway's) at worst miss it and parse.
_parsed: tuple[bytes, dict[str, Any]] | None = None


def parsed(event: bytes, chunk: dict[str, Any]) -> None:
    """Say that `event` carries `chunk`, just parsed from it or written from it (a chunk
    no one else holds): the next `chunk_of(event)` takes it instead of parsing again
    (once: the taker may change it)."""
    global _parsed
    _parsed = (event, chunk)


def chunk_of(event: bytes) -> dict[str, Any] | None:
    """The JSON object an event carries; None for ``[DONE]``, comments and anything that
    is not an object."""
    global _parsed
    if not event.startswith(b"data: {"):
        return None
    last = _parsed
    if last is not None and last[0] is event:
        _parsed = None
        return last[1]
    try:
        chunk = loads(event[6:])
    except (ValueError, UnicodeDecodeError):
        return None
    return chunk if isinstance(chunk, dict) else None


def choice_zero(chunk: Any) -> Mapping[str, Any] | None:
    """A chunk's choice 0, found by its ``index``, not its place: of several choices
    (``n``), each chunk may carry any of them. None for a chunk without it (another
    choice's, a usage chunk) and for anything that is not a chunk."""
    choices = chunk.get("choices") if isinstance(chunk, Mapping) else None
    for choice in choices if isinstance(choices, list) else ():
        if isinstance(choice, Mapping) and choice.get("index", 0) == 0:
            return choice
    return None


def event_of(chunk: Mapping[str, Any]) -> bytes:
    """`chunk` as one event, compact, non-ASCII kept as it is."""
    text = json.dumps(chunk, separators=(",", ":"), ensure_ascii=False)
    return b"data: " + text.encode() + b"\n\n"
