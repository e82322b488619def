"""`LoopClients`: one `Dispatcher` (with its own providers) per event loop.

The providers' HTTP sessions are bound to the loop they first run on, so a dispatcher is never
shared across loops. Each one is closed on its own loop: by `aclose_current`, or, when
the loop is shut down by ``asyncio.run`` (or the SDK's own thread), through a parked
async generator that the loop's ``shutdown_asyncgens`` finalizes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator
from pathlib import Path

from llmroute.dispatch import Dispatcher
from llmroute.gates.build import GateFactory
from llmroute.providers.build import build_providers
from llmroute.registry.schema import Registry

__all__ = ["LoopClients"]

_Entry = tuple[Dispatcher, AsyncGenerator[None, None]]


async def _keeper(dispatcher: Dispatcher) -> AsyncGenerator[None, None]:
    """Parked at its ``yield`` until closed; closing it closes the dispatcher."""
    try:
        yield
    finally:
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
    ) -> None:
        self._registry = registry
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
            providers = build_providers(self._registry, base_dir=self._base_dir)
            dispatcher = Dispatcher(self._registry, providers, gates=self._gates)
            keeper = _keeper(dispatcher)
            self._by_loop[loop] = (dispatcher, keeper)
        await anext(keeper)  # first iteration registers it with the loop's shutdown
        return dispatcher

    async def aclose_current(self) -> None:
        """Close the running loop's dispatcher, if it has one."""
        with self._lock:
            entry = self._by_loop.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[1].aclose()

    def release_others(self) -> None:
        """Close the dispatchers of loops running elsewhere (scheduled, not awaited) and
        forget those of loops that are closed or stopped."""
        with self._lock:
            entries, self._by_loop = self._by_loop, {}
        for loop, (_, keeper) in entries.items():
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(keeper.aclose(), loop)

    def _load_local(self) -> None:
        from llmroute.providers.llamacpp import build_llamacpp

        for name, spec in self._registry.providers.items():
            if spec.kind == "llamacpp":
                build_llamacpp(name, spec, self._registry, self._base_dir)
        self._loaded = True

    def _prune(self) -> None:
        for loop in [loop for loop in self._by_loop if loop.is_closed()]:
            del self._by_loop[loop]
