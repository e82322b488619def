"""Limits and shared breakers on a Redis that hangs, behind a stall proxy: the calls
under way give up when one fails, and after the pause one asks while the others fail at
once (`llmroute.state.answering`, as the stores do). Redis's error replies (a key of the
wrong type) fail that call alone; `asked` goes as soon as the probe it waited on is
answered; and a rpm take whose answer was lost is given back."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
import redis
from private_redis import loading_redis, private_redis, without_select
from redis_service import REDIS_URL, past_databases
from stall_proxy import StallProxy, stall_proxy

from llmroute.dispatch.affinity import Affinity
from llmroute.registry import parse_registry
from llmroute.registry.schema import CacheSettings
from llmroute.state import RedisLimits, RedisStore, StoreUnavailable
from llmroute.state.answering import Answering
from llmroute.state.breakers import RedisBreakers
from llmroute.state.limits import NOT_HELD, UNCOUNTED_SLOT, UsdHold
from llmroute.state.redis_conn import RETRY_AFTER_S, connect, sent
from llmroute.state.response_cache import CacheDirectives, ResponseCache
from llmroute.state.semantic_index import Query, RedisSemanticIndex, word_pairs
from llmroute.state.stores import asked

TIMEOUT_S = 0.5
CALLS = 4
NOW = 6030.0  # half way through a minute (the rpm window's)

AFFINITY_REGISTRY = """
encoder: builtin:static
providers: {p: {kind: openai, base_url: "http://127.0.0.1:9/v1"}}
models:
  small: {provider: p, model: up-small}
routes:
  - {name: chitchat, examples: [hello there], target: small}
default: {target: small}
affinity: {}
"""

Call = Callable[[], Awaitable[Any]]


def _component(kind: str, url: str, namespace: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    """One call of the `kind` component on `url`, and how to close it."""
    if kind == "limits":
        limits = RedisLimits(url, TIMEOUT_S, namespace, clock=lambda: NOW)
        return (lambda: limits.take("k", 1000)), (lambda: limits.aclose(0))
    if kind == "semantic":  # the cache's lookup by meaning: it fails, the cache misses
        index = RedisSemanticIndex(url, TIMEOUT_S, namespace, 8)
        query = Query(np.ones(4, dtype=np.float32) / 2, word_pairs("hello"), 0.9)
        return (lambda: index.nearest("context", query)), index.aclose
    breakers = RedisBreakers(url, TIMEOUT_S, namespace)
    return (lambda: breakers.open_for("d")), breakers.aclose


async def _waited(call: Call) -> float:
    started = time.monotonic()
    with contextlib.suppress(StoreUnavailable, redis.RedisError):
        await call()
    return time.monotonic() - started


@pytest.mark.parametrize("kind", ["limits", "breakers", "semantic"])
def test_a_redis_that_hangs_costs_one_timeout_not_one_per_call(
    kind: str, redis_namespace: str
) -> None:
    """Limits, shared breakers and the cache's index by meaning paused after a failure,
    but each call already waiting on a Redis that hung waited out its own timeout (N
    calls under way, N timeouts), and after the pause every call asked it again (the
    index had no pause of its own). Now they give up with the first, and then one asks
    while the others are let through at once."""

    async def go(url: str, proxy: StallProxy) -> None:
        call, close = _component(kind, url, redis_namespace)
        await call()  # connected
        proxy.stall()
        under_way = []
        for _ in range(CALLS):  # each started a fifth of the timeout after the last
            under_way.append(asyncio.create_task(_waited(call)))
            await asyncio.sleep(TIMEOUT_S / 5)
        waited = await asyncio.gather(*under_way)
        # the last started 3/5 of a timeout after the first, and ended with it
        assert waited[-1] / waited[0] < 0.75, waited
        await asyncio.sleep(RETRY_AFTER_S + 0.1)  # past the pause
        after = [asyncio.create_task(_waited(call)) for _ in range(CALLS)]
        await asyncio.sleep(TIMEOUT_S / 4)
        assert sum(task.done() for task in after) == CALLS - 1  # one probe asks
        proxy.resume()
        await asyncio.gather(*after)
        await close()

    with stall_proxy(REDIS_URL) as (proxy, url):
        asyncio.run(go(url, proxy))


@pytest.mark.parametrize("staggered", [False, True], ids=["at-once", "staggered"])
@pytest.mark.parametrize("kind", ["limits", "breakers"])
def test_a_redis_that_hangs_counts_one_failure_not_one_per_call_under_way(
    kind: str, staggered: bool, redis_namespace: str
) -> None:
    """``llmroute_state_errors_total`` counts about one failure a second per feature and
    process (the calls refused unasked in the pause are not counted), but each call under
    way that gave up with the first to time out was counted too: a chaos run whose Redis
    hung with 6 requests under way counted 6, so the metric's rate measured the load, not
    the outage. Only the first to fail is counted, and logged: the others timed out with
    it (started at once) or were cut short by it (`staggered`)."""
    failures: list[None] = []

    def failed() -> None:
        failures.append(None)

    async def go(url: str, proxy: StallProxy) -> None:
        if kind == "limits":
            limits = RedisLimits(
                url, TIMEOUT_S, redis_namespace, clock=lambda: NOW, on_error=failed
            )
            call, close = (lambda: limits.take("k", 1000)), (lambda: limits.aclose(0))
        else:
            breakers = RedisBreakers(url, TIMEOUT_S, redis_namespace, on_error=failed)
            call, close = (lambda: breakers.open_for("d")), breakers.aclose
        await call()  # connected
        proxy.stall()
        under_way = []
        for _ in range(CALLS):
            under_way.append(asyncio.create_task(_waited(call)))
            await asyncio.sleep(TIMEOUT_S / 5 if staggered else 0)
        await asyncio.gather(*under_way)
        proxy.resume()
        await close()

    with stall_proxy(REDIS_URL) as (proxy, url):
        asyncio.run(go(url, proxy))
    assert len(failures) == 1


def test_an_error_reply_fails_that_call_alone(redis_namespace: str) -> None:
    """A Redis error reply (WRONGTYPE here; OOM, READONLY alike) was taken for Redis
    down: the calls under way gave up, and every component left Redis alone a second
    (limits let requests through uncounted, the cache and affinity went without it).
    A reply proves Redis answers: the call fails, as its component's policy says, and
    nothing else does."""
    wrong = f"{redis_namespace}:list"
    client = redis.Redis.from_url(REDIS_URL)
    client.rpush(wrong, "x")
    client.rpush(f"{redis_namespace}:rpm:k:{int(NOW // 60)}", "x")
    client.close()
    results: list[str] = []
    registry = parse_registry(AFFINITY_REGISTRY).registry
    assert registry.affinity is not None

    async def go() -> None:
        limits = RedisLimits(REDIS_URL, 1.0, redis_namespace, clock=lambda: NOW)
        assert await limits.take("k", 10) == 0.0  # its counter a list: let through
        assert limits.answering
        limits._script.sha = "0" * 40  # NOSCRIPT: loaded, and run all the same
        assert await limits.take("other", 10) == 1.0  # asked, and counted
        await limits.aclose(0)

        store = RedisStore(REDIS_URL, 1.0)
        cache = ResponseCache(CacheSettings(), store, "v", on_result=results.append)
        assert await cache.get(wrong, CacheDirectives()) is None
        assert await cache.get(f"{redis_namespace}:none", CacheDirectives()) is None
        await store.aclose()
        store = RedisStore(REDIS_URL, 1.0)
        affinity = Affinity(registry.affinity, registry, store)  # type: ignore[arg-type]
        affinity._prefix = f"{redis_namespace}:"
        assert await affinity._get("list") is None
        await affinity._set("talk", "small")
        assert await affinity._get("talk") == "small"
        await store.aclose()

        conn = connect(REDIS_URL, 1.0, "test")
        answering, client = Answering.of(conn, 1.0), conn.client

        async def blpop() -> object:
            async with answering():
                return await client.blpop([f"{redis_namespace}:empty"], timeout=0.3)

        async def get_wrong() -> object:
            async with answering():
                return await client.get(wrong)

        waiting = asyncio.create_task(blpop())
        await asyncio.sleep(0.05)
        with pytest.raises(StoreUnavailable, match="WRONGTYPE") as replied:
            await get_wrong()
        assert replied.value.replied and not replied.value.paused_s
        assert await waiting is None  # not cut: it waited for its own answer
        await conn.aclose()

    asyncio.run(go())
    assert results == ["error", "miss"]


@pytest.mark.parametrize("kind", ["slot", "tokens", "settle"])
def test_a_give_back_redis_refuses_with_an_error_is_dropped(
    kind: str, redis_namespace: str
) -> None:
    """A give-back (or a budget settle) answered with an error reply (WRONGTYPE: a
    foreign key where its counter was) was kept at the head of its queue, and made
    again before every later count, failing each time: every take, slot and token hold
    was let through uncounted (and every budget read said 0). Asked again, it fails
    again: it is dropped, and counting goes on."""
    raw = redis.Redis.from_url(REDIS_URL)
    ns = redis_namespace

    async def go() -> list[Any]:
        limits = RedisLimits(REDIS_URL, 1.0, ns, clock=lambda: NOW)
        try:
            if kind == "slot":
                slot = await limits.take_slot("d", 4)
                assert slot
                raw.delete(f"{ns}:inflight:d")
                raw.rpush(f"{ns}:inflight:d", "x")
                await limits.give_slot("d", slot)
                counted = [await limits.take_slot("other", 1), await limits.take_slot("other", 1)]
                return [bool(counted[0]), counted[1]]
            if kind == "tokens":
                minute = await limits.hold_tokens("k", 10, 1000)
                assert minute is not None
                raw.delete(f"{ns}:tpm:k:{minute}")
                raw.rpush(f"{ns}:tpm:k:{minute}", "x")
                await limits.release_tokens("k", minute, 10)
                held = await limits.hold_tokens("other", 10, 1000)
                return [held == minute, await limits.tokens("other")]
            hold, _ = await limits.hold_usd("bad", "day", 0.1, 1.0)
            assert hold is not None
            raw.delete(f"{ns}:usd:bad:{hold.window}:holds")
            raw.rpush(f"{ns}:usd:bad:{hold.window}:holds", "x")
            await limits.settle_usd(hold, 0.05)
            assert (await limits.hold_usd("good", "day", 0.3, 1.0))[0] is not None
            return [limits.answering, await limits.spent("good", "day")]
        finally:
            await limits.aclose(0)

    try:
        expected = {"slot": [True, None], "tokens": [True, 10.0], "settle": [True, 0.3]}
        assert asyncio.run(go()) == expected[kind]
    finally:
        raw.close()


@pytest.mark.parametrize("state", ["readonly", "oom", "busy"])
def test_a_settle_redis_refuses_for_now_is_kept_and_made_later(state: str) -> None:
    """A budget settle answered with an error reply that refuses for now was dropped as
    one refused for good (WRONGTYPE) is: READONLY from a replica until a failover ends
    (the hold counted until its lease lapsed, 30 min, and the call's cost never), OOM
    under maxmemory (a hold that never went in: its cost never counted), BUSY while a
    script runs long. It is kept and made once the pause after it is over, as a settle
    Redis did not answer. A Redis of the test's own: the shared one must not be put in
    those states."""
    with private_redis() as url:
        raw = redis.Redis.from_url(url)
        looping: list[threading.Thread] = []

        async def go() -> list[Any]:
            limits = RedisLimits(url, 2.0, "ns", clock=lambda: NOW)
            try:
                held, _ = await limits.hold_usd("m", "day", 0.4, 1.0)
                assert held is not None
                hold = held
                if state == "readonly":
                    raw.execute_command("REPLICAOF", "127.0.0.1", "1")  # nobody there
                elif state == "oom":  # a hold that never went in (Redis was down)
                    hold = UsdHold("m", held.window, "never-held", 0.4, held.keep_s)
                    raw.config_set("maxmemory", 1)
                else:
                    raw.config_set("busy-reply-threshold", 100)
                    looping.append(threading.Thread(target=_loop_forever, args=(url,)))
                    looping[0].start()
                    await asyncio.sleep(0.3)  # past the threshold: others get BUSY
                await limits.settle_usd(hold, 0.05)
                seen: list[Any] = [len(limits._pending), limits.answering]
                if state == "readonly":
                    raw.execute_command("REPLICAOF", "NO", "ONE")
                elif state == "oom":
                    raw.config_set("maxmemory", 0)
                else:
                    raw.script_kill()
                    looping[0].join(5)
                await asyncio.sleep(RETRY_AFTER_S + 0.05)  # the pause after a refusal
                spent = await limits.spent("m", "day")
                return [*seen, round(spent, 9), len(limits._pending)]
            finally:
                await limits.aclose(0)

        try:
            expected = {"readonly": 0.05, "oom": 0.45, "busy": 0.05}[state]
            assert asyncio.run(go()) == [1, True, expected, 0]
        finally:
            raw.close()


@pytest.mark.parametrize("kind", ["slot", "tokens"])
def test_a_give_back_redis_refuses_for_now_is_kept_and_made_later(kind: str) -> None:
    """A slot's or a tpm hold's give-back answered ``READONLY`` (a replica until a
    failover ends: nothing of it made) was dropped as one refused for good: the slot
    stayed taken until its lease lapsed (10 min: a ``max_in_flight`` of 1 refused every
    call meanwhile), the tokens counted for their minute. It is kept, as a budget
    settle refused for now is, and made once the pause after the refusal is over."""
    with private_redis() as url:
        raw = redis.Redis.from_url(url)

        async def go() -> list[Any]:
            limits = RedisLimits(url, 2.0, "ns", clock=lambda: NOW)
            try:
                if kind == "slot":
                    slot = await limits.take_slot("d", 1)
                    assert slot
                else:
                    minute = await limits.hold_tokens("k", 900, 1000)
                    assert minute is not None and minute != NOT_HELD
                raw.execute_command("REPLICAOF", "127.0.0.1", "1")  # nobody there
                if kind == "slot":
                    await limits.give_slot("d", slot)
                else:
                    await limits.release_tokens("k", minute, 900)
                seen: list[Any] = [sum(limits._left()), limits.answering]
                raw.execute_command("REPLICAOF", "NO", "ONE")
                await asyncio.sleep(RETRY_AFTER_S + 0.05)  # the pause after a refusal
                if kind == "slot":
                    again = await limits.take_slot("d", 1)
                    return [*seen, bool(again), sum(limits._left())]
                held = await limits.hold_tokens("k", 900, 1000)
                return [*seen, held not in (None, NOT_HELD), sum(limits._left())]
            finally:
                await limits.aclose(0)

        try:
            assert asyncio.run(go()) == [1, True, True, 0]
        finally:
            raw.close()


def _loop_forever(url: str) -> None:
    """A script that keeps Redis busy until ``SCRIPT KILL``."""
    with redis.Redis.from_url(url) as busy, contextlib.suppress(redis.RedisError):
        busy.eval("while true do end", 0)


def test_which_error_replies_refuse_for_now() -> None:
    """Codes redis-py has no class for (BUSY, MISCONF...), and those Redis before 7
    wrapped in a script's ERR, are read from the reply."""
    answering = Answering("redis://h:1", 1.0, (redis.RedisError,), replies=(redis.ResponseError,))
    replies = {
        "BUSY Redis is busy running a script.": True,
        "MISCONF Redis is configured to save RDB snapshots, but it's unable to": True,
        "Error running script (call to f_1): @user_script:8: @user_script: 8: -READONLY "
        "You can't write against a read only replica.": True,
        "WRONGTYPE Operation against a key holding the wrong kind of value": False,
        "ERR Error running script: attempt to compare nil with number": False,
    }

    async def go(reply: str) -> bool:
        with pytest.raises(StoreUnavailable) as refused:
            async with answering():
                raise redis.ResponseError(reply)
        assert refused.value.replied
        return refused.value.transient

    assert {reply: asyncio.run(go(reply)) for reply in replies} == replies


def test_asked_goes_as_soon_as_the_probe_is_answered(redis_namespace: str) -> None:
    """`asked` refused while another call probed slept the store's whole timeout, even
    when the probe was answered at once. Now it waits on the probe's outcome."""
    timeout_s = 1.0
    clock = [100.0]
    key = f"{redis_namespace}:k"

    async def go(url: str, proxy: StallProxy) -> None:
        store = RedisStore(url, timeout_s, clock=lambda: clock[0])
        await store.set(key, b"v", 60)
        proxy.stall()
        with pytest.raises(StoreUnavailable):
            await store.get(key)
        clock[0] += RETRY_AFTER_S + 0.5  # past the pause
        probe = asyncio.create_task(store.get(key))
        await asyncio.sleep(0.05)
        waiter = asyncio.create_task(asked(lambda: store.get(key)))
        await asyncio.sleep(0.05)
        assert not waiter.done()  # refused: waits
        proxy.resume()
        assert await probe == b"v"
        done, _ = await asyncio.wait({waiter}, timeout=timeout_s / 2)
        assert waiter in done and waiter.result() == b"v"
        await store.aclose()

    with stall_proxy(REDIS_URL) as (proxy, url):
        asyncio.run(go(url, proxy))


def test_a_take_whose_answer_was_lost_is_given_back(redis_namespace: str) -> None:
    """A rpm take that Redis counted but whose answer came after the timeout let the
    request through uncounted, and its count stayed in Redis: the minute held one
    request too many (refusing one). Now it is given back before the next take."""

    async def go(url: str, proxy: StallProxy) -> None:
        limits = RedisLimits(url, 0.3, redis_namespace, clock=lambda: NOW)
        assert await limits.requests("k") == 0.0  # connected
        proxy.stall_replies()
        assert await limits.take("k", 10) == 0.0  # counted in Redis; the answer lost
        proxy.resume()
        await asyncio.sleep(limits._outage.left_s() + 0.05)  # the outage's pause
        assert await limits.take("k", 10) == 1.0
        assert await limits.requests("k") == 1.0
        await limits.aclose(0)

    with stall_proxy(REDIS_URL) as (proxy, url):
        asyncio.run(go(url, proxy))


def test_a_token_hold_whose_answer_was_lost_is_given_back(redis_namespace: str) -> None:
    """A tpm hold that Redis made but whose answer came after the timeout let the request
    through unheld (nothing to give back), so its estimate stayed in the minute beside
    the request's real tokens, counted when it finished: both, until the minute left the
    window. Now the hold is given back before the next count, as a lost take is."""

    async def go(url: str, proxy: StallProxy) -> float:
        limits = RedisLimits(url, 1.0, redis_namespace, clock=lambda: NOW)  # not flaky
        assert await limits.tokens("k") == 0.0  # connected
        proxy.stall_replies()
        assert await limits.hold_tokens("k", 100, 1000) == NOT_HELD  # held; answer lost
        proxy.resume()
        await asyncio.sleep(limits._outage.left_s() + 0.05)  # the outage's pause
        await limits.add_tokens("k", 7)  # the request's real tokens
        assert await limits.hold_tokens("other", 1, 1000) == int(NOW // 60)  # the next count
        used = await limits.tokens("k")
        await limits.aclose(0)
        return used

    with stall_proxy(REDIS_URL) as (proxy, url):
        assert asyncio.run(go(url, proxy)) == 7.0


@pytest.mark.parametrize("kind", ["take", "tokens"])
def test_a_give_back_whose_answer_was_lost_is_not_made_twice(
    kind: str, redis_namespace: str
) -> None:
    """A give-back (a lost take's, or a token hold's release: a DECRBY) that Redis made
    but whose answer came after the timeout was kept and made again before the next
    count: the second DECRBY gave another request's count back (one more request, or a
    hold's tokens, let through that minute). It may have been made: it is dropped, as
    one whose caller was cancelled is."""

    async def go(url: str, proxy: StallProxy) -> None:
        limits = RedisLimits(url, 0.3, redis_namespace, clock=lambda: NOW)
        count = limits.requests if kind == "take" else limits.tokens

        async def counted() -> None:  # one request counted: a take, or a hold of 10
            if kind == "take":
                await limits.take("k", 100)
            else:
                await limits.hold_tokens("k", 10, 1000)

        async def past_the_pause() -> None:
            await asyncio.sleep(limits._outage.left_s() + RETRY_AFTER_S + 0.05)

        await counted()
        if kind == "take":  # one more counted, whose answer is lost: its give-back queued
            proxy.stall_replies()
            await counted()
            proxy.resume()
            await past_the_pause()
            await limits.requests("k")  # connected again
        proxy.stall_replies()  # the give-back is made in Redis; its answer is lost
        if kind == "take":
            await limits.take("other", 100)  # the queued give-back is made first
        else:
            await limits.release_tokens("k", int(NOW // 60), 10)
        proxy.resume()
        await past_the_pause()
        await counted()  # another request's count: not given back
        assert await count("k") == (2.0 if kind == "take" else 10.0)
        await limits.aclose(0)

    with stall_proxy(REDIS_URL) as (proxy, url):
        asyncio.run(go(url, proxy))


def test_a_connection_lost_once_the_command_was_sent_may_have_made_it(
    redis_namespace: str, closed_port: int
) -> None:
    """redis-py raises the same ``ConnectionError`` for a connection reset once the
    command was sent (Redis may have run it) as for one refused before anything was
    sent; the limits read the first as "not made", where they read a timeout, the same
    doubt, as "maybe made". A connection lost while the reply is awaited now says it
    may have been made (`maybe_made`, as a timeout does); one refused does not."""
    key = f"{redis_namespace}:cut"

    async def call(url: str) -> StoreUnavailable:
        redis_conn = connect(url, 1.0, "test")
        answering = Answering.of(redis_conn, 1.0)
        try:
            with contextlib.suppress(StoreUnavailable):  # connected (a refused one fails)
                async with answering():
                    await redis_conn.client.ping()
            await asyncio.sleep(RETRY_AFTER_S + 0.05)  # a refused one's pause
            proxy.cut_replies()
            with pytest.raises(StoreUnavailable) as failed:
                async with answering():
                    await redis_conn.client.incr(key)
            return failed.value
        finally:
            proxy.resume()
            await redis_conn.aclose()

    raw = redis.Redis.from_url(REDIS_URL)
    try:
        with stall_proxy(REDIS_URL) as (proxy, url):
            lost = asyncio.run(call(url))
            refused = asyncio.run(call(f"redis://127.0.0.1:{closed_port}/0"))
        assert raw.get(key) == b"1"  # made, its reply lost with its connection
    finally:
        raw.close()
    assert lost.maybe_made and not lost.replied and "once the command was sent" in str(lost)
    assert not refused.maybe_made


def test_an_error_reply_redis_py_raises_as_a_connection_error_was_not_made() -> None:
    """redis-py raises some error replies as ``ConnectionError``s: ``LOADING`` (a Redis
    restarted, loading its data: every command refused for seconds), ``NOAUTH``,
    ``WRONGPASS``, max clients. The client `connect` makes read every
    ``ConnectionError`` out of ``parse_response`` as a connection lost once the command
    was sent (`ReplyLost`: maybe made), so while Redis loaded each take, tpm hold and
    slot queued a give-back of a count never made, each made once it had loaded: one
    more request through per refused one, for every rpm and tpm key counted meanwhile.
    An error reply is Redis's answer that it did not make the command. ``LOADING``
    refuses every call, so it counts as Redis down (paused for, not an error reply
    that fails its call alone: nor one that "refuses for now", whose pattern never saw
    it)."""

    async def go(url: str) -> tuple[bool, list[int]]:
        redis_conn = connect(url, 2.0, "test")
        answering = Answering.of(redis_conn, 2.0)
        try:
            with pytest.raises(redis.BusyLoadingError) as refused:
                await redis_conn.client.incr("k")
            with pytest.raises(StoreUnavailable) as down:
                async with answering():
                    await redis_conn.client.incr("k")
            failed = down.value
            assert (failed.replied, failed.transient, failed.maybe_made) == (False,) * 3
            assert ": refused: Redis is loading the dataset" in str(failed)
            with pytest.raises(StoreUnavailable) as paused:  # down: not asked again yet
                async with answering():
                    pytest.fail("asked while Redis was taken for down")
            assert paused.value.paused_s > 0
        finally:
            await redis_conn.aclose()
        limits = RedisLimits(url, 2.0, "ns", clock=lambda: NOW)
        try:
            assert await limits.take("k", 10) == 0.0  # let through, uncounted
            await asyncio.sleep(limits._outage.left_s() + 0.05)
            assert await limits.hold_tokens("k", 100, 1000) == NOT_HELD
            await asyncio.sleep(limits._outage.left_s() + 0.05)
            assert await limits.take_slot("d", 3) == UNCOUNTED_SLOT
            queued = [len(limits._takes_back), len(limits._tokens_back), len(limits._slots_back)]
        finally:
            await limits.aclose(0)
        return sent(refused.value), queued

    with loading_redis() as url:
        assert asyncio.run(go(url)) == (False, [0, 0, 0])


@pytest.mark.parametrize("where", ["refused", "db past databases", "select refused"])
def test_a_db_past_databases_is_redis_down_as_a_refused_connection_is(
    where: str, redis_namespace: str, closed_port: int
) -> None:
    """A URL's db past the server's ``databases`` fails every call at connect, as a
    refused connection does; so does any error reply to the connection's handshake
    (here an ACL user who may not ``SELECT`` the URL's db). It was taken for an error
    reply (Redis answers): no pause, so every request asked again and failed, each
    counted and each costing a round trip. It is a Redis the feature cannot use: each
    feature does what it does when Redis is down (limits let through, breakers per
    process, the cache misses), and leaves it alone a second."""
    with contextlib.ExitStack() as stack:
        if where == "refused":
            url = f"redis://127.0.0.1:{closed_port}/0"
        elif where == "db past databases":
            url = past_databases()[0]
        else:
            url = without_select(stack.enter_context(private_redis()), "pw")
        _down_as_refused(url, redis_namespace)


def _down_as_refused(url: str, redis_namespace: str) -> None:
    async def go() -> dict[str, object]:
        conn = connect(url, 1.0, "test")
        answering = Answering.of(conn, 1.0)
        try:
            with pytest.raises(StoreUnavailable) as down:
                async with answering():
                    await conn.client.get(f"{redis_namespace}:k")
            with pytest.raises(StoreUnavailable) as paused:  # down: not asked again yet
                async with answering():
                    pytest.fail("asked while Redis was taken for down")
        finally:
            await conn.aclose()
        failed = down.value
        limits = RedisLimits(url, 1.0, redis_namespace, clock=lambda: NOW)
        breakers = RedisBreakers(url, 1.0, redis_namespace)
        store = RedisStore(url, 1.0)
        results: list[str] = []
        cache = ResponseCache(CacheSettings(), store, "v", on_result=results.append)
        try:
            took = await limits.take("k", 10)
            opened = await breakers.open_for("d")
            got = await cache.get(f"{redis_namespace}:c", CacheDirectives())
            downs = [c._outage.down() for c in (limits, breakers, cache)]
        finally:
            await limits.aclose(0)
            await breakers.aclose()
            await store.aclose()
        return {
            "reply": (failed.replied, failed.transient, failed.maybe_made),
            "paused": paused.value.paused_s > 0,
            "served": (took, opened, got, results),
            "down": downs,
        }

    assert asyncio.run(go()) == {
        "reply": (False, False, False),
        "paused": True,
        "served": (0.0, None, None, ["error"]),
        "down": [True, True, True],
    }


@pytest.mark.parametrize("kind", ["take", "tokens"])
def test_a_count_whose_connection_was_lost_once_sent_is_given_back(
    kind: str, redis_namespace: str
) -> None:
    """A rpm take or tpm hold Redis made whose connection was reset before its reply
    came back let the request through uncounted, and its count stayed in Redis until
    its minute left the window (the slot of such a take was given back: the two
    disagreed). It may have been made: given back before the next count, as one whose
    answer came too late is."""

    async def go(url: str, proxy: StallProxy) -> float:
        limits = RedisLimits(url, 1.0, redis_namespace, clock=lambda: NOW)
        try:
            assert await limits.requests("k") == 0.0  # connected
            proxy.cut_replies()
            if kind == "take":
                assert await limits.take("k", 10) == 0.0  # counted; its connection reset
            else:
                assert await limits.hold_tokens("k", 100, 1000) == NOT_HELD
            proxy.resume()
            await asyncio.sleep(limits._outage.left_s() + 0.05)  # the outage's pause
            if kind == "take":
                assert await limits.take("k", 10) == 1.0  # the lost one given back first
                return await limits.requests("k")
            assert await limits.hold_tokens("other", 1, 1000) == int(NOW // 60)
            return await limits.tokens("k")
        finally:
            await limits.aclose(0)

    with stall_proxy(REDIS_URL) as (proxy, url):
        assert asyncio.run(go(url, proxy)) == (1.0 if kind == "take" else 0.0)


def test_a_retired_versions_give_backs_are_made_by_the_next_one(redis_namespace: str) -> None:
    """A reload that swaps the registry opens new limits (one a version, on the same
    Redis and namespace), and the old version's close tries what Redis did not take yet
    for at most 1.5 s, then drops it. A chaos run whose Redis hung, then went away while
    a reload retired a version, left that version's 3 slots of the slow model taken for
    their 10-minute lease (its whole cap: every request after went to the fallback) and
    5 budget holds until theirs lapsed, though the process went on with the same Redis.
    The next limits on that Redis and namespace takes them over, made before its next
    count as its own are."""

    async def go(url: str, proxy: StallProxy) -> int:
        old = RedisLimits(url, 1.0, redis_namespace, clock=lambda: NOW)
        new = RedisLimits(url, 1.0, redis_namespace, clock=lambda: NOW)
        try:
            warm = await old.take_slot("d", 3)  # connected, its script loaded
            assert warm not in (None, UNCOUNTED_SLOT)
            await old.give_slot("d", warm)
            proxy.cut_replies()
            assert await old.take_slot("d", 3) == UNCOUNTED_SLOT  # taken, its answer lost
            proxy.resume()
            proxy.refuse()  # Redis goes away as the old version retires
            await old.aclose(0.2)
            proxy.resume()
            slot = await new.take_slot("d", 3)  # the old one's given back first
            assert slot not in (None, UNCOUNTED_SLOT)
            await new.give_slot("d", slot)
        finally:
            await new.aclose(0)
        with redis.Redis.from_url(REDIS_URL) as client:
            return int(client.zcard(f"{redis_namespace}:inflight:d"))

    with stall_proxy(REDIS_URL) as (proxy, url):
        assert asyncio.run(go(url, proxy)) == 0


def test_a_retired_version_makes_its_give_backs_itself_once_redis_answers(
    redis_namespace: str,
) -> None:
    """A retired version's close hands what Redis did not take to the next version only
    when Redis does not take it now: handed over while Redis answered, a slot waited for
    the next version's next count (one of its slots, rpm or tpm: a settle, for a budget
    read), though the close could make it at once; a version with no such count, or a
    process no request reaches, left it taken for its lease (10 min)."""

    async def go(url: str, proxy: StallProxy) -> tuple[int, int]:
        old = RedisLimits(url, 1.0, redis_namespace, clock=lambda: NOW)
        new = RedisLimits(url, 1.0, redis_namespace, clock=lambda: NOW)
        try:
            warm = await old.take_slot("d", 3)  # connected, its script loaded
            assert warm not in (None, UNCOUNTED_SLOT)
            await old.give_slot("d", warm)
            proxy.cut_replies()
            assert await old.take_slot("d", 3) == UNCOUNTED_SLOT  # taken, its answer lost
            proxy.resume()
            await asyncio.sleep(old._outage.left_s() + 0.05)  # Redis answers again
            await old.aclose(0.5)
            with redis.Redis.from_url(REDIS_URL) as client:
                return int(client.zcard(f"{redis_namespace}:inflight:d")), len(new._slots_back)
        finally:
            await new.aclose(0)

    with stall_proxy(REDIS_URL) as (proxy, url):
        assert asyncio.run(go(url, proxy)) == (0, 0)


def test_a_slot_redis_refused_to_connect_for_is_not_given_back_later(closed_port: int) -> None:
    """`take_slot` queued a give-back for any failure it asked Redis about, a connection
    refused too, where nothing was sent: a ZREM of nothing, a round trip before a later
    count, and room taken in the queue from give-backs that count. Only one that may
    have been made (its answer lost) is queued, as for the other counts."""

    async def go() -> int:
        limits = RedisLimits(f"redis://127.0.0.1:{closed_port}/0", 0.5, "ns")
        try:
            assert await limits.take_slot("d", 3) == UNCOUNTED_SLOT
            return len(limits._slots_back)
        finally:
            await limits.aclose(0)

    assert asyncio.run(go()) == 0


@pytest.mark.parametrize("kind", ["take", "tokens", "slot"])
def test_a_count_whose_caller_is_cancelled_once_redis_was_asked_is_given_back(
    kind: str, redis_namespace: str
) -> None:
    """A rpm take, tpm hold or in-flight slot whose request was cancelled while Redis
    answered (its client hung up) was counted in Redis with nothing to give it back: a
    request that went no further counted against its rpm or tpm for up to two minutes,
    and a slot stayed taken for its lease (10 min). One cancelled once it was sent is
    given back before the next count, as one whose answer was lost is (had Redis not
    made it, one more request goes through that minute); one cancelled before it was
    sent (here: connecting) was not made, and is not."""
    raw = redis.Redis.from_url(REDIS_URL)
    minute = int(NOW // 60)
    counted = {
        "take": f"{redis_namespace}:rpm:k:{minute}",
        "tokens": f"{redis_namespace}:tpm:k:{minute}",
        "slot": f"{redis_namespace}:inflight:k",
    }[kind]

    def count(limits: RedisLimits) -> Awaitable[object]:
        if kind == "take":
            return limits.take("k", 10)
        if kind == "tokens":
            return limits.hold_tokens("k", 100, 1000)
        return limits.take_slot("k", 3)

    async def cancelled(limits: RedisLimits, made: bool) -> None:
        asking = asyncio.ensure_future(count(limits))
        await asyncio.sleep(0.1)
        for _ in range(200):  # until Redis made it (bounded: 2 s)
            if not made or raw.exists(counted):
                break
            await asyncio.sleep(0.01)
        asking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asking

    async def go(url: str, proxy: StallProxy) -> list[int]:
        limits = RedisLimits(url, 2.0, redis_namespace, clock=lambda: NOW)
        try:
            proxy.stall()  # not connected yet: cancelled while connecting
            await cancelled(limits, made=False)
            proxy.resume()
            unsent = len(limits._takes_back) + len(limits._tokens_back) + len(limits._slots_back)
            assert await limits.requests("other") == 0.0  # connected
            proxy.stall_replies()  # the count reaches Redis; its answer does not come
            await cancelled(limits, made=True)
            proxy.resume()
            await limits.take("other", 10)  # the next count gives it back first
            left = raw.zcard(counted) if kind == "slot" else int(raw.get(counted) or 0)
            return [unsent, int(left)]
        finally:
            await limits.aclose(0)

    try:
        with stall_proxy(REDIS_URL) as (proxy, url):
            assert asyncio.run(go(url, proxy)) == [0, 0]
    finally:
        raw.close()


def test_a_take_cut_while_it_connected_is_not_given_back(redis_namespace: str) -> None:
    """When one call fails, the calls under way are cut ("given up"), and each was taken
    as maybe made: a take cut while it still connected (its command never sent) was
    given back all the same, letting one more request through for each. Only one cut
    once its command was sent is given back."""

    async def go(url: str, proxy: StallProxy) -> list[int]:
        limits = RedisLimits(url, 0.5, redis_namespace, clock=lambda: NOW)
        try:
            assert await limits.requests("k") == 0.0  # one connection open
            proxy.stall_replies()  # a take's answer, or a new connection's, is held
            sent = asyncio.ensure_future(limits.take("k", 10))  # on the open connection
            await asyncio.sleep(0.2)  # its timeout comes first, and cuts the other
            connecting = asyncio.ensure_future(limits.take("k", 10))  # a new connection
            assert await sent == 0.0  # timed out: the other cut
            assert await connecting == 0.0
            proxy.resume()
            return [len(limits._takes_back), len(limits._tokens_back)]
        finally:
            await limits.aclose(0)

    with stall_proxy(REDIS_URL) as (proxy, url):
        assert asyncio.run(go(url, proxy)) == [1, 0]


@pytest.mark.parametrize("how", ["late", "cut", "cancelled"])
def test_a_count_whose_script_load_was_lost_is_not_given_back(how: str) -> None:
    """Told ``NOSCRIPT`` (a Redis restarted: its scripts are gone), redis-py loads the
    script (``SCRIPT LOAD``) and runs it again. A load whose answer was lost (late, its
    connection reset, or its caller cancelled once it was sent) was taken for the
    count's own: maybe made, so given back before the next count, though Redis had
    refused the count. The give-back took another request's count: one request more
    through that minute. Here a fresh Redis holds another gateway's count of 1."""
    minute = int(NOW // 60)

    async def go(url: str, proxy: StallProxy, raw: redis.Redis) -> list[float]:
        limits = RedisLimits(url, 0.5 if how == "late" else 2.0, "ns", clock=lambda: NOW)
        try:
            assert await limits.requests("k") == 1.0  # connected; no script run yet
            if how == "cut":
                proxy.cut_replies(on=b"SCRIPT")
            else:
                proxy.stall_replies(on=b"SCRIPT")  # NOSCRIPT comes back; the load's reply not
            if how == "cancelled":
                asking = asyncio.ensure_future(limits.take("k", 10))
                for _ in range(200):  # until the load reached Redis (bounded: 2 s)
                    if raw.script_exists(limits._script.sha) == [True]:
                        break
                    await asyncio.sleep(0.01)
                asking.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await asking
            else:
                assert await limits.take("k", 10) == 0.0  # let through, uncounted
            proxy.resume()
            queued = float(len(limits._takes_back))
            await asyncio.sleep(limits._outage.left_s() + 0.05)  # the outage's pause
            return [queued, await limits.take("k", 10) or 0.0, await limits.requests("k")]
        finally:
            await limits.aclose(0)

    with private_redis() as fresh, redis.Redis.from_url(fresh) as raw:
        raw.set(f"ns:rpm:k:{minute}", 1)
        with stall_proxy(fresh) as (proxy, url):
            assert asyncio.run(go(url, proxy, raw)) == [0.0, 2.0, 2.0]


@pytest.mark.parametrize("kind", ["take", "tokens"])
def test_a_give_back_whose_caller_is_cancelled_before_sending_it_is_kept(
    kind: str, redis_namespace: str
) -> None:
    """A queued rpm or tpm give-back (a DECRBY, harmful made twice) whose caller is
    cancelled while it is made was dropped, taken as maybe made; but one cancelled
    before its command was sent (here: reconnecting, the first count after the
    outage that queued it) was not made: dropped, its count stayed for its minute. It
    is kept, and made by the next count."""
    minute = int(NOW // 60)
    raw = redis.Redis.from_url(REDIS_URL)
    counted = f"{redis_namespace}:{'rpm' if kind == 'take' else 'tpm'}:k:{minute}"

    async def go(url: str, proxy: StallProxy) -> list[int]:
        limits = RedisLimits(url, 2.0, redis_namespace, clock=lambda: NOW)
        try:
            assert await limits.requests("k") == 0.0  # connected
            proxy.cut_replies()  # made; its connection reset once it was sent
            if kind == "take":
                assert await limits.take("k", 10) == 0.0
            else:
                assert await limits.hold_tokens("k", 100, 1000) == NOT_HELD
            queued = len(limits._takes_back) + len(limits._tokens_back)
            proxy.resume()
            proxy.stall()  # a new connection's handshake hangs
            await asyncio.sleep(limits._outage.left_s() + 0.05)  # the outage's pause
            asking = asyncio.ensure_future(limits.take("other", 10))
            await asyncio.sleep(0.2)  # making the give-back first: connecting
            asking.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asking
            kept = len(limits._takes_back) + len(limits._tokens_back)
            proxy.resume()
            await limits.take("other", 10)  # the next count makes it first
            return [queued, kept, int(raw.get(counted) or 0)]
        finally:
            await limits.aclose(0)

    try:
        with stall_proxy(REDIS_URL) as (proxy, url):
            assert asyncio.run(go(url, proxy)) == [1, 1, 0]
    finally:
        raw.close()


def test_a_count_that_timed_out_while_connecting_is_not_given_back(redis_namespace: str) -> None:
    """A take, tpm hold or slot whose timeout came while its connection was still being
    made (Redis slow to accept or to answer the handshake) was taken as maybe made, as
    one whose reply came late: a give-back of a count never sent was queued, and made
    once Redis answered (another request's count taken back). Only a timeout once the
    command was sent is maybe made. (And a queued give-back that timed out so was taken
    as made, and dropped: its count stayed for its minute.)"""

    def queued(limits: RedisLimits) -> list[int]:
        return [len(limits._takes_back), len(limits._tokens_back), len(limits._slots_back)]

    async def go(url: str, proxy: StallProxy) -> list[list[int]]:
        limits = RedisLimits(url, 0.3, redis_namespace, clock=lambda: NOW)
        try:
            proxy.stall()  # not connected yet: the handshake hangs
            assert await limits.take("k", 10) == 0.0
            seen = [queued(limits)]
            await asyncio.sleep(limits._outage.left_s() + 0.05)
            assert await limits.hold_tokens("k", 100, 1000) == NOT_HELD
            seen.append(queued(limits))
            await asyncio.sleep(limits._outage.left_s() + 0.05)
            assert await limits.take_slot("d", 3) == UNCOUNTED_SLOT
            seen.append(queued(limits))
            limits._takes_back.append(("k", int(NOW // 60)))  # one that was made
            await asyncio.sleep(limits._outage.left_s() + 0.05)
            assert await limits.take("k", 10) == 0.0  # making it first times out
            seen.append(queued(limits))
            return seen
        finally:
            proxy.resume()
            await limits.aclose(0)

    with stall_proxy(REDIS_URL) as (proxy, url):
        assert asyncio.run(go(url, proxy)) == [[0, 0, 0]] * 3 + [[1, 0, 0]]


LIMITED_REGISTRY = """
encoder: builtin:static
providers: {p: {kind: openai, base_url: "http://127.0.0.1:9/v1"}}
models:
  small: {provider: p, model: up-small, max_in_flight: 3}
routes:
  - {name: chitchat, examples: [hello there], target: small}
default: {target: small}
dispatch:
  limits: {url: "%(url)s", namespace: "%(ns)s"}
"""


def test_a_dispatcher_whose_build_failed_is_no_heir_of_a_retired_versions_give_backs(
    redis_namespace: str,
) -> None:
    """A dispatcher whose build fails once its limits are open (here: no provider given
    for its model) left them among this process's open limits until the collector
    found them (a reference cycle): a retired version closing while Redis was down
    handed them its give-backs, which nothing made, and said nothing (the slot stays
    taken for its lease, 10 min). It makes them itself once Redis answers now."""
    import gc

    from llmroute.dispatch.dispatcher import Dispatcher

    async def go(url: str, proxy: StallProxy) -> tuple[int, int]:
        registry = parse_registry(LIMITED_REGISTRY % {"url": url, "ns": redis_namespace})
        old = RedisLimits(url, 1.0, redis_namespace, clock=lambda: NOW)
        warm = await old.take_slot("d", 3)  # connected, its script loaded
        assert warm not in (None, UNCOUNTED_SLOT)
        await old.give_slot("d", warm)
        slot = await old.take_slot("d", 3)
        assert slot not in (None, UNCOUNTED_SLOT)
        proxy.refuse()
        await old.give_slot("d", slot)  # Redis did not take it: kept for later
        kept = len(old._slots_back)
        with pytest.raises(KeyError):
            Dispatcher(registry.registry, {})  # the build of the next version fails
        asyncio.get_running_loop().call_later(0.3, proxy.resume)
        await old.aclose(3.0)  # retired while Redis is down
        with redis.Redis.from_url(REDIS_URL) as client:
            return kept, int(client.zcard(f"{redis_namespace}:inflight:d"))

    collecting = gc.isenabled()
    gc.disable()  # the failed build's limits are not collected meanwhile by chance
    try:
        with stall_proxy(REDIS_URL) as (proxy, url):
            assert asyncio.run(go(url, proxy)) == (1, 0)
    finally:
        if collecting:
            gc.enable()


@pytest.mark.parametrize(
    ("trouble", "said"),
    [("stall", "timed out: Timeout reading"), ("cut", "connection lost: ")],
)
def test_a_failure_is_said_in_words_not_by_an_internal_class_name(
    trouble: str, said: str, redis_namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A call whose reply was late (or whose connection was lost) once it was sent said
    ``LateAfterSending: Timeout reading from ...`` (``LostAfterSending``): the name of a
    class of ours in an operator's log line ("response cache unavailable, serving without
    it: ..."). It says what happened in words, redis-py's message after."""

    async def go(url: str, proxy: StallProxy) -> None:
        breakers = RedisBreakers(url, TIMEOUT_S, redis_namespace)
        try:
            await breakers.open_for("d")  # connected
            proxy.stall() if trouble == "stall" else proxy.cut_replies()
            assert await breakers.open_for("d") is None
        finally:
            proxy.resume()
            await breakers.aclose()

    with stall_proxy(REDIS_URL) as (proxy, url), caplog.at_level("WARNING"):
        asyncio.run(go(url, proxy))
    (message,) = [r.getMessage() for r in caplog.records if "breakers" in r.getMessage()]
    assert f": redis {url}: {said}" in message, message
    assert "AfterSending" not in message, message
