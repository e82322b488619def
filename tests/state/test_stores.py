"""The cache's stores: memory (expiry, least-recently-used eviction by count and by
bytes) and Redis over a real connection, including one that is not there."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
import redis
from redis_service import REDIS_URL
from stall_proxy import stall_proxy

from llmroute.dispatch.affinity import Affinity
from llmroute.errors import ConfigError
from llmroute.registry import parse_registry
from llmroute.registry.schema import CacheSettings
from llmroute.state import (
    MemoryStore,
    RedisStore,
    StoreUnavailable,
    open_store,
    resolve_cache_url,
)
from llmroute.state.listings import Cap
from llmroute.state.response_cache import CacheDirectives, ResponseCache
from llmroute.state.stores import asked

AFFINITY_REGISTRY = """
encoder: builtin:static
providers: {p: {kind: openai, base_url: "http://127.0.0.1:9/v1"}}
models:
  small: {provider: p, model: up-small}
  large: {provider: p, model: up-large}
routes:
  - {name: chitchat, examples: [hello there], target: small}
default: {target: small}
affinity: {}
"""


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_memory_entries_expire() -> None:
    clock = Clock()
    store = MemoryStore(10, 10_000, clock)

    async def go() -> None:
        await store.set("a", b"1", ttl_s=5)
        assert await store.get("a") == b"1"
        clock.now += 4.9
        assert await store.get("a") == b"1"
        clock.now += 0.2
        assert await store.get("a") is None
        assert len(store) == 0 and store.size_bytes == 0

    run(go())


def test_memory_evicts_the_least_recently_used_by_count() -> None:
    store = MemoryStore(2, 10_000)

    async def go() -> None:
        await store.set("a", b"1", 60)
        await store.set("b", b"2", 60)
        assert await store.get("a") == b"1"  # a is now the most recently used
        await store.set("c", b"3", 60)
        assert await store.get("b") is None
        assert await store.get("a") == b"1"
        assert await store.get("c") == b"3"

    run(go())


def test_memory_evicts_by_bytes_and_skips_values_larger_than_the_whole_store() -> None:
    store = MemoryStore(100, 10)

    async def go() -> None:
        await store.set("a", b"aaaa", 60)
        await store.set("b", b"bbbb", 60)
        await store.set("c", b"cccc", 60)  # 12 bytes > 10: a goes
        assert await store.get("a") is None
        assert store.size_bytes == 8
        await store.set("huge", b"x" * 11, 60)
        assert await store.get("huge") is None
        assert store.size_bytes == 8
        await store.set("b", b"B", 60)  # replacing counts the new size only
        assert store.size_bytes == 5

    run(go())


def test_redis_round_trip_with_expiry(redis_namespace: str) -> None:
    async def go() -> None:
        store = RedisStore(REDIS_URL, timeout_s=2)
        try:
            key = f"{redis_namespace}:k"
            assert await store.get(key) is None
            await store.set(key, b"\x00value\xff", ttl_s=0.5)
            assert await store.get(key) == b"\x00value\xff"
            await asyncio.sleep(0.65)
            assert await store.get(key) is None
        finally:
            await store.aclose()

    run(go())


def _backend(
    backend: str, request: pytest.FixtureRequest, name: str
) -> tuple[MemoryStore | RedisStore, str]:
    """A small memory store, or the real Redis with a key in this test's namespace."""
    if backend == "memory":
        return MemoryStore(10, 1000), name
    namespace = request.getfixturevalue("redis_namespace")
    return RedisStore(REDIS_URL, timeout_s=2), f"{namespace}:{name}"


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_delete_says_whether_the_entry_was_there(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """What feedback's eviction uses: a deleted answer is gone, a second delete finds
    nothing."""

    async def go() -> list[object]:
        store, key = _backend(backend, request, "k")
        try:
            await store.set(key, b"answer", ttl_s=60)
            done = [await store.delete(key), await store.get(key), await store.delete(key)]
            many = [f"{key}:{i}" for i in range(3)]
            for name in many[:2]:
                await store.set(name, b"x", ttl_s=60)
            done += [await store.delete_many(many), await store.get_many(many)]
            return [*done, await store.delete_many([])]
        finally:
            await store.aclose()

    assert run(go()) == [True, None, False, 2, [None, None, None], 0]


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_add_sets_only_what_is_not_there(backend: str, request: pytest.FixtureRequest) -> None:
    """What a batch's lease is taken with: of several takers one wins, and an expired
    entry can be taken again."""

    async def go() -> list[object]:
        store, key = _backend(backend, request, "lease")
        try:
            won = await asyncio.gather(*(store.add(key, str(i).encode(), 0.6) for i in range(5)))
            held = await store.get(key)
            await asyncio.sleep(0.75)
            return [
                sorted(won),
                held == str(won.index(True)).encode(),
                await store.add(key, b"x", 5),
            ]
        finally:
            await store.aclose()

    assert run(go()) == [[False, False, False, False, True], True, True]


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_renew_keeps_only_what_still_holds_the_value(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """What a batch's run renews its lease with: not once another holds it, nor once it
    lapsed."""

    async def go() -> list[object]:
        store, key = _backend(backend, request, "lease")
        try:
            # Half a second and more between the steps whose order is checked: a test
            # process stopped 0.25 s between two of them (a loaded machine, a GC pause)
            # read the renewed value as lapsed when the gap was 0.2 s.
            await store.set(key, b"mine", 0.5)
            seen = [await store.renew(key, b"mine", 1.5), await store.renew(key, b"theirs", 5)]
            await asyncio.sleep(0.7)  # past the first 0.5 s: renewed, still there
            seen.append(await store.get(key))
            await asyncio.sleep(1.0)
            seen += [await store.renew(key, b"mine", 5), await store.get(key)]
            return seen
        finally:
            await store.aclose()

    assert run(go()) == [True, False, b"mine", False, None]


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_set_of_members_adds_removes_and_expires(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """What the running batches are noted in: members added by concurrent callers all
    kept, removed one by one (a missing one is no error), the whole set expiring."""

    async def go() -> list[object]:
        store, key = _backend(backend, request, "running")
        try:
            await asyncio.gather(*(store.add_member(key, f"tag b{i}", 5) for i in range(4)))
            await store.add_member(key, "tag b0", 5)  # twice: once in the set
            seen: list[object] = [await store.members(key)]
            await store.remove_member(key, "tag b2")
            await store.remove_member(key, "tag gone")
            seen.append(await store.members(key))
            await store.add_member(key, "tag b9", 0.3)  # the set's time to live is renewed
            await asyncio.sleep(0.45)
            seen.append(await store.members(key))
            return seen
        finally:
            await store.aclose()

    assert run(go()) == [
        ["tag b0", "tag b1", "tag b2", "tag b3"],
        ["tag b0", "tag b1", "tag b3"],
        [],
    ]


def test_redis_that_is_not_there_raises_quickly_without_the_password(closed_port: int) -> None:
    url = f"redis://user:s3cret-pass@127.0.0.1:{closed_port}/0"

    async def go() -> None:
        store = RedisStore(url, timeout_s=0.5)
        assert "s3cret-pass" not in store.url
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            await store.get("k")
        assert time.monotonic() - started < 5  # bounded by the timeout, not a hang
        with pytest.raises(StoreUnavailable):
            await store.set("k", b"v", 1)
        assert "s3cret-pass" not in str(caught.value)
        assert str(closed_port) in str(caught.value)
        await store.aclose()

    run(go())


def test_a_redis_that_stalls_is_not_asked_again_for_a_second(redis_namespace: str) -> None:
    """Stored responses, conversations and batches had no pause after a failure (the
    cache and limits have their own): while Redis hung, every call waited its whole
    timeout, so every request with `store: true` took `timeout_s` longer. Now the call
    after a failure fails at once, without asking, and Redis is asked again after the
    pause: the store works again as soon as Redis answers."""
    clock = Clock()
    key = f"{redis_namespace}:k"

    async def go(url: str, proxy: object) -> None:
        store = RedisStore(url, timeout_s=0.2, clock=clock)
        await store.set(key, b"v", 60)
        proxy.stall()  # type: ignore[attr-defined]
        with pytest.raises(StoreUnavailable) as waited:
            await store.get(key)  # asked: its timeout
        assert waited.value.paused_s == 0
        clock.now += 0.5
        with pytest.raises(StoreUnavailable, match="not asked") as paused:
            await store.set(key, b"w", 60)
        assert paused.value.paused_s == pytest.approx(0.5)
        proxy.resume()  # type: ignore[attr-defined]
        with pytest.raises(StoreUnavailable, match="not asked"):
            await store.get(key)  # answering again, but still left alone
        clock.now += 0.6
        assert await store.get(key) == b"v"  # the set in the pause was never sent
        await store.aclose()

    with stall_proxy(REDIS_URL) as (proxy, url):
        run(go(url, proxy))


def test_calls_waiting_on_a_redis_that_hangs_give_up_when_one_fails(
    redis_namespace: str,
) -> None:
    """The pause after a failure spared only the calls made after it: each call already
    waiting on a Redis that hung waited out its own timeout (N requests under way, N
    timeouts). Now they give up when the first fails."""
    key = f"{redis_namespace}:k"

    async def go(url: str, proxy: object) -> None:
        store = RedisStore(url, timeout_s=0.5)
        await store.set(key, b"v", 60)
        proxy.stall()  # type: ignore[attr-defined]
        first = asyncio.create_task(store.get(key))
        await asyncio.sleep(0.2)
        with pytest.raises(StoreUnavailable, match="given up") as later:
            await store.get(key)  # made while the first waits: ends with it
        assert later.value.paused_s == 0  # asked: not to be asked again (an APPEND twice)
        with pytest.raises(StoreUnavailable) as failed:
            await first
        assert failed.value.paused_s == 0  # the one that failed: asked
        proxy.resume()  # type: ignore[attr-defined]
        await store.aclose()

    with stall_proxy(REDIS_URL) as (proxy, url):
        run(go(url, proxy))


def test_after_the_pause_one_call_asks_while_the_others_fail_at_once(
    redis_namespace: str,
) -> None:
    """Once the pause ended, every call made asked a Redis that may still hang, each
    waiting its timeout. Now one asks (a probe); the others fail at once while it does,
    and once it is answered they all ask again."""
    clock = Clock()
    key = f"{redis_namespace}:k"

    async def go(url: str, proxy: object) -> None:
        store = RedisStore(url, timeout_s=0.5, clock=clock)
        await store.set(key, b"v", 60)
        proxy.stall()  # type: ignore[attr-defined]
        with pytest.raises(StoreUnavailable):
            await store.get(key)
        clock.now += 1.5  # past the pause
        probe = asyncio.create_task(store.get(key))
        await asyncio.sleep(0.1)
        with pytest.raises(StoreUnavailable, match="another call asks") as refused:
            await store.get(key)
        assert refused.value.paused_s == 0.5  # the probe ends within its timeout
        proxy.resume()  # type: ignore[attr-defined]
        assert await probe == b"v"
        assert await asyncio.gather(store.get(key), store.get(key)) == [b"v", b"v"]
        await store.aclose()

    with stall_proxy(REDIS_URL) as (proxy, url):
        run(go(url, proxy))


def test_asked_waits_out_the_pause_and_asks_once(closed_port: int) -> None:
    """A background run's last write (its last events, its batch's last answers) made
    just after a failure is asked of Redis once the pause ends, not failed unasked;
    refused again while another call probes, it waits for that too."""
    calls: list[str] = []

    class Paused:
        def __init__(self, paused_s: float) -> None:
            self.paused_s = paused_s

        async def __call__(self) -> str:
            calls.append("called")
            if self.paused_s:
                paused, self.paused_s = self.paused_s, self.paused_s - 0.005
                raise StoreUnavailable("redis: not asked", paused)
            return "done"

    async def failing() -> None:
        calls.append("failed")
        raise StoreUnavailable("redis: refused")

    async def go() -> None:
        assert await asked(Paused(0.005)) == "done" and calls == ["called", "called"]
        calls.clear()
        # refused in the pause, then while another call probes: asked the third time
        assert await asked(Paused(0.01)) == "done" and calls == ["called"] * 3
        calls.clear()
        with pytest.raises(StoreUnavailable, match="not asked"):
            await asked(Paused(0.015))  # three tries at most
        assert calls == ["called"] * 3
        calls.clear()
        with pytest.raises(StoreUnavailable, match="refused"):
            await asked(failing)  # asked, and failed: not again
        assert calls == ["failed"]

    run(go())


def test_open_store_and_the_env_override() -> None:
    settings = CacheSettings()
    assert isinstance(open_store("memory", settings), MemoryStore)
    assert isinstance(open_store("redis://127.0.0.1:6379/0", settings), RedisStore)
    with pytest.raises(ConfigError, match="must be 'memory'") as caught:
        open_store("memcached://user:pw@host", settings)
    assert "pw" not in str(caught.value)
    assert resolve_cache_url(settings, {}) == "memory"
    assert resolve_cache_url(settings, {"LLMROUTE_CACHE_URL": "off"}) is None
    assert resolve_cache_url(settings, {"LLMROUTE_CACHE_URL": " redis://h:1/2 "}) == "redis://h:1/2"
    assert resolve_cache_url(CacheSettings(enabled=False), {}) is None


def _owned(key: str) -> str:
    return key.partition("/")[0]


def test_memory_with_owners_evicts_the_oldest_of_whoever_holds_the_most() -> None:
    """One owner filling the store loses its own oldest entries, never those of an
    owner holding less; an owner holding less writing into a full store evicts the
    oldest of the one holding the most."""
    store = MemoryStore(4, 10_000, owner_of=_owned)

    async def go() -> None:
        await store.set("bob/1", b"b", 60)
        for i in range(5):
            await store.set(f"alice/{i}", b"a", 60)
        assert [await store.get(f"alice/{i}") for i in range(5)] == [None, None, b"a", b"a", b"a"]
        assert await store.get("bob/1") == b"b"
        assert store.held("alice") == (3, 3) and store.held("bob") == (1, 1)
        await store.set("bob/2", b"b", 60)  # alice holds 3 > bob's 2: her oldest goes
        assert await store.get("alice/2") is None
        assert store.held("alice") == (2, 2) and store.held("bob") == (2, 2)
        await store.set("carol/1", b"c", 60)  # a tie: the owner whose oldest is older
        assert await store.get("alice/3") is None and await store.get("bob/1") == b"b"

    run(go())


def test_memory_with_owners_evicts_by_bytes_from_the_largest_sparing_the_new_entry() -> None:
    store = MemoryStore(100, 10, owner_of=_owned)

    async def go() -> None:
        for i in range(3):
            await store.set(f"alice/{i}", b"aa", 60)  # alice: 6 bytes
        await store.set("bob/1", b"bbbbbbb", 60)  # 13 > 10: bob's 7 are the most, but new
        assert await store.get("bob/1") == b"bbbbbbb"
        assert [await store.get(f"alice/{i}") for i in range(3)] == [None, None, b"aa"]
        assert store.size_bytes == 9 and store.held("alice") == (1, 2)
        await store.delete_prefix("bob/")
        assert store.held("bob") == (0, 0) and store.size_bytes == 2

    run(go())


def test_memory_evicts_an_owners_pinned_entries_last_and_counts_them() -> None:
    """Pinned entries (a running batch's answers) count in their owner's holding and go
    only once it has nothing else; unpinned, they are its most recently used; a single
    owner gets the same order. The fairness between owners is kept."""
    store = MemoryStore(4, 10_000, owner_of=_owned)

    async def go() -> None:
        await store.set_pinned("alice/p0", b"p", 60)
        await store.set_pinned("alice/p1", b"p", 60)
        for i in range(3):  # one owner: its unpinned entry goes, never a pinned one
            await store.set(f"alice/{i}", b"a", 60)
        assert await store.get("alice/0") is None and await store.get("alice/p0") == b"p"
        await store.set("bob/1", b"b", 60)  # alice holds 4 of 4: hers go, pinned last
        assert await store.get("alice/1") is None and await store.get("bob/1") == b"b"
        await store.set("bob/2", b"b", 60)
        assert await store.get("alice/2") is None and store.held("alice") == (2, 2)
        await store.set("bob/3", b"b", 60)  # bob holds the most now: his oldest goes
        assert await store.get("bob/1") is None and store.held("alice") == (2, 2)
        await store.set("alice/3", b"a", 60)  # alice's most, nothing else: a pinned one
        assert await store.get("alice/p0") is None and await store.get("alice/p1") == b"p"
        await store.unpin(["alice/p1", "alice/gone"])  # now her most recently used
        await store.set("alice/4", b"a", 60)
        assert await store.get("alice/3") is None and await store.get("alice/p1") == b"p"
        assert store.held("alice") == (2, 2) and store.held("bob") == (2, 2)

    run(go())


def test_memory_with_many_owners_always_evicts_from_one_holding_the_most() -> None:
    """Random writes, reads and deletes by 40 owners in a full store: each eviction
    takes an entry of an owner that held the most (the heap that finds it stays right
    as owners come, go and change)."""
    rng = random.Random(7)
    store = MemoryStore(50, 1 << 20, owner_of=_owned)
    owners = [f"o{i}" for i in range(40)]

    async def go() -> None:
        for step in range(3_000):
            owner = rng.choice(owners[: 2 + step % 40])
            key = f"{owner}/{rng.randrange(30)}"
            if rng.random() < 0.1:
                await store.delete(key)
                continue
            if rng.random() < 0.3:
                await store.get(key)
                continue
            before = {o: store.held(o)[0] for o in owners}
            fresh = await store.get(key) is None
            before[owner] += fresh
            await store.set(key, b"x", 60)
            after = {o: store.held(o)[0] for o in owners}
            lost = [o for o in owners if after[o] < before[o]]
            assert len(lost) <= 1
            if lost:
                most = max(n for o, n in before.items() if o != owner or n > 1)
                assert before[lost[0]] == most, (step, lost, before)
            assert len(store) <= 50

    run(go())


def test_a_call_refused_while_another_probes_pauses_neither_cache_nor_affinity(
    redis_namespace: str,
) -> None:
    """The cache and affinity leave Redis alone a second after a failure of their own.
    A call the store refused unasked, while another probed, counted as one: each was
    then off for a second more though the probe was answered (and affinity counted a
    Redis failure in ``llmroute_state_errors_total`` that never reached Redis)."""
    clock = Clock()
    results: list[str] = []
    errors: list[str] = []
    registry = parse_registry(AFFINITY_REGISTRY).registry
    assert registry.affinity is not None

    async def go(url: str, proxy: object) -> None:
        store = RedisStore(url, timeout_s=0.3, clock=clock)
        cache = ResponseCache(
            CacheSettings(), store, "v", on_result=results.append, outage_clock=clock
        )
        affinity = Affinity(
            registry.affinity,  # type: ignore[arg-type]
            registry,
            store,
            on_error=lambda: errors.append("affinity"),
        )
        await affinity._set("talk", "large")
        proxy.stall()  # type: ignore[attr-defined]
        assert await cache.get(f"{redis_namespace}:k", CacheDirectives()) is None
        await asyncio.sleep(1.05)  # affinity's own pause, on the monotonic clock
        clock.now += 1.5  # past the store's and the cache's pauses
        probe = asyncio.create_task(store.get(f"{redis_namespace}:k"))
        await asyncio.sleep(0.1)
        assert await cache.get(f"{redis_namespace}:k", CacheDirectives()) is None
        assert await affinity._get("talk") is None  # refused: the probe asks
        proxy.resume()  # type: ignore[attr-defined]
        assert await probe is None
        assert await cache.get(f"{redis_namespace}:k", CacheDirectives()) is None
        assert await affinity._get("talk") == "large"
        await affinity._store.delete(affinity._prefix + "talk")
        await store.aclose()

    with stall_proxy(REDIS_URL) as (proxy, url):
        run(go(url, proxy))
    assert results == ["error", "error", "miss"]
    assert errors == []  # affinity asked nothing that failed


def test_a_redis_listing_that_lost_its_sizes_keeps_bounding_and_answering(
    redis_namespace: str,
) -> None:
    """The sizes hash beside a listing gone while its sorted set stays (Redis's own
    ``maxmemory`` eviction takes one key, or a forget's delete by prefix races a
    write): the next writes past the bound still evict the oldest and answer, and a
    delete leaves no key without expiry; the sorted set gone instead, the sizes left
    count no more (on the old code the script failed on ``HINCRBY -0``, every write of
    that key a `StoreUnavailable` pausing the whole store, a delete made the hash again
    with no expiry, and with the set gone each write of the key evicted itself)."""
    listing = f"{redis_namespace}:listing"
    cap = Cap(entries=2)

    async def go() -> None:
        store = RedisStore(REDIS_URL, timeout_s=2)
        for i in range(2):
            assert await store.set_listed(f"{redis_namespace}:{i}", b"v", 60, listing, [], cap)
        with redis.Redis.from_url(REDIS_URL) as direct:
            direct.delete(f"{listing}:sizes")
            for i in range(2, 4):
                key = f"{redis_namespace}:{i}"
                assert await store.set_listed(key, b"v", 60, listing, [], cap)
            assert await store.get(f"{redis_namespace}:1") is None
            assert await store.get(f"{redis_namespace}:3") == b"v"
            direct.delete(f"{listing}:sizes")
            assert await store.delete_listed(f"{redis_namespace}:3", listing)
            assert all(direct.pttl(k) > 0 for k in direct.scan_iter(f"{redis_namespace}:*"))
            # the sorted set lost instead: the sizes it leaves no longer count
            small = Cap(size=3)
            for i in range(3):
                key = f"{redis_namespace}:s{i}"
                assert await store.set_listed(key, b"v", 60, f"{listing}2", [], small)
            direct.delete(f"{listing}2")
            assert await store.set_listed(
                f"{redis_namespace}:s3", b"v", 60, f"{listing}2", [], small
            )
        await store.aclose()

    run(go())
