"""`LoopClients`: one `Dispatcher` (with its own providers) per event loop, and the
response cache and conversation affinity that go with it.

The providers' HTTP sessions are bound to the loop they first run on, so a dispatcher is never
shared across loops. Each one is closed on its own loop: by `aclose_current`, or, when
the loop is shut down by ``asyncio.run`` (or the SDK's own thread), through a parked
async generator that the loop's ``shutdown_asyncgens`` finalizes. So is a Redis cache's
(or affinity's) client; a memory cache's entries are one store shared by every loop, and
so are the process's remembered conversations.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import TYPE_CHECKING

from llmroute.dispatch import Dispatcher
from llmroute.dispatch.affinity import Affinity
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
    from llmroute.telemetry.metrics import GatewayMetrics

__all__ = ["LoopClients"]

_Entry = tuple[Dispatcher, ResponseCache | None, Affinity | None, AsyncGenerator[None, None]]


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
    ) -> None:
        self._registry = registry
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
            on_outcome = self._metrics.affinity if self._metrics is not None else None
            affinity = Affinity.open(self._registry, on_outcome)
            keeper = _keeper(dispatcher, cache, affinity)
            self._by_loop[loop] = (dispatcher, cache, affinity, keeper)
        await anext(keeper)  # first iteration registers it with the loop's shutdown
        return dispatcher

    async def aclose_current(self) -> None:
        """Close the running loop's dispatcher, if it has one."""
        with self._lock:
            entry = self._by_loop.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[3].aclose()

    def release_others(self) -> None:
        """Close the dispatchers of loops running elsewhere (scheduled, not awaited) and
        forget those of loops that are closed or stopped."""
        with self._lock:
            entries, self._by_loop = self._by_loop, {}
        for loop, (_, _, _, keeper) in entries.items():
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(keeper.aclose(), loop)

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
                build_llamacpp(name, spec, self._registry, self._base_dir)
        self._loaded = True

    def _prune(self) -> None:
        for loop in [loop for loop in self._by_loop if loop.is_closed()]:
            del self._by_loop[loop]
