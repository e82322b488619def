"""Kept Responses-API responses (`ResponseStore`): per client key, in memory and in a
real Redis (expiry, deletion, a record this version cannot read, a Redis that is not
there), and the registry section that turns them on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import pytest
from redis_service import REDIS_URL

from llmroute.registry import ConfigErrors, parse_registry
from llmroute.registry.schema import ResponsesSettings
from llmroute.state import MemoryStore, RedisStore, StoreUnavailable
from llmroute.state.stored_responses import (
    ResponseStore,
    StoredResponse,
    new_response_id,
    with_ids,
)
from llmroute.state.stores import check_registry_urls

T = TypeVar("T")


def run(work: Awaitable[T]) -> T:
    async def go() -> T:
        return await work

    return asyncio.run(go())


def _record(text: str = "hello", earlier: list[dict[str, object]] | None = None) -> StoredResponse:
    response_id = new_response_id()
    output = [{"type": "message", "id": "msg_1", "role": "assistant", "content": []}]
    response = {"id": response_id, "object": "response", "output": output}
    items = with_ids([{"type": "message", "role": "user", "content": text}], response_id)
    return StoredResponse(response, items, earlier or [])


def test_ids_are_fresh_and_unguessable() -> None:
    ids = {new_response_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(i.startswith("resp_") and len(i) == 53 for i in ids)


def test_a_record_gives_its_whole_conversation_back() -> None:
    first = _record("one")
    second = _record("two", first.context())
    assert [item.get("content") for item in second.context()[::2]] == ["one", "two"]
    assert second.context()[1]["id"] == "msg_1"
    assert StoredResponse.from_bytes(second.to_bytes()) == second
    for bad in (b"{", b"[]", b'{"v": 99}', b'{"v": 1, "response": {}, "input": [1]}'):
        assert StoredResponse.from_bytes(bad) is None


def test_with_ids_keeps_given_ids_and_numbers_the_rest() -> None:
    items = with_ids([{"id": "mine", "type": "message"}, {"type": "message"}], "resp_ab")
    assert [item["id"] for item in items] == ["mine", "item_ab_1"]


def _stores(namespace: str) -> list[ResponseStore]:
    memory = ResponseStore(ResponsesSettings(), MemoryStore(100, 1 << 20))
    redis = ResponseStore(
        ResponsesSettings(url=REDIS_URL, namespace=namespace, ttl_s=1.0),
        RedisStore(REDIS_URL, timeout_s=2.0),
    )
    return [memory, redis]


def test_a_response_is_kept_per_client_key_and_forgotten(redis_namespace: str) -> None:
    for store in _stores(redis_namespace):
        record = _record()

        async def go(store: ResponseStore = store, record: StoredResponse = record) -> None:
            await store.put("team", record)
            assert await store.get("team", record.id) == record
            assert await store.get("other", record.id) is None  # another key's: not there
            assert await store.get("", record.id) is None
            assert not await store.delete("other", record.id)
            assert await store.delete("team", record.id)
            assert await store.get("team", record.id) is None
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
        await asyncio.sleep(1.2)
        assert await store.get("team", record.id) is None
        await store.aclose()

    try:
        run(go())
    finally:
        client.close()


def test_a_record_that_cannot_be_read_is_not_there(caplog: pytest.LogCaptureFixture) -> None:
    memory = MemoryStore(10, 1 << 20)
    store = ResponseStore(ResponsesSettings(), memory)
    record = _record()
    run(store.put("team", record))
    key = store._key("team", record.id)
    run(memory.set(key, b"not json", 60))
    assert run(store.get("team", record.id)) is None
    assert "could not be read" in caplog.text


def test_a_redis_that_is_not_there_raises_without_its_password(closed_port: int) -> None:
    url = f"redis://:hunter2@127.0.0.1:{closed_port}/0"
    store = ResponseStore(ResponsesSettings(url=url), RedisStore(url, timeout_s=0.3))

    async def go() -> None:
        with pytest.raises(StoreUnavailable) as caught:
            await store.get("team", "resp_x")
        assert "hunter2" not in str(caught.value)
        with pytest.raises(StoreUnavailable):
            await store.put("team", _record())
        await store.aclose()

    run(go())


BASE = """
encoder: builtin:static
providers: {fake: {kind: openai, base_url: "http://127.0.0.1:9"}}
models: {small: {provider: fake, model: s}}
routes: [{name: chat, examples: ["hello"], target: small}]
default: {target: small}
"""


def test_the_registry_section_opens_a_store() -> None:
    assert ResponseStore.open(parse_registry(BASE).registry) is None
    registry = parse_registry(BASE + "responses: {ttl_s: 120}\n").registry
    store = ResponseStore.open(registry)
    assert store is not None and store.url == "memory" and store.settings.ttl_s == 120
    from llmroute.registry.summary import headline, summarize

    loaded = parse_registry(BASE + "responses: {ttl_s: 120}\n")
    assert "responses kept 120 s, in memory" in summarize(loaded)
    assert "stored responses" in headline(loaded)
    # one memory store per process and size: a registry reload keeps what was kept
    again = ResponseStore.open(registry)
    assert again is not None and again._store is store._store


def test_a_bad_section_names_its_field() -> None:
    with pytest.raises(ConfigErrors) as caught:
        parse_registry(BASE + "responses: {url: 'postgres://x', ttl_s: 0}\n")
    text = str(caught.value)
    assert "responses.url" in text and "responses.ttl_s" in text
    assert "pw" not in text
    registry = parse_registry(BASE + "responses: {url: 'redis://:pw@127.0.0.1:1/0'}\n").registry
    check_registry_urls(registry)  # redis is installed, and nothing connects
