"""Kept Responses-API responses (`ResponseStore`): per client key, in memory and in a
real Redis (a conversation read whole from its chain, expiry renewed by each turn,
deletion, a record this version cannot read, one too large, a Redis that is not there),
and the registry section that turns them on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import replace
from functools import partial
from typing import TypeVar

import pytest
from redis_service import REDIS_URL

from llmroute.registry import ConfigErrors, parse_registry
from llmroute.registry.schema import StoredResponsesSettings
from llmroute.state import MemoryStore, RedisStore, StoreUnavailable
from llmroute.state.stored_responses import (
    BrokenChain,
    ResponseStore,
    StoredResponse,
    new_response_id,
    with_ids,
)
from llmroute.state.stores import check_registry_urls

T = TypeVar("T")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run(work: Awaitable[T]) -> T:
    async def go() -> T:
        return await work

    return asyncio.run(go())


def _record(text: str = "hello", chain: list[str] | None = None) -> StoredResponse:
    response_id = new_response_id()
    output = [{"type": "message", "id": f"msg_{text}", "role": "assistant", "content": []}]
    response = {"id": response_id, "object": "response", "output": output}
    items = with_ids([{"type": "message", "role": "user", "content": text}], response_id)
    return StoredResponse(response, items, chain or [])


def test_ids_are_fresh_and_unguessable() -> None:
    ids = {new_response_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(i.startswith("resp_") and len(i) == 53 for i in ids)


def test_a_record_reads_back_and_a_strange_one_does_not() -> None:
    record = _record("two", ["resp_a"])
    assert [item["id"] for item in record.items()] == [record.input[0]["id"], "msg_two"]
    assert StoredResponse.from_bytes(record.to_bytes()) == record
    for bad in (
        b"{",
        b"[]",
        b'{"v": 99}',
        b'{"v": 1, "response": {}, "input": [1], "chain": []}',
        b'{"v": 1, "response": {}, "input": [], "chain": [1]}',
    ):
        assert StoredResponse.from_bytes(bad) is None


def test_with_ids_keeps_given_ids_and_numbers_the_rest() -> None:
    items = with_ids([{"id": "mine", "type": "message"}, {"type": "message"}], "resp_ab")
    assert [item["id"] for item in items] == ["mine", "item_ab_1"]


def _stores(namespace: str) -> list[ResponseStore]:
    memory = ResponseStore(StoredResponsesSettings(), MemoryStore(100, 1 << 20))
    redis = ResponseStore(
        StoredResponsesSettings(url=REDIS_URL, namespace=namespace, ttl_s=1.0),
        RedisStore(REDIS_URL, timeout_s=2.0),
    )
    return [memory, redis]


def test_a_response_is_kept_per_client_key_and_forgotten(redis_namespace: str) -> None:
    for store in _stores(redis_namespace):
        record = _record()

        async def go(store: ResponseStore = store, record: StoredResponse = record) -> None:
            assert await store.put("team", record)
            assert await store.get("team", record.id) == record
            assert await store.get("other", record.id) is None  # another key's: not there
            assert await store.get("", record.id) is None
            assert await store.chain("other", record.id) is None
            assert not await store.delete("other", record.id)
            assert await store.delete("team", record.id)
            assert await store.get("team", record.id) is None
            await store.aclose()

        run(go())


def test_a_conversation_is_read_whole_from_its_chain(redis_namespace: str) -> None:
    for store in _stores(redis_namespace):

        async def go(store: ResponseStore = store) -> None:
            first = _record("one")
            await store.put("team", first)
            turn = await store.chain("team", first.id)
            assert turn is not None and turn.earlier == [] and turn.continued_by() == [first.id]
            second = _record("two", turn.continued_by())
            await store.put("team", second)
            turn = await store.chain("team", second.id)
            assert turn is not None and turn.continued_by() == [first.id, second.id]
            third = _record("three", turn.continued_by())
            await store.put("team", third)
            whole = await store.chain("team", third.id)
            assert whole is not None
            assert [i["id"] for i in whole.context()] == [
                i["id"] for r in (first, second, third) for i in r.items()
            ]
            # each turn holds only its own items, not the conversation again
            assert len(third.to_bytes()) < len(first.to_bytes()) + 200
            await store.delete("team", second.id)
            with pytest.raises(BrokenChain) as caught:
                await store.chain("team", third.id)
            assert caught.value.missing == second.id
            await store.aclose()

        run(go())


def test_a_new_turn_renews_its_chain_in_memory() -> None:
    clock = Clock()
    store = ResponseStore(StoredResponsesSettings(ttl_s=10), MemoryStore(100, 1 << 20, clock))

    async def go() -> None:
        first = _record("one")
        await store.put("team", first)
        clock.now += 8
        second = _record("two", [first.id])
        await store.put("team", second)
        clock.now += 8  # 16 s after the first turn, 8 after the second
        assert await store.chain("team", second.id) is not None
        clock.now += 3
        assert await store.get("team", first.id) is None

    run(go())


def test_a_response_too_large_for_memory_is_not_kept(caplog: pytest.LogCaptureFixture) -> None:
    told: list[str] = []
    settings = StoredResponsesSettings(max_bytes=1024)
    store = ResponseStore(settings, MemoryStore(100, 1024), told.append)
    record = _record("x" * 2000)
    assert not run(store.put("team", record))
    assert run(store.get("team", record.id)) is None
    assert "larger than stored_responses.max_bytes" in caplog.text
    assert told == ["too_large"]


def test_each_outcome_is_told() -> None:
    told: list[str] = []
    store = ResponseStore(StoredResponsesSettings(), MemoryStore(100, 1 << 20), told.append)

    async def go() -> None:
        first = _record("one")
        await store.put("team", first)
        second = _record("two", [first.id])
        await store.put("team", second)
        await store.chain("team", second.id)
        await store.chain("team", "resp_missing")
        await store.chain("team", second.id, counted=False)  # a listing
        await store.delete("team", first.id)
        with pytest.raises(BrokenChain):
            await store.chain("team", second.id)

    run(go())
    assert told == ["kept", "kept", "continued", "not_found", "broken"]


def test_a_client_keys_responses_are_forgotten_together(redis_namespace: str) -> None:
    for store in _stores(redis_namespace):

        async def go(store: ResponseStore = store) -> None:
            mine = [_record("a"), _record("b")]
            theirs = _record("c")
            for record in mine:
                await store.put("team", record)
            await store.put("other", theirs)
            assert await store.forget("team") == 2
            assert [await store.get("team", r.id) for r in mine] == [None, None]
            assert await store.get("other", theirs.id) == theirs
            assert await store.forget("team") == 0
            assert await store.forget(None) >= 1  # everyone's
            assert await store.get("other", theirs.id) is None
            await store.aclose()

        run(go())


def test_redis_records_expire_and_hold_no_plain_key(redis_namespace: str) -> None:
    import redis

    store = _stores(redis_namespace)[1]
    record = _record("a private question")
    client = redis.Redis.from_url(REDIS_URL)

    async def go() -> None:
        await store.put("team", record)
        (key,) = client.keys(f"{redis_namespace}:response:*")
        assert b"team" not in key and record.id.encode() not in key
        assert 0 < client.pttl(key) <= 1000
        await asyncio.sleep(0.6)
        await store.put("team", _record("next", [record.id]))
        assert client.pttl(key) > 700  # renewed by the turn that continues it
        await asyncio.sleep(1.2)
        assert await store.get("team", record.id) is None
        await store.aclose()

    try:
        run(go())
    finally:
        client.close()


def test_a_record_that_cannot_be_read_is_not_there(caplog: pytest.LogCaptureFixture) -> None:
    memory = MemoryStore(10, 1 << 20)
    store = ResponseStore(StoredResponsesSettings(), memory)
    record = _record()
    run(store.put("team", record))
    key = store._key("team", record.id)
    run(memory.set(key, b"not json", 60))
    assert run(store.get("team", record.id)) is None
    assert "could not be read" in caplog.text


def _bound_stores(namespace: str, **bound: int) -> list[tuple[ResponseStore, ResponseStore]]:
    """Pairs of stores over the same place: one memory store twice, and two gateways'
    connections to one Redis (each its own `RedisStore`, as two workers have)."""
    memory = MemoryStore(100, 1 << 20)
    settings = StoredResponsesSettings.model_validate(bound)
    shared = StoredResponsesSettings.model_validate(
        {"url": REDIS_URL, "namespace": namespace, **bound}
    )
    return [
        (ResponseStore(settings, memory), ResponseStore(settings, memory)),
        (
            ResponseStore(shared, RedisStore(REDIS_URL, timeout_s=2.0)),
            ResponseStore(shared, RedisStore(REDIS_URL, timeout_s=2.0)),
        ),
    ]


def test_a_keys_responses_past_its_bound_evict_its_own_oldest(redis_namespace: str) -> None:
    """``max_key_responses: 3``, two gateways writing: alice's oldest go (the bound is
    counted where the records are, not per process), bob's one stays; continuing a
    response renews it; a deleted one no longer counts; forgetting starts afresh."""
    for one, two in _bound_stores(redis_namespace, max_key_responses=3):

        async def go(one: ResponseStore = one, two: ResponseStore = two) -> None:
            bobs = _record("bob")
            assert await one.put("bob", bobs)
            alices = [_record(f"a{i}") for i in range(5)]
            for i, record in enumerate(alices):
                assert await (one, two)[i % 2].put("alice", record)
            kept = [await one.get("alice", r.id) is not None for r in alices]
            assert kept == [False, False, True, True, True]
            assert await two.get("bob", bobs.id) == bobs
            # a turn continuing alices[2] renews it: alices[3] is now the oldest
            turn = _record("next", [alices[2].id])
            assert await two.put("alice", turn)
            assert await one.get("alice", alices[3].id) is None
            assert await one.get("alice", alices[2].id) is not None
            assert await one.delete("alice", alices[4].id)  # room for one more
            extra = _record("extra")
            assert await two.put("alice", extra)
            assert [await one.get("alice", r.id) is not None for r in (alices[2], turn)] == [
                True,
                True,
            ]
            await one.forget("alice")
            fresh = [_record(f"f{i}") for i in range(3)]
            for record in fresh:
                assert await two.put("alice", record)
            assert all([await one.get("alice", r.id) is not None for r in fresh])
            await one.aclose()
            await two.aclose()

        run(go())


def test_a_conversation_past_the_bound_loses_its_oldest_turn_in_redis_too(
    redis_namespace: str,
) -> None:
    """``max_key_responses: 2`` and a conversation of three turns: the third, renewing
    the two it continues, evicts the first, the least recently continued, in Redis as in
    memory (on the old code Redis gave the renewed turns and the new one the same time,
    so the one whose store key sorted first went: here the second, ids chosen so)."""
    for one, two in _bound_stores(redis_namespace, max_key_responses=2):

        async def go(one: ResponseStore = one, two: ResponseStore = two) -> None:
            key = partial(one._key, "alice")
            while True:
                first = _record("t0")
                second = _record("t1", [first.id])
                third = _record("t2", [first.id, second.id])
                if key(second.id) < min(key(first.id), key(third.id)):
                    break
            for record in (first, second, third):
                assert await two.put("alice", record)
            kept = [await one.get("alice", r.id) is not None for r in (first, second, third)]
            assert kept == [False, True, True]
            await one.aclose()
            await two.aclose()

        run(go())


def test_a_keys_responses_past_its_bytes_evict_its_own_oldest(
    redis_namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``max_key_bytes``: alice's oldest go once her records pass it; one larger than it
    alone is not kept (said in the log, counted too_large), and evicts nothing."""
    size = len(_record("x" * 300).to_bytes())  # each of alice's records: three fit
    for one, two in _bound_stores(redis_namespace, max_key_bytes=3 * size + 10):

        async def go(one: ResponseStore = one, two: ResponseStore = two) -> None:
            records = [_record("x" * 300) for _ in range(4)]
            for record in records:
                assert await one.put("alice", record)
            kept = [await two.get("alice", r.id) is not None for r in records]
            assert kept == [False, True, True, True]
            with caplog.at_level(logging.WARNING):
                assert not await two.put("alice", _record("y" * 2000))
            assert "stored_responses.max_key_bytes" in caplog.text
            assert all([await one.get("alice", r.id) is not None for r in records[1:]])
            await one.aclose()
            await two.aclose()

        run(go())


def test_a_redis_that_is_not_there_raises_without_its_password(closed_port: int) -> None:
    url = f"redis://:hunter2@127.0.0.1:{closed_port}/0"
    told: list[str] = []
    settings = StoredResponsesSettings(url=url)
    store = ResponseStore(settings, RedisStore(url, timeout_s=0.3), told.append)

    async def go() -> None:
        with pytest.raises(StoreUnavailable):
            await store.chain("team", "resp_x")
        with pytest.raises(StoreUnavailable) as caught:
            await store.get("team", "resp_x")
        assert "hunter2" not in str(caught.value)
        with pytest.raises(StoreUnavailable):
            await store.put("team", _record())
        await store.aclose()

    run(go())
    assert told == ["error", "error"]


BASE = """
encoder: builtin:static
providers: {fake: {kind: openai, base_url: "http://127.0.0.1:9"}}
models: {small: {provider: fake, model: s}}
routes: [{name: chat, examples: ["hello"], target: small}]
default: {target: small}
"""


def test_the_registry_section_opens_a_store() -> None:
    assert ResponseStore.open(parse_registry(BASE).registry) is None
    registry = parse_registry(BASE + "stored_responses: {ttl_s: 120}\n").registry
    store = ResponseStore.open(registry)
    assert store is not None and store.url == "memory" and store.settings.ttl_s == 120
    from llmroute.registry.summary import headline, summarize

    loaded = parse_registry(BASE + "stored_responses: {ttl_s: 120}\n")
    assert "responses kept 120 s, in memory" in summarize(loaded)
    bound = parse_registry(BASE + "stored_responses: {max_key_responses: 50}\n")
    assert "responses kept 86400 s, in memory, each key at most 50 responses" in summarize(bound)
    assert "stored responses" in headline(loaded)
    # one memory store per process and size: a registry reload keeps what was kept
    again = ResponseStore.open(registry)
    assert again is not None and again._store is store._store


def test_a_bad_section_names_its_field() -> None:
    with pytest.raises(ConfigErrors) as caught:
        parse_registry(
            BASE
            + "stored_responses: {url: 'postgres://x', ttl_s: 0, max_key_responses: 0,"
            + " max_key_bytes: 10}\n"
        )
    text = str(caught.value)
    assert "stored_responses.url" in text and "stored_responses.ttl_s" in text
    assert "stored_responses.max_key_responses" in text
    assert "stored_responses.max_key_bytes" in text
    assert "pw" not in text
    registry = parse_registry(
        BASE + "stored_responses: {url: 'redis://:pw@127.0.0.1:1/0'}\n"
    ).registry
    check_registry_urls(registry)  # redis is installed, and nothing connects


def test_memory_with_several_workers_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    from llmroute.server.reload import warn_registry

    registry = parse_registry(BASE + "stored_responses: {}\n").registry
    with caplog.at_level(logging.WARNING):
        warn_registry(registry, workers=1)
        assert "stored_responses" not in caplog.text
        warn_registry(registry, workers=3)
    assert "each of the 3 workers keeps responses in its own memory" in caplog.text
    caplog.clear()
    shared = parse_registry(BASE + "stored_responses: {url: 'redis://127.0.0.1:6379/0'}\n")
    warn_registry(shared.registry, workers=3)
    assert "stored_responses" not in caplog.text


def _running(text: str) -> StoredResponse:
    record = _record(text)
    return StoredResponse({**record.response, "background": True, "status": "in_progress"}, [], [])


@pytest.mark.parametrize("by", ["responses", "bytes"])
def test_a_running_background_response_is_not_evicted_by_the_keys_bound(
    redis_namespace: str, by: str
) -> None:
    """Later writes of the same key past its bound evict its other responses, not one
    still running in the background (its poller got a 404 and its answer was dropped);
    kept answered, it counts in the bound as the key's most recent."""
    size, done_size = len(_record("x" * 300).to_bytes()), len(_running("bg").to_bytes()) - 2
    most = 2 * size + done_size - 1  # two fit, not beside the answered one
    bound = {"max_key_responses": 2} if by == "responses" else {"max_key_bytes": most}
    for one, two in _bound_stores(redis_namespace, **bound):

        async def go(one: ResponseStore = one, two: ResponseStore = two) -> None:
            running = _running("bg")
            assert await one.put("alice", running, counted=False)
            others = [_record("x" * 300) for _ in range(4)]
            for record in others:
                assert await two.put("alice", record)
            assert await one.get("alice", running.id) == running
            assert [await one.get("alice", r.id) is not None for r in others[:2]] == [False] * 2
            done = replace(running, response={**running.response, "status": "completed"})
            assert await two.put("alice", done, counted=False)
            assert await one.get("alice", done.id) == done
            assert await one.get("alice", others[3].id) is not None
            assert await one.get("alice", others[2].id) is None  # the answer now counts
            await one.aclose()
            await two.aclose()

        run(go())


def test_a_running_background_response_outlasts_a_full_memory_store() -> None:
    """Without a per-key bound, the memory store full evicts the key's other responses
    first (pinned, as a running batch's answers are), not the one still running."""
    store = ResponseStore(StoredResponsesSettings(), MemoryStore(3, 1 << 20))

    async def go() -> None:
        running = _running("bg")
        assert await store.put("alice", running, counted=False)
        others = [_record(f"o{i}") for i in range(4)]
        for record in others:
            assert await store.put("alice", record)
        assert await store.get("alice", running.id) == running
        assert [await store.get("alice", r.id) is not None for r in others] == [
            False,
            False,
            True,
            True,
        ]

    run(go())


def test_a_running_background_responses_lease_outlasts_a_full_memory_store() -> None:
    """Its lease is pinned with it: else the key's later writes to a full memory store
    evicted the lease (the key's least recently used) and a poll read the response,
    still being made, as abandoned (kept failed). Released when the run ends, it holds
    no place after."""
    memory = MemoryStore(4, 1 << 20)
    store = ResponseStore(StoredResponsesSettings(), memory)

    async def go() -> None:
        running = _running("bg")
        assert await store.put("alice", running, counted=False)
        await store.hold("alice", running.id)
        for record in [_record(f"o{i}") for i in range(4)]:
            assert await store.put("alice", record)
        assert await store.held("alice", running.id)
        await store.release("alice", running.id)
        assert not await store.held("alice", running.id)
        assert len(memory) == 3  # the response and its key's two latest

    run(go())
