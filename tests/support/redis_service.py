"""Where the tests' Redis is: 127.0.0.1:6379 unless ``$LLMROUTE_TEST_REDIS_URL`` says;
and how a test's key namespace is cleared afterwards."""

from __future__ import annotations

import os

REDIS_URL = os.environ.get("LLMROUTE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def delete_namespace(namespace: str) -> None:
    """Delete every key under ``NAMESPACE:``."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
