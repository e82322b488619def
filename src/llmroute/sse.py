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
    "CallNumbers",
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


class CallNumbers:
    """Which call of a stream's choice a tool-call piece belongs to: the one rule of the
    fronts (`llmroute.server.chunk_translation.ChunkTranslator`), the decision log's and
    the shadow judge's reader (`llmroute.telemetry.shadow.StreamedAnswer`) and the
    cascade's gates (a buffered tier's assembler), so that what is logged and gated is
    what the client was sent.

    A piece's ``index`` is its call's number when it is an int and not negative (a bool,
    a float, a string, a negative int are no index); an id it carries is then that
    call's, unless the call has one already (its first names it: an upstream giving each
    piece an id of its own made every one kept, 5 MB of a 6.5 MB stream). A piece
    without an index (Gemini's OpenAI-compatible endpoint streams each of parallel calls
    whole, with its id and none) is the call its id was given, a new id the next call
    after the highest numbered, and neither the highest (0 before any). A negative index
    was read as call 0 by the fronts, merging its call's arguments into call 0's, and as
    a call before call 0 by the decision log."""

    __slots__ = ("_ids", "_kept", "_named", "_top")

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}  # each id, the number its call was given
        self._named: set[int] = set()  # the numbers of the calls an id names
        self._top: int | None = None  # the highest number an id was given
        self._kept: int | None = None  # ids of calls numbered past it are not kept

    def number(self, index: Any, call_id: Any) -> int:
        """The number of the call a piece with this ``index`` and ``id`` belongs to."""
        call_id = call_id if isinstance(call_id, str) and call_id else None
        if type(index) is int and index >= 0:
            if call_id is not None and call_id not in self._ids:
                self._top = index if self._top is None else max(self._top, index)
                self._keep(call_id, index)
            return index
        if call_id is None:
            return 0 if self._top is None else self._top
        number = self._ids.get(call_id)
        if number is None:
            number = self._top = 0 if self._top is None else self._top + 1
            self._keep(call_id, number)
        return number

    def keep_to(self, most: int) -> None:
        """Keep no id of a call numbered past `most` (a reader that holds no such call);
        what such an id's pieces are numbered is then past `most` too, unless it comes
        again with the index of a call within `most` (one id given to two calls), which
        is then taken for a new id of that call."""
        self._kept = most if self._kept is None else min(most, self._kept)
        self._ids = {i: n for i, n in self._ids.items() if n <= self._kept}
        self._named = set(self._ids.values())

    def _keep(self, call_id: str, number: int) -> None:
        if (self._kept is None or number <= self._kept) and number not in self._named:
            self._ids[call_id] = number
            self._named.add(number)


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
