"""Circuit-breaker openings shared through Redis (``dispatch.breaker.url``).

Each process keeps its own breakers (they count failures where they see them); what is
shared is the conclusion. When a process's breaker opens, it writes one key per
deployment that lives for the breaker's cooldown; every process reads a deployment's
key at most every ``sync_s`` and, while it exists, keeps its own breaker open for the
key's remaining life. So once one replica has seen a deployment fail, the others stop
sending to it within ``sync_s`` instead of each paying its own failures, and they all
probe it again when the cooldown ends.

A Redis that cannot answer changes nothing: each process goes on with its own breakers
(logged at most once a minute, Redis left alone for a second; the calls waiting on it
give up when one fails, and then one asks at a time: `llmroute.state.answering`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from llmroute.registry.schema import BreakerSettings
from llmroute.state.answering import Answering, StoreUnavailable, note_failure
from llmroute.state.redis_conn import Outage, connect

__all__ = ["RedisBreakers", "open_breakers"]

log = logging.getLogger("llmroute.breakers")


class RedisBreakers:
    """Openings in Redis: ``{namespace}:breaker:{deployment}`` with a TTL."""

    def __init__(
        self,
        url: str,
        timeout_s: float,
        namespace: str,
        clock: Callable[[], float] = time.monotonic,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self._redis = connect(url, timeout_s, "dispatch.breaker.url")
        self.url = self._redis.url
        self._client: Any = self._redis.client
        self._prefix = f"{namespace}:breaker:"
        self._outage = Outage(log, clock, on_error)
        self._answering = Answering.of(self._redis, timeout_s, clock)

    async def open_for(self, deployment: str) -> float | None:
        """Seconds the deployment stays open elsewhere; None when no process has it open
        (or Redis cannot say)."""
        if self._outage.down():
            return None
        try:
            async with self._answering():
                ttl_ms = await self._client.pttl(self._prefix + deployment)
        except StoreUnavailable as exc:
            self._failed(exc)
            return None
        return ttl_ms / 1000 if ttl_ms is not None and ttl_ms > 0 else None

    async def opened(self, deployment: str, cooldown_s: float) -> None:
        """This process's breaker opened: tell the others for `cooldown_s`."""
        if self._outage.down():
            return
        try:
            async with self._answering():
                await self._client.set(self._prefix + deployment, "open", px=int(cooldown_s * 1000))
        except StoreUnavailable as exc:
            self._failed(exc)

    def _failed(self, exc: StoreUnavailable) -> None:
        note_failure(
            self._outage,
            exc,
            "shared breakers unavailable, each process keeps its own: %s",
            exc,
        )

    async def aclose(self) -> None:
        await self._redis.aclose()


def open_breakers(
    settings: BreakerSettings, on_error: Callable[[], None] | None = None
) -> RedisBreakers | None:
    """The shared openings `settings` name; None for ``memory`` or disabled breakers.
    `on_error` is told of each Redis call that failed."""
    if not settings.enabled or settings.url == "memory":
        return None
    return RedisBreakers(settings.url, settings.timeout_s, settings.namespace, on_error=on_error)
