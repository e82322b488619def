"""`connect`: one client's connections are capped, whatever the concurrency."""

from __future__ import annotations

import asyncio

from redis_service import REDIS_URL

from llmroute.state.redis_conn import MAX_CONNECTIONS, RedisConnection, client_name, connect


def test_a_burst_shares_a_capped_pool_and_every_call_is_answered(
    redis_namespace: str,
) -> None:
    """A burst of concurrent calls waits for a free connection rather than opening one
    each (the pool grew to the peak concurrency and kept it, idle; with redis-py 8 its
    default cap refused the 101st concurrent call at once, which counted as Redis being
    down). Redis says which connection served each call (`CLIENT ID`)."""
    burst = MAX_CONNECTIONS * 4

    async def run() -> tuple[int, int]:
        connection = connect(REDIS_URL, 2.0, "cache.url")
        client = connection.client
        try:
            key = f"{redis_namespace}:burst"
            counts = await asyncio.gather(*(client.incr(key) for _ in range(burst)))
            ids = await asyncio.gather(*(client.client_id() for _ in range(burst)))
            return len(set(counts)), len(set(ids))
        finally:
            await connection.aclose()

    answered, connections = asyncio.run(run())
    assert answered == burst  # each call counted once
    assert connections <= MAX_CONNECTIONS


def _with_db(url: str, db: int) -> str:
    """`url` pointing at Redis database `db` instead."""
    base, _, last = url.rpartition("/")
    return f"{base}/{db}" if base.count("/") >= 2 and last.isdigit() else f"{url}/{db}"


def test_features_on_one_url_and_timeout_share_one_capped_pool(redis_namespace: str) -> None:
    """Five features (limits, breakers, cache, affinity, stored responses) on the same
    URL and timeout each had a pool of their own: a burst through each left five times
    `MAX_CONNECTIONS` open. Now they share one; another timeout or database (which a
    pooled connection has selected) gets its own."""
    burst = MAX_CONNECTIONS * 2
    settings = ("dispatch.limits.url", "dispatch.breaker.url", "cache.url", "affinity.url")

    async def run() -> tuple[int, bool, bool]:
        features = [connect(REDIS_URL, 2.0, setting) for setting in settings]
        slower = connect(REDIS_URL, 3.0, "batches.url")
        other_db = connect(_with_db(REDIS_URL, 9), 2.0, "stored_responses.url")
        try:
            key = f"{redis_namespace}:burst"
            await asyncio.gather(*(f.client.incr(key) for f in features for _ in range(burst)))
            ids = await asyncio.gather(
                *(f.client.client_id() for f in features for _ in range(burst))
            )
            own = {slower.client, other_db.client}.isdisjoint({f.client for f in features})
            return len(set(ids)), len({id(f.client) for f in features}) == 1, own
        finally:
            for held in (*features, slower, other_db):
                await held.aclose()

    connections, shared, own = asyncio.run(run())
    assert connections <= MAX_CONNECTIONS
    assert shared
    assert own


def test_the_pool_is_closed_by_its_last_user_and_its_connections_are_named(
    redis_namespace: str,
) -> None:
    """A registry reload builds new stores on the pool while the old ones drain: the
    old ones closing must not close the connections the new ones use; the last to
    close does. Each connection is named after this process in ``CLIENT LIST``."""
    import redis as sync_redis

    def listed(ids: set[int]) -> dict[int, str]:
        admin = sync_redis.Redis.from_url(REDIS_URL)
        try:
            return {int(c["id"]): c["name"] for c in admin.client_list() if int(c["id"]) in ids}
        finally:
            admin.close()

    key = f"{redis_namespace}:n"

    async def burst(connection: RedisConnection) -> set[int]:
        await asyncio.gather(*(connection.client.incr(key) for _ in range(8)))
        return set(await asyncio.gather(*(connection.client.client_id() for _ in range(8))))

    async def run() -> None:
        old = connect(REDIS_URL, 2.0, "cache.url")
        ids = await burst(old)
        new = connect(REDIS_URL, 2.0, "cache.url")  # the reload's
        await old.aclose()
        await old.aclose()  # twice is once
        assert listed(ids) == dict.fromkeys(ids, client_name())  # still open, and named
        assert await new.client.incr(key) == 9
        await new.aclose()
        assert listed(ids) == {}
        again = connect(REDIS_URL, 2.0, "cache.url")  # a fresh pool after the last close
        try:
            assert await again.client.incr(key) == 10
        finally:
            await again.aclose()

    asyncio.run(run())


def test_the_url_can_set_another_cap(redis_namespace: str) -> None:
    """``?max_connections=N`` in a feature's URL is the knob for a process that needs more
    (or fewer) than `MAX_CONNECTIONS` concurrent calls to Redis (docs/dispatch.md)."""
    burst = 40
    sep = "&" if "?" in REDIS_URL else "?"

    async def run() -> tuple[int, int]:
        connection = connect(f"{REDIS_URL}{sep}max_connections=3", 2.0, "cache.url")
        try:
            key = f"{redis_namespace}:capped"
            counts = await asyncio.gather(*(connection.client.incr(key) for _ in range(burst)))
            ids = await asyncio.gather(*(connection.client.client_id() for _ in range(burst)))
            return len(set(counts)), len(set(ids))
        finally:
            await connection.aclose()

    answered, connections = asyncio.run(run())
    assert answered == burst
    assert connections <= 3
