"""A chat-completions stream event as it travels inside the gateway: one line,
``data: <JSON>\n\n`` (or ``data: [DONE]\n\n``). Providers make every upstream's events
so (`llmroute.providers._http.plain_event`); what reads or writes one inside does it
here, so that there is one parser, not one per consumer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from llmroute.untrusted_json import loads

__all__ = [
    "DONE",
    "END_DRAIN_BYTES",
    "END_DRAIN_S",
    "choice_zero",
    "chunk_of",
    "drain_after_end",
    "event_of",
    "parsed",
]

DONE = b"data: [DONE]\n\n"

# How long, and how far, a stream is read on after its end event for its body's end
END_DRAIN_S = 0.5
END_DRAIN_BYTES = 64 * 1024

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
    choice's, a usage chunk) and for anything that is not a chunk. An index that is not
    an int (``false``, ``0.0``, ``null``) is no choice 0: the fronts leave such a choice
    out of the client's answer (`llmroute.server.chunk_translation`), and so does this."""
    choices = chunk.get("choices") if isinstance(chunk, Mapping) else None
    for choice in choices if isinstance(choices, list) else ():
        if isinstance(choice, Mapping):
            index = choice.get("index", 0)
            if type(index) is int and index == 0:
                return choice
    return None


def event_of(chunk: Mapping[str, Any]) -> bytes:
    """`chunk` as one event, compact, non-ASCII kept as it is."""
    text = json.dumps(chunk, separators=(",", ":"), ensure_ascii=False)
    return b"data: " + text.encode() + b"\n\n"


async def drain_after_end(rest: AsyncIterator[bytes]) -> None:
    """Read what comes after a stream's end event (``[DONE]``, ``message_stop``) to the
    body's end, dropping it: a response closed before its body ended loses its
    connection (the next call to the upstream pays a new TCP and TLS handshake), one
    read to its end goes back to the pool. An upstream that does not end its body
    within `END_DRAIN_S`, or sends more than `END_DRAIN_BYTES` (a proxy that keeps the
    response open) is left there, its connection dropped when the caller closes it, so
    the stream's end does not wait on it until the read times out. A break meanwhile
    (the connection cut, an unreadable event) raises, as it did before the end."""
    read = 0
    deadline = asyncio.timeout(END_DRAIN_S)
    try:
        async with deadline:
            async for event in rest:
                read += len(event)
                if read > END_DRAIN_BYTES:
                    return
    except TimeoutError:
        if not deadline.expired():  # the stream's own, not the drain's
            raise
