"""Streamed completions: `AsyncStream` on the caller's loop, `Stream` (synchronous)
driving an `AsyncStream` on the SDK's loop thread. Both mirror openai's ``Stream``:
iterate for chunks, ``close()`` (or a ``with`` block) to stop early."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import threading
import time
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from types import TracebackType
from typing import Any

from llmroute.dispatch import Opened
from llmroute.dispatch.usage import Usage
from llmroute.errors import CallTimeout, LlmrouteError, ProviderError, RouterClosed
from llmroute.safety.answer_pii import AnswerMask
from llmroute.safety.restore import StreamRestorer
from llmroute.safety.stream_edit import StreamEdit
from llmroute.sdk.convert import as_chunk, event_json, name_decision
from llmroute.sdk.decision_log import TIMEOUT
from llmroute.sdk.loop import LoopThread
from llmroute.telemetry.answers import StreamedAnswer
from llmroute.telemetry.record import CLIENT_DISCONNECTED

__all__ = ["AsyncStream", "Stream", "StreamEnd"]

log = logging.getLogger("llmroute.sdk")

CUT_SHORT = "the router was closed before the stream ended: its answer is cut short"


StreamEnd = Callable[[Opened, str | None, str, int | None], None]
"""Told once how a stream ended: None when complete, else ``stream_interrupted`` (the
upstream broke off) or ``client_disconnected`` (the caller stopped reading); the
answer streamed until then, as the decision log keeps it (empty unless the stream was
given a `StreamedAnswer` to read it into); and when its first event was read
(`time.perf_counter_ns`), None when none was: a stream silent past
``dispatch.stream_hold_s`` is returned before its first event."""


async def _chunks(
    opened: Opened,
    info: dict[str, Any],
    on_end: _Ending,
    answer: StreamedAnswer | None,
    edits: Sequence[StreamEdit] = (),
) -> AsyncGenerator[Any, None]:
    """Parsed chunks; the upstream stream is closed however this one ends. With
    `answer`, each chunk is read into it (as the provider wrote it); the chunks
    yielded have been through `edits`, in order (PII redacted, placeholders restored).
    An upstream that breaks once its ``[DONE]`` was read has sent the whole answer: the
    stream ends as a whole one, the break a warning, and what it sends after it is not
    the answer's (as the gateway's `relay` ends it)."""
    error: str | None = CLIENT_DISCONNECTED
    ended = False  # its ``[DONE]`` was read
    try:
        try:
            async for event in opened.events:
                if ended:  # what an upstream sends after its end is read, not yielded
                    continue
                ended = event.startswith(b"data: [DONE]")
                if on_end.first_ns is None:
                    on_end.first_ns = time.perf_counter_ns()
                for chunk in _made(event, opened, info, answer, edits):
                    yield chunk
        except ProviderError as exc:
            if not ended:
                raise
            log.warning("stream from %s broke off after its end: %s", opened.model, exc)
        for edited in _edited([], edits, closing=True):
            if (data := event_json(edited, opened.deployment)) is not None:
                yield as_chunk(data, info)
        error = None
    except Exception:
        error = "stream_interrupted"
        raise
    finally:
        try:
            await opened.aclose()
        finally:  # recorded even when closing fails
            on_end(opened, error)


def _made(
    event: bytes,
    opened: Opened,
    info: dict[str, Any],
    answer: StreamedAnswer | None,
    edits: Sequence[StreamEdit],
) -> list[Any]:
    """The caller's chunks of `event` (through `edits`); `event` read into `answer`."""
    if opened.deployment != info["provider"] or opened.model != info["model"]:
        _fell_back(info, opened)  # another model, or another deployment of it
    data = event_json(event, opened.deployment)
    if answer is not None:
        answer.add(data)
    if not edits:
        return [] if data is None else [as_chunk(data, info)]
    edited = (event_json(e, opened.deployment) for e in _edited([event], edits))
    return [as_chunk(d, info) for d in edited if d is not None]


def _fell_back(info: dict[str, Any], opened: Opened) -> None:
    """The stream went on from a fallback after its opening, or on another deployment
    of its model (dispatch.md#streams): the ``llmroute`` field (the stream's, shared by
    its chunks) names the model and provider that answer and the failure before them,
    as a completion's does."""
    info["model"], info["provider"] = opened.model, opened.deployment
    info["attempts"] = list(opened.attempts)


def _edited(
    events: Iterable[bytes], edits: Sequence[StreamEdit], *, closing: bool = False
) -> Iterator[bytes]:
    """`events` through each edit in turn; `closing`: each edit's end too."""
    for edit in edits:
        out: list[bytes] = [piece for event in events for piece in edit.feed(event)]
        if closing:
            out.extend(edit.close())
        events = out
    yield from events


# ends of dropped streams, until done: held by their loops (`_Dropped`), not by this set
_DROPPED: weakref.WeakSet[_Dropped] = weakref.WeakSet()
# how long a loop holds a dropped stream's end (`_Dropped`): for ever, but a finite time
# that every loop implementation takes; the end lets go of it once done
_HELD_S = 365 * 86400.0
# until their streams have ended; held by those streams (`_Ending.guard`) and its own
# task, not by this map: a loop closed with a stream open is not kept alive by it
_GUARDS: weakref.WeakValueDictionary[asyncio.AbstractEventLoop, _LoopGuard] = (
    weakref.WeakValueDictionary()
)
_OPEN: weakref.WeakSet[AsyncStream] = weakref.WeakSet()  # until collected
# `_OPEN` is shared by every loop's thread: a stream opened on one while `close_streams`
# lists it on another changed the set under that listing ("Set changed size during
# iteration"), and the loop stopping left its streams to ``shutdown_asyncgens``
_OPEN_LOCK = threading.Lock()


class _Ending:
    """`on_end`, once, whichever path ends the stream first (a stream closed before its
    first chunk never runs `_chunks`); its failure never fails the stream. Apart from
    the `AsyncStream`, so that the chunks' generator does not refer back to it: a
    stream its caller drops is then freed at once, and its `__del__` closes the chain
    in order."""

    __slots__ = ("answer", "chain", "deadline", "ended", "first_ns", "guard", "on_end")

    def __init__(self, on_end: StreamEnd | None, answer: StreamedAnswer | None) -> None:
        self.on_end = on_end
        self.answer = answer
        self.ended = False
        self.first_ns: int | None = None  # when the first event was read
        self.deadline: asyncio.Timeout | None = None  # the last read's (expired: timed out)
        self.guard: _LoopGuard | None = None  # told once the stream has ended
        self.chain: asyncio.TimerHandle | None = None  # `_hold`'s, let go of once ended

    def __call__(self, opened: Opened, error: str | None) -> None:
        if self.ended:
            return
        self.ended = True
        if self.chain is not None:
            self.chain.cancel()  # a cancelled handle lets go of what it held at once
            self.chain = None
        if self.guard is not None:
            self.guard.ended(self)
        if error == CLIENT_DISCONNECTED and self.deadline is not None and self.deadline.expired():
            # the read's timeout cancelled the chunks' generator: not the caller leaving
            error = TIMEOUT
        if self.on_end is None:
            return
        try:
            text = None if self.answer is None else self.answer.text()
            self.on_end(opened, error, text or "", self.first_ns)
        except Exception:  # logging must never fail the caller's stream
            log.exception("recording the stream's end failed")


async def _end(chunks: AsyncGenerator[Any, None], opened: Opened, ending: _Ending) -> None:
    """End a stream its caller dropped unclosed, and record it."""
    try:
        try:
            await chunks.aclose()
        finally:
            await opened.aclose()
    except Exception:
        log.exception("closing a dropped stream failed")
    finally:
        ending(opened, CLIENT_DISCONNECTED)


class _Dropped:
    """The end (`_end`) of a stream its caller dropped unclosed, a task on the stream's
    loop, with what it ends (for `_LoopGuard` to end it when its loop's runner
    cancelled the task before it began).

    A task needs a strong reference until done (a loop keeps only weak ones), and a
    module-wide one kept it, and its loop with everything on it, for the life of the
    process when the loop was closed by hand (``loop.close()``, no runner) before the
    end was over: its loop holds it instead, in a timer that is cancelled once the end
    is done and that closing the loop drops. `_DROPPED` lists it weakly. Freed with
    such a loop, it goes quietly, as a stream left open on it does (`_LoopGuard`):
    without asyncio's "Task was destroyed but it is pending!" and, for an end that had
    not begun, "coroutine '_end' was never awaited"."""

    __slots__ = ("__weakref__", "chunks", "ending", "held", "opened", "task")

    def __init__(self, chunks: AsyncGenerator[Any, None], opened: Opened, ending: _Ending) -> None:
        loop = asyncio.get_running_loop()
        self.chunks, self.opened, self.ending = chunks, opened, ending
        coro = _end(chunks, opened, ending)
        self.task = loop.create_task(coro)
        self.task._log_destroy_pending = False  # type: ignore[attr-defined]  # as asyncio's own
        self.held = loop.call_later(_HELD_S, _still_held, self)
        self.task.add_done_callback(self._done)
        weakref.finalize(self, _never_begun, coro)
        _DROPPED.add(self)

    def _done(self, _: asyncio.Task[None]) -> None:
        self.held.cancel()  # the loop lets go of it
        _DROPPED.discard(self)


def _never_begun(coro: Coroutine[Any, Any, None]) -> None:
    """A dropped stream's end freed with its loop closed before it began: closed, so
    that it is not "never awaited" (one that began is left to Python)."""
    if inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
        coro.close()


def _still_held(_: object) -> None:
    """A dropped stream's end, or an open stream's chain, outlived `_HELD_S` (a year):
    nothing to do but let go."""


def _hold(
    loop: asyncio.AbstractEventLoop, chunks: AsyncGenerator[Any, None], opened: Opened
) -> asyncio.TimerHandle:
    """`chunks` and the generators under it (`opened`'s) held by `loop` until the stream
    has ended, not by the `AsyncStream` alone.

    A stream its caller drops in a reference cycle (an exception's traceback holding
    the frame that held it, as a web framework's cancelled response leaves one) is
    freed by the cyclic collector with all it alone holds, in one pass: each generator
    of its chain was finalised beside the end its `__del__` starts, their closes raced
    ("async generator already executing" from the collector, which closed them from
    its own thread when the stream was a synchronous one's). Held by the loop, only the
    stream is freed, and its end closes the chain in order. A loop closed by hand drops
    its timers, and the chain with them, as it drops a dropped stream's end."""
    return loop.call_later(_HELD_S, _still_held, (chunks, opened))


def _end_dropped(chunks: AsyncGenerator[Any, None], opened: Opened, ending: _Ending) -> None:
    """On the stream's loop: `_end` a stream its caller dropped unclosed."""
    _Dropped(chunks, opened, ending)


class _LoopGuard:
    """A task on a loop while streams are open on it, that closes them, each in order,
    when the loop's runner cancels it.

    ``asyncio.run`` (and ``asyncio.Runner``, pytest-asyncio, anyio) cancels every task
    as it ends its loop, then ``shutdown_asyncgens`` closes every async generator left
    at once: a stream left open past ``asyncio.run`` (read in part, or never read) had
    its provider's generator closed beside the ones reading it, and asyncio printed
    "an error occurred during closing of asynchronous generator" with a traceback
    ("generator didn't stop after athrow()", "already running"), its end unrecorded.
    Cancelled, this task closes those streams first, as `close_streams` does for the
    SDK's own loop, and ends the dropped ones whose ending had not begun. It ends by
    itself once its loop's streams have all ended, so a loop closed without cancelling
    its tasks is left no pending task.

    A loop closed (``loop.close()``, no runner) while a stream is still open never runs
    this task again: it is kept only by the streams left open (their `_Ending`) and its
    own pending wait, not by `_GUARDS`, so that loop is freed with them instead of for
    the life of the process; and it goes without asyncio's "Task was destroyed but it is
    pending!", which would name this task, not the stream its caller left open."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.open: set[_Ending] = set()
        self.done: asyncio.Future[None] = loop.create_future()
        self.task = loop.create_task(self._guard(), name="llmroute-streams-guard")
        self.task._log_destroy_pending = False  # type: ignore[attr-defined]  # as asyncio's own

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _LoopGuard:
        guard = _GUARDS.get(loop)
        if guard is None or guard.task.done() or guard.done.done():
            guard = _GUARDS[loop] = cls(loop)
        return guard

    def add(self, ending: _Ending) -> None:
        self.open.add(ending)
        ending.guard = self

    def ended(self, ending: _Ending) -> None:
        self.open.discard(ending)
        if not self.open and not self.done.done():
            self.done.set_result(None)

    async def _guard(self) -> None:
        try:
            await self.done
        except asyncio.CancelledError:
            await close_streams(self.loop)
            for dropped in list(_DROPPED):
                if dropped.task.get_loop() is self.loop:
                    await asyncio.wait({dropped.task})
                    if not dropped.ending.ended:  # cancelled before it began
                        await _end(dropped.chunks, dropped.opened, dropped.ending)
            raise
        finally:
            if _GUARDS.get(self.loop) is self:
                del _GUARDS[self.loop]


class AsyncStream:
    """``chat.completion.chunk`` objects (openai's ``ChatCompletionChunk``, or dicts),
    each carrying the ``llmroute`` field, also kept here as `llmroute`."""

    def __init__(
        self,
        opened: Opened,
        info: dict[str, Any],
        timeout: float | None,
        on_end: StreamEnd | None = None,
        *,
        answer: StreamedAnswer | None = None,
        edits: tuple[AnswerMask | None, Mapping[str, str] | None] = (None, None),
        owner: object = None,
    ) -> None:
        self.llmroute = info
        # the router's SDK, closed once freed: kept while its stream may still be read
        self._owner = owner
        self._opened = opened
        self._ending = _Ending(on_end, answer)
        mask, values = edits
        chain: list[StreamEdit] = [mask.stream()] if mask is not None else []
        if values:
            chain.append(StreamRestorer(values))
        self._chunks = _chunks(opened, info, self._ending, answer, chain)
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._ending.chain = _hold(self._loop, self._chunks, opened)
        self._reader: asyncio.Task[Any] | None = None  # the task reading, while it reads
        self._cut = False  # `aclose` ended a read in flight: its reader's loop ends
        self._severed = False  # its router closed it before its end: reads raise
        self._unwound: asyncio.Future[None] | None = None  # resolved once that read is
        self._closing = asyncio.Lock()  # one close at a time: a second waits for the first
        self._released: asyncio.Event | None = None  # `cut`: set once its router has closed
        with _OPEN_LOCK:
            _OPEN.add(self)
        _LoopGuard.of(self._loop).add(self._ending)

    def __del__(self) -> None:
        # Dropped unclosed (an error before the caller's loop began, or in its body): a
        # generator never started has no finaliser, so its slot and holds would wait
        # for their leases; one suspended mid-stream left to the collector has each
        # generator of its chain closed by its own finaliser at once, and the one its
        # outer one is closing raises "already running", its end unrecorded.
        if self._ending.ended and self._opened.unread_end is None:
            return
        with contextlib.suppress(RuntimeError):  # its loop is closed: nothing to end on
            self._loop.call_soon_threadsafe(_end_dropped, self._chunks, self._opened, self._ending)

    @property
    def usage(self) -> Usage | None:
        """Tokens and cost, once the stream has ended."""
        return self._opened.usage

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        # `aclose` from another task (a stop button, the router closing) ends the read
        # by cancelling the reader while it waits in here, as asyncio.timeout does, and
        # the cancellation is taken back here: the reader's loop ends. (A task per read
        # would spare that, at ~10 µs a chunk.)
        # Only the cancellations made since the read began count, as in asyncio.timeout:
        # a reader already being cancelled (a cancellation caught, cleanup code) is not.
        reader = asyncio.current_task()
        before = 0 if reader is None else reader.cancelling()
        self._reader = reader
        try:
            return await self._next()
        except asyncio.CancelledError:
            if self._cut and reader is not None and reader.uncancel() <= before:
                self._read_unwound()
                await self._settled()  # closed under the reader, who goes on
                if self._severed:
                    raise self._cut_short() from None
                raise StopAsyncIteration from None
            raise  # its caller cancelled it too
        finally:
            self._reader = None
            self._read_unwound()

    def _read_unwound(self) -> None:
        if self._unwound is not None and not self._unwound.done():
            self._unwound.set_result(None)

    async def _settled(self) -> None:
        """Once the close that cut the read is over (and its router's, for `cut`)."""
        async with self._closing:
            pass
        if self._released is not None:
            await self._released.wait()

    def _cut_short(self) -> RouterClosed:
        closed = RouterClosed(CUT_SHORT)
        name_decision(closed, self.llmroute["decision_id"])
        return closed

    async def _next(self) -> Any:
        """The next chunk (the sync face, a task per read already, awaits it directly).
        An error names the stream's decision, as the call's own errors do."""
        if self._severed:  # a read after its router closed it: not the stream's end
            # as a read the close cut: once that close is over, or a program ending now
            # cancels its give-backs (``asyncio.run`` cancels every task left)
            await self._settled()
            raise self._cut_short()
        try:
            async with asyncio.timeout(self._timeout) as deadline:
                self._ending.deadline = deadline
                return await anext(self._chunks)
        except TimeoutError:
            self._ending(self._opened, TIMEOUT)
            await self.aclose()
            late = CallTimeout(
                self._opened.deployment, f"no stream event within {self._timeout:g}s"
            )
            name_decision(late, self.llmroute["decision_id"])
            raise late from None
        except LlmrouteError as exc:
            name_decision(exc, self.llmroute["decision_id"])
            raise

    async def aclose(self) -> None:
        """Stop reading and close the upstream stream (idempotent). From another task
        than the reader's, the read in flight is ended first (a generator cannot be
        closed while it is being read) and the reader's ``async for`` ends."""
        await self._close(severed=False)

    async def _close(self, *, severed: bool) -> None:
        """`aclose`; `severed`: by its router, so that a stream not ended yet tells its
        reader it was cut short (`RouterClosed`) rather than end as if complete."""
        async with self._closing:
            if severed and not self._ending.ended:
                self._severed = True
            reader = self._reader
            if reader is not None and reader is not asyncio.current_task():
                if not self._cut:
                    self._cut = True
                    self._unwound = self._loop.create_future()
                    reader.cancel()
                # shielded: a close cancelled here leaves the wait to the next one, which
                # would otherwise close the generator under the read still unwinding in it
                assert self._unwound is not None
                await asyncio.shield(self._unwound)
            try:
                await self._chunks.aclose()
            finally:
                await self._opened.aclose()  # a stream closed before its first chunk too
            self._ending(self._opened, CLIENT_DISCONNECTED)

    async def cut(self, released: asyncio.Event) -> None:
        """`aclose`, as its router closes: the reader's ``async for`` raises
        `RouterClosed` (unless the stream had ended) once `released` is set (the loop's
        clients closed too), so that a program ending then does not cut that short."""
        self._released = released
        await self._close(severed=True)

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def close_streams(loop: asyncio.AbstractEventLoop) -> None:
    """Close, in order, the streams still open on `loop` as it stops: left to
    ``shutdown_asyncgens``, which closes every generator at once, the one its outer
    one is closing raises "already running"."""
    with _OPEN_LOCK:
        streams = list(_OPEN)
    for stream in [s for s in streams if s._loop is loop and not s._ending.ended]:
        try:
            await stream.aclose()
        except Exception:
            log.exception("closing a stream as its loop stopped failed")


async def _next_or_end(stream: AsyncStream) -> tuple[bool, Any]:
    """One chunk, as ``(True, chunk)``, or ``(False, None)`` at the end: a coroutine
    does not carry StopAsyncIteration across threads gracefully."""
    try:
        return True, await stream._next()
    except StopAsyncIteration:
        return False, None


class Stream:
    """The synchronous face of an `AsyncStream` that runs on the SDK's loop thread.

    `close` may come from another thread than the one iterating (a UI's stop button
    while a worker reads): the read in flight is cancelled on the loop, the stream
    closed, and the reading thread's loop ends as at the stream's end."""

    def __init__(
        self,
        stream: AsyncStream,
        thread: LoopThread,
        *,
        on_read: Callable[[], None] | None = None,
    ) -> None:
        self.llmroute = stream.llmroute
        self._stream = stream
        self._thread = thread
        self._on_read = on_read  # told of each read: warns, once, if in an event loop
        self._done = False
        self._reading: asyncio.Task[tuple[bool, Any]] | None = None  # on the loop

    @property
    def usage(self) -> Usage | None:
        """Tokens and cost, once the stream has ended."""
        return self._stream.usage

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        if self._on_read is not None:
            self._on_read()
        if self._thread.stopping:  # its router closed it, with its loop, before its end
            raise self._stream._cut_short()
        try:
            more, chunk = self._thread.run(self._read())
        except RouterClosed:  # its router closed meanwhile
            raise self._stream._cut_short() from None
        except (asyncio.CancelledError, concurrent.futures.CancelledError):
            if self._done:  # closed meanwhile, from another thread
                raise StopIteration from None
            if self._thread.stopping:
                raise self._stream._cut_short() from None
            with contextlib.suppress(Exception):
                self.close()
            raise
        except BaseException:
            with contextlib.suppress(Exception):  # the original error is the one to see
                self.close()
            raise
        if not more:
            self._done = True
            raise StopIteration
        return chunk

    async def _read(self) -> tuple[bool, Any]:
        self._reading = asyncio.current_task()
        try:
            return await _next_or_end(self._stream)
        finally:
            self._reading = None

    def close(self) -> None:
        """Stop reading, and close the upstream connection (idempotent; from any
        thread)."""
        if self._done:
            return
        self._done = True
        with contextlib.suppress(RouterClosed):  # then the router's loop ends it
            self._thread.run(self._closed())

    async def _closed(self) -> None:
        """On the loop: the read in flight (another thread's) cancelled and ended first,
        since a stream cannot be closed while it is being read."""
        reading = self._reading
        if reading is not None and not reading.done():
            reading.cancel()
            await asyncio.wait({reading})
        await self._stream.aclose()

    def __enter__(self) -> Stream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
