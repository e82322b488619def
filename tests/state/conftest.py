"""Redis for the cache tests: 127.0.0.1:6379 (``$LLMROUTE_TEST_REDIS_URL``), a fresh
key namespace per test, its keys deleted afterwards. Without a reachable server the
Redis tests skip, except under ``CI=true``, where they fail."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest
from redis_service import REDIS_URL


def _redis_reachable() -> str | None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2).ping()
    except (redis.RedisError, OSError) as exc:
        return f"Redis at {REDIS_URL} is unreachable: {exc}"
    return None


@pytest.fixture(scope="session")
def _redis_available() -> None:
    why = _redis_reachable()
    if why is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {why}")
    pytest.skip(why)


@pytest.fixture
def redis_namespace(_redis_available: None) -> Iterator[str]:
    """A key namespace of this test's own; its keys are deleted afterwards."""
    import redis

    namespace = f"llmroute-test-{uuid.uuid4().hex[:12]}"
    yield namespace
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def closed_port() -> int:
    """A 127.0.0.1 port with nothing listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
