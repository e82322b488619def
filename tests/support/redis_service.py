"""Where the tests' Redis is: 127.0.0.1:6379 unless ``$LLMROUTE_TEST_REDIS_URL`` says;
how a test's key namespace is cleared afterwards; and a URL for a database it lacks."""

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


def with_db(url: str, db: int) -> str:
    """`url` pointing at Redis database `db` instead."""
    base, _, last = url.rpartition("/")
    return f"{base}/{db}" if base.count("/") >= 2 and last.isdigit() else f"{url}/{db}"


def past_databases() -> tuple[str, int, int]:
    """The tests' Redis URL at a db it does not have (99, or its ``databases`` if more),
    that db and how many it has."""
    import redis

    with redis.Redis.from_url(REDIS_URL) as admin:
        count = int(admin.config_get("databases")["databases"])
    db = max(99, count)
    return with_db(REDIS_URL, db), db, count
