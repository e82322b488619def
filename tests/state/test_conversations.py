"""Conversations (`ConversationStore`) in memory and in a real Redis: items added in
parts and read back in order, concurrent additions and deletions all landing (the
atomic append), a conversation deleted whole, each client key's own, and the expiry
renewed by use."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from redis_service import REDIS_URL

from llmroute.registry.schema import StoredResponsesSettings
from llmroute.state import MemoryStore, RedisStore
from llmroute.state.conversations import ConversationStore
from llmroute.state.stored_responses import ResponseStore

T = TypeVar("T")


def run(work: Awaitable[T]) -> T:
    async def go() -> T:
        return await work

    return asyncio.run(go())


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _item(text: str) -> dict[str, Any]:
    return {"id": f"msg_{text}", "type": "message", "role": "user", "content": text}


def _stores(namespace: str) -> list[ResponseStore]:
    memory = ResponseStore(StoredResponsesSettings(), MemoryStore(1000, 1 << 22))
    redis = ResponseStore(
        StoredResponsesSettings(url=REDIS_URL, namespace=namespace, ttl_s=60),
        RedisStore(REDIS_URL, timeout_s=2.0),
    )
    return [memory, redis]


def test_items_are_kept_in_order_and_additions_at_once_all_land(redis_namespace: str) -> None:
    for responses in _stores(redis_namespace):
        store = ConversationStore(responses)

        async def go(
            store: ConversationStore = store, responses: ResponseStore = responses
        ) -> None:
            conv = await store.create("team", {"topic": "t"}, [_item("a"), _item("b")])
            assert (await store.get("team", conv.id)) == conv
            await store.add("team", conv.id, [_item("c")])
            texts = [i["content"] for i in await store.items("team", conv.id)]
            assert texts == ["a", "b", "c"]
            # twenty additions at once: none lost to another's write
            await asyncio.gather(*(store.add("team", conv.id, [_item(f"x{n}")]) for n in range(20)))
            items = await store.items("team", conv.id)
            assert len(items) == 23 and {i["content"] for i in items[3:]} == {
                f"x{n}" for n in range(20)
            }
            assert await store.get("other", conv.id) is None  # another key's: not there
            assert await store.items("other", conv.id) == []
            assert await store.delete_item("team", conv.id, "msg_b")
            assert not await store.delete_item("team", conv.id, "msg_b")
            assert [i["content"] for i in await store.items("team", conv.id)][:2] == ["a", "c"]
            # deletions at once: each lands (appended, never a rewrite lost to another)
            gone = [f"msg_x{n}" for n in range(10)]
            done = await asyncio.gather(*(store.delete_item("team", conv.id, i) for i in gone))
            assert all(done)
            left = {i["id"] for i in await store.items("team", conv.id)}
            assert not left & set(gone) and len(left) == 12
            if isinstance(responses.kv, MemoryStore):  # the text itself is gone too
                assert not any(b'"content":"b"' in v for _, v in responses.kv._entries.values())
            assert await store.delete("team", conv.id)
            assert await store.get("team", conv.id) is None
            assert await store.items("team", conv.id) == []
            assert await responses.forget(None) == 0  # nothing of it left behind
            await responses.aclose()

        run(go())


def test_use_renews_a_conversation() -> None:
    clock = Clock()
    responses = ResponseStore(StoredResponsesSettings(ttl_s=10), MemoryStore(100, 1 << 20, clock))
    store = ConversationStore(responses)

    async def go() -> None:
        conv = await store.create("team", {}, [_item("a")])
        clock.now += 8
        await store.add("team", conv.id, [_item("b")])
        clock.now += 8  # 16 s after it was made, 8 after its last use
        assert [i["content"] for i in await store.items("team", conv.id)] == ["a", "b"]
        clock.now += 3
        assert await store.get("team", conv.id) is None

    run(go())


def test_append_is_one_step_in_both_stores(redis_namespace: str) -> None:
    clock = Clock()
    memory = MemoryStore(10, 1 << 20, clock)

    async def in_memory() -> None:
        await memory.append("k", b"a,", 5)
        await memory.append("k", b"b,", 5)
        assert await memory.get("k") == b"a,b,"
        clock.now += 6
        await memory.append("k", b"c,", 5)  # an expired value is not appended to
        assert await memory.get("k") == b"c,"

    run(in_memory())
    redis = RedisStore(REDIS_URL, timeout_s=2.0)

    async def in_redis() -> None:
        key = f"{redis_namespace}:append"
        await asyncio.gather(*(redis.append(key, f"{n},".encode(), 30) for n in range(50)))
        value = await redis.get(key)
        assert value is not None and sorted(value.decode().split(",")[:-1], key=int) == [
            str(n) for n in range(50)
        ]
        await redis.aclose()

    run(in_redis())
