"""The semantic cache's index, in memory and in a real Redis: the nearest stored message
of a context at or above the threshold, expiry, the per-context ring, and vectors of
another dimension ignored."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest
from redis_service import REDIS_URL

from llmroute.state.semantic_index import (
    F32,
    MemorySemanticIndex,
    Query,
    RedisSemanticIndex,
    word_pairs,
)

DIGEST_A, DIGEST_B, DIGEST_C = ("a" * 64, "b" * 64, "c" * 64)
PAIRS = word_pairs("the same words")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _unit(*values: float) -> F32:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def _query(vector: F32, threshold: float) -> Query:
    return Query(vector, PAIRS, threshold)


def _index(
    backend: str, namespace: str, clock: Callable[[], float], capacity: int = 4
) -> MemorySemanticIndex | RedisSemanticIndex:
    if backend == "memory":
        return MemorySemanticIndex(capacity, max_contexts=2, clock=clock)
    return RedisSemanticIndex(REDIS_URL, 2.0, namespace, capacity, clock=clock)


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    if request.param == "memory":
        return "memory", ""
    return "redis", request.getfixturevalue("redis_namespace")


def test_the_nearest_message_of_the_context_at_or_above_the_threshold(
    backend: tuple[str, str],
) -> None:
    clock = Clock(1_800_000_000.0)
    index = _index(backend[0], backend[1], clock)

    async def go() -> list[object]:
        try:
            await index.add("ctx", _unit(1, 0, 0), PAIRS, DIGEST_A, 60)
            await index.add("ctx", _unit(0, 1, 0), PAIRS, DIGEST_B, 60)
            await index.add("other", _unit(1, 1, 0), PAIRS, DIGEST_C, 60)
            near_a = await index.nearest("ctx", _query(_unit(1, 0.1, 0), 0.9))
            between = await index.nearest("ctx", _query(_unit(1, 1, 0), 0.9))  # 0.707 from each
            elsewhere = await index.nearest("nowhere", _query(_unit(1, 0, 0), 0.1))
            other_dim = await index.nearest("ctx", _query(_unit(1, 0, 0, 0), 0.1))
            clock.now += 61  # both expired
            expired = await index.nearest("ctx", _query(_unit(1, 0, 0), 0.1))
            return [near_a, between, elsewhere, other_dim, expired]
        finally:
            await index.aclose()

    near_a, between, elsewhere, other_dim, expired = asyncio.run(go())
    assert isinstance(near_a, tuple) and near_a[0] == DIGEST_A
    assert near_a[1] == pytest.approx(0.995, abs=2e-3)  # float16 in Redis
    assert between is None and elsewhere is None and other_dim is None and expired is None


def test_a_full_context_overwrites_its_oldest_message(backend: tuple[str, str]) -> None:
    clock = Clock(1_800_000_000.0)
    index = _index(backend[0], backend[1], clock, capacity=2)

    async def go() -> list[object]:
        try:
            await index.add("ctx", _unit(1, 0, 0), PAIRS, DIGEST_A, 60)
            await index.add("ctx", _unit(0, 1, 0), PAIRS, DIGEST_B, 60)
            await index.add("ctx", _unit(0, 0, 1), PAIRS, DIGEST_C, 60)  # A is dropped
            return [
                await index.nearest("ctx", _query(_unit(1, 0, 0), 0.5)),
                await index.nearest("ctx", _query(_unit(0, 1, 0), 0.5)),
                await index.nearest("ctx", _query(_unit(0, 0, 1), 0.5)),
            ]
        finally:
            await index.aclose()

    first, second, third = asyncio.run(go())
    assert first is None
    assert isinstance(second, tuple) and second[0] == DIGEST_B
    assert isinstance(third, tuple) and third[0] == DIGEST_C


def test_memory_keeps_the_most_recently_used_contexts() -> None:
    index = MemorySemanticIndex(4, max_contexts=2)

    async def go() -> list[object]:
        await index.add("one", _unit(1, 0), PAIRS, DIGEST_A, 60)
        await index.add("two", _unit(1, 0), PAIRS, DIGEST_B, 60)
        await index.nearest("one", _query(_unit(1, 0), 0.5))  # "one" used last
        await index.add("three", _unit(1, 0), PAIRS, DIGEST_C, 60)  # "two" goes
        return [await index.nearest(c, _query(_unit(1, 0), 0.5)) for c in ("one", "two", "three")]

    one, two, three = asyncio.run(go())
    assert len(index) == 2
    assert isinstance(one, tuple) and two is None and isinstance(three, tuple)


def test_an_index_in_a_redis_that_is_down_costs_misses_not_answers(closed_port: int) -> None:
    """The answers' store works, the index's Redis does not: the lookup by meaning is a
    miss, the exact answer is still stored and served, and both failures are counted."""
    from llmroute.registry.schema import CacheSettings, SemanticCacheSettings
    from llmroute.state import CacheDirectives, MemoryStore, ResponseCache
    from llmroute.state.response_cache import CacheKeys

    settings = CacheSettings(semantic=SemanticCacheSettings(), timeout_s=0.2)
    index = RedisSemanticIndex(f"redis://127.0.0.1:{closed_port}/0", 0.2, "t", 64)
    seen: list[str] = []
    clock = Clock(1_800_000_000.0)
    cache = ResponseCache(
        settings,
        MemoryStore(10, 10**6),
        "v",
        on_result=seen.append,
        clock=clock,
        semantic=index,
        outage_clock=clock,
    )
    exact = "llmroute:resp:v1:v:" + DIGEST_A
    keys = CacheKeys(exact, "v1:v:" + DIGEST_B, _unit(1, 0, 0), PAIRS)

    async def go() -> list[object]:
        try:
            similar = await cache.get_similar(keys, CacheDirectives())
            clock.now += 2  # past the second a failed backend is left alone
            await cache.put_completion(
                keys, CacheDirectives(), "m", "d", {"id": "x", "choices": []}
            )
            await cache.flush()
            clock.now += 2
            return [similar, await cache.get(exact, CacheDirectives())]
        finally:
            await cache.aclose()

    similar, answer = asyncio.run(go())
    assert similar is None and answer is not None and answer.model == "m"
    # the failed lookup, the write whose index step failed (so not counted as stored)
    assert seen == ["error", "error", "hit"]


@pytest.mark.parametrize(
    ("stored", "asked", "kept"),
    [
        ("send a transfer from alice to bob", "send a transfer from bob to alice", False),
        ("convert 5 miles to km", "convert 5 km to miles", False),
        (
            "for friday, add a doctor's appointment to my calendar",
            "add a doctor's appointment to my calendar for friday",
            True,
        ),
        ("how can i build up my credit score", "How can I build my credit score?", True),
    ],
)
def test_word_pairs_tell_who_does_what_to_whom(
    backend: tuple[str, str], stored: str, asked: str, kept: bool
) -> None:
    """Same vector (as the encoders nearly give for these), so only the word pairs
    decide: role swaps share under half of them, a reordered paraphrase more."""
    index = _index(backend[0], backend[1], Clock(1_800_000_000.0))
    vector = _unit(1, 0, 0)

    async def go() -> object:
        try:
            await index.add("ctx", vector, word_pairs(stored), DIGEST_A, 60)
            return await index.nearest("ctx", Query(vector, word_pairs(asked), 0.9, 0.5))
        finally:
            await index.aclose()

    found = asyncio.run(go())
    assert (found is not None) is kept
