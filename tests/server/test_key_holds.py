"""A client key's ``tpm`` hold counted in a real Redis: a request whose task is
cancelled while Redis takes the hold (its client hung up) leaves nothing held."""

from __future__ import annotations

import asyncio

from redis_service import REDIS_URL

from llmroute.registry.schema import ApiKey
from llmroute.server.auth import Charges
from llmroute.state import RedisLimits


def test_a_hold_whose_request_was_cancelled_is_given_back(redis_namespace: str) -> None:
    key = ApiKey(name="team", sha256="0" * 64, tpm=1_000)

    async def go() -> list[float]:
        limits = RedisLimits(REDIS_URL, 2.0, redis_namespace)
        charges = Charges(limits)
        try:
            left = []
            for delay in [i / 40_000 for i in range(40)]:
                holding = asyncio.create_task(charges.hold(key, 300))
                await asyncio.sleep(delay)
                holding.cancel()
                try:
                    release = await holding
                except asyncio.CancelledError:
                    pass
                else:
                    assert release is not None
                    release()  # not cancelled in time: the request gives it back itself
                await asyncio.sleep(0.02)
                await charges.aclose()
                left.append(await limits.tokens("apikey:team"))
            return left
        finally:
            await limits.aclose()

    assert asyncio.run(go()) == [0.0] * 40
