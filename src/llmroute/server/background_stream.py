"""The event stream of a background response made with ``stream: true``, kept as it is
made, so that a client can follow it and, after losing its connection, resume it
(``GET /v1/responses/{id}?stream=true&starting_after=N``, OpenAI's resumable streams).

The run that makes the response (`llmroute.server.background`) writes each Responses
event twice: to a `RunLog` in its own process, which a client of that process follows
as the events come, and, in batches every `FLUSH_S`, to the response store as numbered
chunks (`EventChunks`), which a client of any process sharing the store (Redis) follows
a batch behind, and which stay readable after the run until the response expires.
Events are numbered from 0 (their ``sequence_number``); a client resuming after N gets
those from N + 1 on. A follow ends with the response's last event (``completed``,
``incomplete`` or ``failed``), or, once the response is no longer running and no more
events come (cancelled, failed before its stream began, its process gone, its last
batch never written), with that event made from the kept response (``failed``,
``completed``, ``incomplete``), and nothing more where it was cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from llmroute.server.responses_stream import responses_event
from llmroute.state.stored_responses import RUNNING, ResponseStore, StoredResponse
from llmroute.state.stores import StoreUnavailable, asked

__all__ = ["FLUSH_S", "OUTAGE_S", "EventChunks", "RunLog", "follow", "kept_as_made"]

log = logging.getLogger("llmroute.server")
T = TypeVar("T")

FLUSH_S = 0.25  # how often a run writes its new events to the store
_POLL_S = 0.25  # how often a follower of another process looks for a new batch
_STATUS_S = 1.0  # how often it looks whether the response is still running
_READ_AHEAD = 8  # chunks asked for in one round trip
# How long a follower rides out a store that does not answer, from its first failed
# call; then a call asked of the store itself (past its pause: `asked`) that fails too
# ends the stream. Counted by time, not by tries: those refused unasked in the store's
# pause after a failure (1 s, longer while other calls' probes fail) counted toward 5
# tries over ~2.5 s, and an outage of 1.5 to 3 s ended a client's stream.
OUTAGE_S = 5.0
_FINAL = (
    b"event: response.completed\n",
    b"event: response.incomplete\n",
    b"event: response.failed\n",
)


class RunLog:
    """The events a run in this process has made so far, for followers in this process."""

    def __init__(self) -> None:
        self.events: list[bytes] = []
        self.done = False
        self._changed = asyncio.Event()

    def add(self, event: bytes) -> None:
        self.events.append(event)
        self._wake()

    def close(self) -> None:
        self.done = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def follow(self, start: int) -> AsyncIterator[bytes]:
        """The events from number `start` on, as they come, until the run ends."""
        at = start
        while True:
            while at < len(self.events):
                yield self.events[at]
                at += 1
            if self.done:
                return
            await self._changed.wait()


class EventChunks:
    """A response's events in the store: chunk k (from 0) holds one batch of them."""

    def __init__(self, store: ResponseStore, owner: str, response_id: str) -> None:
        self._store = store
        self._owner = owner
        self._id = response_id

    def _key(self, k: int) -> str:
        return self._store.key(self._owner, f"events\0{self._id}\0{k}")

    async def write(self, k: int, events: list[bytes]) -> None:
        await self._store.kv.set(self._key(k), b"".join(events), self._store.settings.ttl_s)

    async def forget(self) -> int:
        """Drop every chunk (they are numbered from 0 with no gap); how many there were."""
        gone, k = 0, 0
        while True:
            batch = await self._store.kv.delete_many([self._key(k + i) for i in range(64)])
            gone, k = gone + batch, k + 64
            if batch < 64:
                return gone

    async def read(self, k: int) -> list[bytes]:
        """Chunks k, k + 1, … that are there, in order (up to the first missing one)."""
        raws = await self._store.kv.get_many([self._key(k + i) for i in range(_READ_AHEAD)])
        found: list[bytes] = []
        for raw in raws:
            if raw is None:
                break
            found.append(raw)
        return found


def _events(chunk: bytes) -> list[bytes]:
    """A chunk's events (each ``event: …\\ndata: …\\n\\n``: the JSON holds no raw newline)."""
    return [part + b"\n\n" for part in chunk.split(b"\n\n") if part]


async def kept_as_made(
    events: AsyncIterable[str | bytes | memoryview],
    run: RunLog,
    chunks: EventChunks,
    first: int = 0,
) -> None:
    """Read `events` (the response's stream) to its end, each into `run` at once and
    into `chunks` (from chunk `first` on) every `FLUSH_S` (and at the end, however it
    ends)."""
    pending: list[bytes] = []
    batch: list[bytes] = []  # chunk `written`'s events: fixed once tried, so a chunk
    written = first  # a follower may have read is never written again with more

    async def flush(last: bool = False) -> bool:
        """Write the next chunk; False when the store did not answer (the `last`
        flushes: asked of the store itself, past the pause after a failure)."""
        nonlocal written, batch
        if not batch:
            batch, pending[:] = list(pending), []
        if not batch:
            return True
        write = partial(chunks.write, written, batch)
        try:
            await (asked(write) if last else write())
        except StoreUnavailable as exc:  # tried again at the next flush
            log.warning("responses: background stream events not kept yet: %s", exc)
            return False
        written, batch = written + 1, []
        return True

    async def flushing() -> None:
        # the only writer, and never cancelled mid-write
        while not ended.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), FLUSH_S)
            await flush()
        while (batch or pending) and await flush(last=True):
            pass  # what is left, at the end

    ended = asyncio.Event()
    flusher = asyncio.create_task(flushing())
    try:
        async for piece in events:
            event = piece.encode() if isinstance(piece, str) else bytes(piece)
            run.add(event)
            pending.append(event)
    finally:
        ended.set()
        try:
            await asyncio.shield(flusher)  # its last flush: what is left
        finally:
            run.close()


async def follow(
    chunks: EventChunks,
    run: RunLog | None,
    after: int,
    settled: Callable[[], Awaitable[StoredResponse | None]],
) -> AsyncIterator[bytes]:
    """The response's events numbered above `after`: from `run` while this process makes
    it, else from the store. `settled()` reads the kept response (failing an abandoned
    one) to learn when it has stopped running."""
    seen = after + 1  # the number of the next event
    if run is not None and not run.done:
        async for event in run.follow(seen):
            seen += 1
            yield event
            if event.startswith(_FINAL):
                return
    ended = run is not None and run.done  # then whatever else there is is in the store
    try:
        async for event in _from_store(chunks, seen - 1, settled, ended):
            seen += 1
            yield event
    except StoreUnavailable as exc:
        log.warning("responses: a background stream's follower stopped: %s", exc)
        yield _error_event(seen - 1)


async def _tried(call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, tried again while the store does not answer, for `OUTAGE_S` from its
    first failure: a call refused unasked (`StoreUnavailable.paused_s`: the store's
    pause after a failure, or another call's probe) is tried again when that ends,
    another after `_POLL_S`. Then once more as `asked` (past the pause, so that Redis
    itself is asked), whose failure is raised."""
    until: float | None = None
    while True:
        try:
            return await call()
        except StoreUnavailable as exc:
            now = time.monotonic()
            until = now + OUTAGE_S if until is None else until
            if now >= until:
                break
            if exc.paused_s:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(exc.wait(), until - now)
            else:
                await asyncio.sleep(min(_POLL_S, until - now))
    return await asked(call)


async def _from_store(
    chunks: EventChunks,
    after: int,
    settled: Callable[[], Awaitable[StoredResponse | None]],
    ended: bool,
) -> AsyncIterator[bytes]:
    """The events above `after` from the store, as `follow` says; `ended`: the run is
    known to have ended (its status is looked at once nothing more is there)."""
    k, number = 0, 0
    checked = time.monotonic() - (_STATUS_S if ended else 0.0)
    stopped: StoredResponse | None = None  # the response, once no longer running
    while True:
        found = await _tried(partial(chunks.read, k))
        k += len(found)
        for event in [event for raw in found for event in _events(raw)]:
            if number > after:
                yield event
            number += 1
            if event.startswith(_FINAL):
                return
        if found:
            continue
        if stopped is not None:  # read once more since it stopped: nothing came
            closing = _closing_event(stopped.response, max(number, after + 1))
            if closing is not None:  # else cancelled: nothing more
                yield closing
            return
        if time.monotonic() - checked >= _STATUS_S:
            checked = time.monotonic()
            record = await _tried(settled)
            if record is None:
                return
            if record.response.get("status") not in RUNNING:
                stopped = record
                if not ended:  # its run keeps it ended, then writes its last batch
                    await asyncio.sleep(_POLL_S)
                continue  # its last batch may have come meanwhile
        await asyncio.sleep(_POLL_S)


def _error_event(last: int) -> bytes:
    """OpenAI's ``error`` event, for a follower that cannot go on; `last` is the number
    of the last event it sent."""
    data = {
        "type": "error",
        "sequence_number": last + 1,
        "code": "store_unavailable",
        "message": "the response store did not answer: resume this stream later with "
        f"starting_after={last}",
        "param": None,
    }
    return responses_event("error", data)


_CLOSING = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "failed": "response.failed",
}


def _closing_event(response: dict[str, Any], number: int) -> bytes | None:
    """The closing event of a stream whose `response` has ended as kept; None for one
    that closes with none (cancelled)."""
    kind = _CLOSING.get(str(response.get("status")))
    if kind is None:
        return None
    return responses_event(kind, {"type": kind, "sequence_number": number, "response": response})
