"""`LoopClients`: one `Dispatcher` (with its own providers) per event loop, and the
response cache and conversation affinity that go with it.

The providers' HTTP sessions are bound to the loop they first run on, so a dispatcher is never
shared across loops. Each one is closed on its own loop: by `aclose_current`, or, when
the loop is shut down by ``asyncio.run`` (or the SDK's own thread), through a parked
async generator that the loop's ``shutdown_asyncgens`` finalizes. So is a Redis cache's
(or affinity's) client; a memory cache's entries are one store shared by every loop, and
so are the process's remembered conversations.

The calls in flight on a loop (`run`, `track`) are ended before its dispatcher is closed
under them, as an HTTP client's requests fail when it is closed: left running, a stream
read waited for ever on a connection closed under it, or a call went on to its answer on
a closed dispatcher, and their slots stayed taken.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from llmroute.dispatch import Dispatcher
from llmroute.dispatch.affinity import Affinity
from llmroute.errors import ConfigError, RouterClosed
from llmroute.gates.build import GateFactory
from llmroute.providers.build import build_providers
from llmroute.registry.schema import Registry
from llmroute.state import (
    KeyValueStore,
    MemoryStore,
    ResponseCache,
    open_store,
    resolve_cache_url,
)
from llmroute.state.response_cache import open_semantic_index

if TYPE_CHECKING:
    from llmroute.sdk.streams import AsyncStream
    from llmroute.telemetry.metrics import GatewayMetrics

__all__ = ["LoopClients"]

log = logging.getLogger("llmroute.sdk")

T = TypeVar("T")
_Entry = tuple[Dispatcher, ResponseCache | None, Affinity | None, AsyncGenerator[None, None]]
_UNWIND_S = 5.0  # for the calls cancelled as their loop's clients close to end
# The calls in flight that the running `run` call belongs to, in its task's context.
_CALL: contextvars.ContextVar[_InFlight | None] = contextvars.ContextVar(
    "llmroute_sdk_call", default=None
)


class _InFlight:
    """One loop's calls in flight: the `acreate` calls, each a task of ours, and the
    streams open (closed as their reader would close them)."""

    def __init__(self) -> None:
        self.calls: set[asyncio.Task[Any]] = set()
        self.streams: weakref.WeakSet[AsyncStream] = weakref.WeakSet()
        self.closed = False  # set by `end`: the calls cancelled since were cancelled by it
        self.released = asyncio.Event()  # set once `end` is over

    async def end(self, keeper: AsyncGenerator[None, None] | None) -> None:
        """On its loop: cancel the calls and close the streams, in order, then the
        loop's clients (`keeper`). The callers go on once it is over: a program that
        returns from ``asyncio.run`` then would cut it short (its connections left
        open)."""
        self.closed = True
        try:
            calls = {task for task in self.calls if not task.done()}
            for task in calls:
                task.cancel()
            if calls:
                await asyncio.wait(calls, timeout=_UNWIND_S)
            for stream in list(self.streams):
                try:
                    await stream.cut(self.released)
                except Exception:
                    log.exception("closing a stream as its router closed failed")
            if keeper is not None:
                await keeper.aclose()
        finally:
            self.released.set()


async def _release(in_flight: _InFlight | None, keeper: AsyncGenerator[None, None] | None) -> None:
    if in_flight is not None:
        await in_flight.end(keeper)
    elif keeper is not None:
        await keeper.aclose()


def _started(coro: Coroutine[Any, Any, T], in_flight: _InFlight) -> asyncio.Task[T]:
    """`coro` as a task whose context names `in_flight` (run in a copied context: the
    caller's own is left as it was; no ``context=`` argument, which not every loop
    implementation takes)."""
    _CALL.set(in_flight)
    return asyncio.ensure_future(coro)


def _running_here() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def _keeper(
    dispatcher: Dispatcher, cache: ResponseCache | None, affinity: Affinity | None
) -> AsyncGenerator[None, None]:
    """Parked at its ``yield`` until closed; closing it closes the dispatcher (and the
    cache's and affinity's clients)."""
    try:
        yield
    finally:
        if cache is not None:
            await cache.aclose()
        if affinity is not None:
            await affinity.aclose()
        await dispatcher.aclose()


class LoopClients:
    """Dispatchers by event loop, created on first use in each loop. They share one
    `GateFactory` (learned cascade gates load once); llama.cpp models are cached per
    process by their provider, so a second loop does not load them again."""

    def __init__(
        self,
        registry: Registry,
        *,
        gates: GateFactory | None = None,
        base_dir: Path | None = None,
        version: str = "",
        metrics: GatewayMetrics | None = None,
        at: Callable[[ConfigError], ConfigError] | None = None,
    ) -> None:
        self._registry = registry
        self._at = at  # a GGUF's error, at its line in the registry's file
        self._version = version
        self._metrics = metrics
        settings = registry.cache
        self._cache_url = None if settings is None else resolve_cache_url(settings)
        self._memory = (
            MemoryStore(settings.max_entries, settings.max_bytes)
            if settings is not None and self._cache_url == "memory"
            else None
        )
        # the semantic index beside the memory store is shared by every loop, as it is
        self._memory_index = (
            open_semantic_index("memory", settings)
            if settings is not None and self._cache_url == "memory"
            else None
        )
        self._gates = gates if gates is not None else GateFactory(registry, base_dir=base_dir)
        self._base_dir = base_dir
        self._local = any(p.kind == "llamacpp" for p in registry.providers.values())
        self._loaded = False
        self._lock = threading.Lock()
        self._by_loop: dict[asyncio.AbstractEventLoop, _Entry] = {}
        self._in_flights: dict[asyncio.AbstractEventLoop, _InFlight] = {}

    async def get(self) -> Dispatcher:
        """The running loop's dispatcher."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._by_loop.get(loop)
            if entry is not None:
                return entry[0]
        if self._local and not self._loaded:
            # Load GGUF files off the loop (seconds); build_providers then finds them cached.
            await asyncio.to_thread(self._load_local)
        with self._lock:
            entry = self._by_loop.get(loop)
            if entry is not None:
                return entry[0]
            self._prune()
            cache = self._new_cache()
            providers = build_providers(self._registry, base_dir=self._base_dir)
            dispatcher = Dispatcher(
                self._registry, providers, gates=self._gates, observer=self._metrics
            )
            metrics = self._metrics
            affinity = Affinity.open(
                self._registry,
                metrics.affinity if metrics is not None else None,
                metrics.state_error("affinity") if metrics is not None else None,
            )
            keeper = _keeper(dispatcher, cache, affinity)
            self._by_loop[loop] = (dispatcher, cache, affinity, keeper)
        await anext(keeper)  # first iteration registers it with the loop's shutdown
        return dispatcher

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """`coro` (an `acreate`) as a task of ours on the running loop: closing the
        router cancels that task, not the caller's, which gets `RouterClosed`."""
        in_flight = self._in_flight()
        caller = asyncio.current_task()
        before = 0 if caller is None else caller.cancelling()  # not the caller's since
        # its stream is kept with it (`track`); a task copies the context it is made in
        task = contextvars.copy_context().run(_started, coro, in_flight)
        in_flight.calls.add(task)
        try:
            return await task
        except asyncio.CancelledError:
            if in_flight.closed and caller is not None and caller.cancelling() <= before:
                await in_flight.released.wait()
                raise RouterClosed() from None
            raise
        finally:
            in_flight.calls.discard(task)

    def track(self, stream: AsyncStream) -> None:
        """`stream`, opened on the running loop, is closed with the loop's clients: with
        the calls in flight of the call that opened it, even when a close (from another
        thread) has taken them meanwhile and not yet ended them on this loop: kept with
        the calls begun since, it was not ended, and read on a dispatcher closed under
        it."""
        in_flight = _CALL.get()
        if in_flight is None or in_flight.released.is_set():  # that close is over
            in_flight = self._in_flight()
        in_flight.streams.add(stream)

    async def aclose_current(self) -> None:
        """End the running loop's calls in flight and close its dispatcher."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._by_loop.pop(loop, None)
            in_flight = self._in_flights.pop(loop, None)
        await _release(in_flight, None if entry is None else entry[3])

    def release_others(
        self,
        spared: set[asyncio.AbstractEventLoop],
        here: asyncio.AbstractEventLoop | None = None,
    ) -> list[concurrent.futures.Future[None]]:
        """End the calls in flight and close the dispatchers of loops running elsewhere
        (scheduled on each; the futures of those running in other threads returned, to
        wait for), but those of the `spared` loops, and forget those of loops that are
        closed or stopped. `here` (default: the running loop) is the loop of the code that
        closes: its release runs once that code yields, so it is not waited for."""
        spared = {loop for loop in spared if not loop.is_closed()}
        with self._lock:
            entries = {k: v for k, v in self._by_loop.items() if k not in spared}
            in_flights = {k: v for k, v in self._in_flights.items() if k not in spared}
            for loop in entries.keys() | in_flights.keys():
                self._by_loop.pop(loop, None)
                self._in_flights.pop(loop, None)
        here = here or _running_here()
        released: list[concurrent.futures.Future[None]] = []
        for loop in entries.keys() | in_flights.keys():
            if not loop.is_running():
                continue
            entry = entries.get(loop)
            release = _release(in_flights.get(loop), None if entry is None else entry[3])
            try:
                future = asyncio.run_coroutine_threadsafe(release, loop)
            except RuntimeError:  # closed meanwhile: its shutdown closed what it had
                release.close()
                continue
            if loop is not here:  # waiting for this thread's own loop would never end
                released.append(future)
        return released

    def idle(self) -> bool:
        """Whether no loop's clients or calls are held (none made, or all released)."""
        with self._lock:
            return not self._by_loop and not self._in_flights

    def cache(self) -> ResponseCache | None:
        """The running loop's response cache (after `get`); None without one."""
        with self._lock:
            entry = self._by_loop.get(asyncio.get_running_loop())
        return None if entry is None else entry[1]

    def affinity(self) -> Affinity | None:
        """The running loop's conversation affinity (after `get`); None without one."""
        with self._lock:
            entry = self._by_loop.get(asyncio.get_running_loop())
        return None if entry is None else entry[2]

    def _new_cache(self) -> ResponseCache | None:
        settings = self._registry.cache
        if settings is None or self._cache_url is None:
            return None
        if self._memory is not None:
            store: KeyValueStore = self._memory
            index = self._memory_index
        else:
            store = open_store(self._cache_url, settings)
            index = open_semantic_index(self._cache_url, settings)
        on_result = self._metrics.cache if self._metrics is not None else None
        return ResponseCache(settings, store, self._version, on_result=on_result, semantic=index)

    def _load_local(self) -> None:
        from llmroute.providers.llamacpp import build_llamacpp

        for name, spec in self._registry.providers.items():
            if spec.kind == "llamacpp":
                try:
                    build_llamacpp(name, spec, self._registry, self._base_dir)
                except ConfigError as exc:
                    if self._at is None:
                        raise
                    raise self._at(exc) from exc
        self._loaded = True

    def _in_flight(self) -> _InFlight:
        loop = asyncio.get_running_loop()
        with self._lock:
            in_flight = self._in_flights.get(loop)
            if in_flight is None:
                self._prune()
                in_flight = self._in_flights[loop] = _InFlight()
            return in_flight

    def _prune(self) -> None:
        for loop in [loop for loop in self._by_loop if loop.is_closed()]:
            del self._by_loop[loop]
        for loop in [loop for loop in self._in_flights if loop.is_closed()]:
            del self._in_flights[loop]
