"""`connect`: one client's connections are capped, whatever the concurrency."""

from __future__ import annotations

import asyncio

from redis_service import REDIS_URL

from llmroute.state.redis_conn import MAX_CONNECTIONS, connect


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
