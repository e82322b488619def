"""What the Redis-backed state shares: opening a client (`connect`) and riding out a
Redis that fails (`Outage`: leave it alone for a second, log at most once a minute)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from llmroute.errors import ConfigError
from llmroute.telemetry.store.url import mask_url

__all__ = ["Outage", "RedisConnection", "connect"]

RETRY_AFTER_S = 1.0
LOG_EVERY_S = 60.0
# Connections one client keeps at most. A call finds one free, or waits for one as long
# as a call may take (then counts as Redis failing): without a cap the pool grew to the
# process's peak concurrency and kept it (a burst of a thousand requests, a thousand
# idle connections per feature and process, towards Redis's own maxclients).
MAX_CONNECTIONS = 64


class RedisConnection:
    """One pooled async client; `errors` are the exceptions that mean Redis failed (not
    the caller); `url` is masked, for logs."""

    def __init__(self, client: Any, errors: tuple[type[BaseException], ...], url: str) -> None:
        self.client = client
        self.errors = errors
        self.url = url

    async def aclose(self) -> None:
        with contextlib.suppress(*self.errors):
            await self.client.aclose()


def connect(url: str, timeout_s: float, setting: str) -> RedisConnection:
    """A client for `url` whose every call (connect included, and the wait for a free
    connection of its `MAX_CONNECTIONS`) is bounded by `timeout_s`. Nothing connects
    yet. `setting` names the URL's key in errors."""
    try:
        import redis.asyncio as redis
    except ImportError:  # pragma: no cover - the extra is part of the test install
        raise ConfigError(
            f"{setting} is a Redis URL but the redis client is not installed; "
            "install it with: pip install 'llmroute[redis]'"
        ) from None
    masked = mask_url(url)
    try:
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )
    except ValueError as exc:
        raise ConfigError(f"{setting} {masked}: {str(exc).replace(url, masked)}") from None
    client = redis.Redis.from_pool(pool)  # closing the client closes its pool
    return RedisConnection(client, (redis.RedisError, OSError, TimeoutError), masked)


class Outage:
    """After a failure Redis is not asked again for `RETRY_AFTER_S` (`down`), so a
    Redis that hangs costs one timeout a second, not one a request; failures are logged
    at most once a minute."""

    def __init__(self, log: logging.Logger, clock: Callable[[], float] = time.time) -> None:
        self._log = log
        self._clock = clock
        self._until = 0.0
        self._logged_at = -LOG_EVERY_S

    def down(self) -> bool:
        return self._clock() < self._until

    def failed(self, message: str, *args: object) -> None:
        now = self._clock()
        self._until = now + RETRY_AFTER_S
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            self._log.warning(message, *args)
