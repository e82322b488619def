"""When a stream has begun: not at its first event, which often says nothing yet.

OpenAI-style servers open a stream with a chunk that holds only the assistant's role
(Azure OpenAI with one whose choices are empty, carrying its prompt filter's results);
Anthropic's ``message_start`` becomes such a chunk; OpenRouter sends keep-alive comments.
An upstream that fails right after (Anthropic's ``overloaded_error`` event, an error
event in place of the first words) has then given the client nothing it could use, so
the request may still go to its fallback. `read_preamble` reads on past such events
before dispatch hands the stream over; the events it read are sent on as they came.

It waits for the first words at most `PREAMBLE_S` (registry ``dispatch.stream_hold_s``):
a reasoning model opens with its role and then thinks for minutes, and a client (or a
proxy between) that hears nothing for that long, not even the status line, gives up.
After that the stream is handed over as it is (the gateway's keep-alive comments then
keep it open), the read in flight carried on, not cancelled. A stream with no event at
all by then (OpenAI's Chat Completions API sends nothing while a reasoning model thinks,
vLLM nothing during a long prefill) is handed over the same way, before its first event
(`first_within`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Any

from llmroute.untrusted_json import loads

__all__ = [
    "MAX_PREAMBLE",
    "PREAMBLE_S",
    "failed_unopened",
    "first_read",
    "first_within",
    "read_preamble",
    "says_nothing",
    "unopened",
]

MAX_PREAMBLE = 16  # events read past the first before a stream counts as begun anyway
PREAMBLE_S = 5.0  # seconds waited for the first words before it counts as begun anyway
# (the default of ``dispatch.stream_hold_s``)


def says_nothing(event: bytes) -> bool:
    """Whether a chat-completions event carries nothing for the client yet: comments,
    or chunks whose choices hold only a role and empty fields (or no choices and no
    usage). Anything unreadable counts as something."""
    for line in event.splitlines():
        if not line.startswith(b"data:"):
            continue
        try:
            data = loads(line[5:].strip())
        except (ValueError, UnicodeDecodeError):
            return False
        if not isinstance(data, dict) or data.get("usage") or data.get("error"):
            return False
        choices = data.get("choices")
        if not isinstance(choices, list) or not all(_empty(c) for c in choices):
            return False
    return True


def _empty(choice: Any) -> bool:
    if not isinstance(choice, Mapping) or choice.get("finish_reason") or choice.get("logprobs"):
        return False
    delta = choice.get("delta")
    return isinstance(delta, Mapping) and not any(v for k, v in delta.items() if k != "role")


async def first_within(
    reading: Coroutine[Any, Any, bytes], events: AsyncIterator[bytes], hold_s: float
) -> tuple[bytes | None, AsyncIterator[bytes]]:
    """The stream's first event (`reading`: the read of it, bounded by the first-token
    limit, raising its failures) if it comes within `hold_s`, and `events`, the rest.
    Else None and a stream that begins with that read, carried on (not cancelled) in a
    task, then `events`; closing it stops the read."""
    pending = asyncio.ensure_future(reading)
    try:
        done, _ = await asyncio.wait({pending}, timeout=hold_s)
    except BaseException:
        await _stop(pending)
        raise
    if not done:
        return None, _Prepended([], pending, events, first_read=pending)
    return pending.result(), events


def first_read(opened: object) -> asyncio.Future[Any] | None:
    """The read of the first event, still going on, of a stream handed over before it
    came (`first_within`), given what the stream's call returned (``(first, events)``);
    None for any other. The balancer times the call by it, not by the hand-over."""
    if isinstance(opened, tuple) and len(opened) == 2 and opened[0] is None:
        events = opened[1]
        if isinstance(events, _Prepended):
            return events.first_read
    return None


def unopened(events: AsyncIterator[bytes]) -> bool:
    """Whether `events`, a stream handed over before its first event (`first_within`),
    ended without one: its read failed or was cancelled. Its call's end, the breaker's
    count included, was told then (as a call failing within the hold is), not when the
    stream ends."""
    read = events.first_read if isinstance(events, _Prepended) else None
    return read is not None and read.done() and (read.cancelled() or read.exception() is not None)


def failed_unopened(events: AsyncIterator[bytes]) -> bool:
    """Whether `events` is `unopened` because its first read failed (not because its
    client left): a failed call, which like one failing within the hold is charged
    nothing (`llmroute.dispatch.spend`)."""
    read = events.first_read if isinstance(events, _Prepended) else None
    return read is not None and read.done() and not read.cancelled() and bool(read.exception())


async def read_preamble(
    first: bytes, events: AsyncIterator[bytes], within_s: float | None = None
) -> tuple[bytes, AsyncIterator[bytes]]:
    """`first` and the rest of the stream, read on past the events that say nothing yet
    (`says_nothing`, at most `MAX_PREAMBLE`, for at most `within_s`, `PREAMBLE_S` by
    default), so that an upstream failing before its first words raises here, while the
    call can still fall back. The events read are yielded again at the head of the
    stream returned, and a read still waiting when time ran out goes on there."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (PREAMBLE_S if within_s is None else within_s)
    held = [first]
    pending: asyncio.Task[bytes | None] | None = None
    try:
        while len(held) <= MAX_PREAMBLE and says_nothing(held[-1]):
            left = deadline - loop.time()
            if left <= 0:
                break
            pending = asyncio.create_task(_next(events))
            done, _ = await asyncio.wait({pending}, timeout=left)
            if not done:
                break  # still waiting: handed over with the stream
            event, pending = pending.result(), None
            if event is None:
                break
            held.append(event)
    except BaseException:
        await _stop(pending)
        raise
    if len(held) == 1 and pending is None:
        return first, events
    return first, _Prepended(held[1:], pending, events)


async def _next(events: AsyncIterator[bytes]) -> bytes | None:
    """The next event; None at the end (a task cannot end in StopAsyncIteration)."""
    try:
        return await anext(events)
    except StopAsyncIteration:
        return None


async def _stop(pending: asyncio.Task[bytes | None] | None) -> None:
    """Stop a read still waiting, and take its failure if it had one: a stream closed
    unread after its pending read failed (a silent model's first-token timeout while
    an SDK caller had not begun reading) would have asyncio log "Task exception was
    never retrieved" with a traceback. The stream's end is told by its closer."""
    if pending is None:
        return
    if not pending.done():
        pending.cancel()
        await asyncio.wait({pending})
    if not pending.cancelled():
        pending.exception()


class _Prepended:
    """The events read past the opening (`held`), then the read still waiting when the
    hold ran out (`pending`), then the rest of `events`. Closing it stops that read and
    closes `events`, whether it was read or not: a generator closed before its first
    read runs none of its cleanup, and the upstream connection (a reasoning model still
    thinking) would stay open until the waiting read ends and the collector finds it."""

    def __init__(
        self,
        held: list[bytes],
        pending: asyncio.Task[bytes | None] | None,
        events: AsyncIterator[bytes],
        *,
        first_read: asyncio.Future[bytes] | None = None,
    ) -> None:
        self.first_read = first_read  # the first event's read, when none had come
        self._held = deque(held)
        self._pending = pending
        self._events = events
        self._ended = False

    def __aiter__(self) -> _Prepended:
        return self

    async def __anext__(self) -> bytes:
        if self._held:
            return self._held.popleft()
        if self._ended:
            raise StopAsyncIteration
        if self._pending is not None:
            waited = await self._pending
            self._pending = None
            if waited is None:
                self._ended = True
                raise StopAsyncIteration
            return waited
        try:
            return await anext(self._events)
        except StopAsyncIteration:
            self._ended = True
            raise

    async def aclose(self) -> None:
        self._held.clear()
        self._ended = True
        pending, self._pending = self._pending, None
        try:
            await _stop(pending)
        finally:
            aclose = getattr(self._events, "aclose", None)
            if aclose is not None:
                await aclose()
