"""Files and batches of the Batch API (`BatchStore`), in memory and in a real Redis:
per client key, a file made in parts read back whole (a part written twice counts once),
listings newest first without what was deleted, the cancel flag beside the record, a
record this version cannot read; and the registry section."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest
from redis_service import REDIS_URL

from llmroute.registry import ConfigErrors, parse_registry
from llmroute.registry.schema import BatchesSettings
from llmroute.registry.summary import summarize
from llmroute.state import MemoryStore, RedisStore
from llmroute.state.batches import (
    BatchRecord,
    BatchStore,
    UploadsContended,
    Written,
    new_batch_id,
    new_file_id,
)
from llmroute.state.stores import owner_group

T = TypeVar("T")


def run(work: Awaitable[T]) -> T:
    async def go() -> T:
        return await work

    return asyncio.run(go())


def _stores(namespace: str) -> list[BatchStore]:
    memory = BatchStore(BatchesSettings(), MemoryStore(1000, 1 << 22))
    redis = BatchStore(
        BatchesSettings(url=REDIS_URL, namespace=namespace, ttl_s=30.0),
        RedisStore(REDIS_URL, timeout_s=2.0),
    )
    return [memory, redis]


def _file(purpose: str = "batch") -> dict[str, Any]:
    return {"id": new_file_id(), "object": "file", "bytes": 3, "purpose": purpose}


def test_ids_are_fresh_and_unguessable() -> None:
    files = {new_file_id() for _ in range(1000)}
    batches = {new_batch_id() for _ in range(1000)}
    assert len(files) == len(batches) == 1000
    assert all(f.startswith("file-") and len(f) == 53 for f in files)
    assert all(b.startswith("batch_") and len(b) == 54 for b in batches)


def test_a_record_reads_back_and_a_strange_one_does_not() -> None:
    record = BatchRecord(
        {"id": "batch_a", "status": "in_progress"},
        "file-o",
        "file-e",
        Written(2, 40, 5),
        headers={"x-llmroute-tags": "team:a"},
    )
    again = BatchRecord.from_bytes(record.to_bytes())
    assert again == record and again is not None and again.status == "in_progress"
    assert again.output_written.plus(b"abc", 2) == Written(3, 43, 7)
    for bad in (b"{", b"[]", b'{"v": 99}', b'{"v": 1, "batch": {}, "output": ["x", -1, 0, 0]}'):
        assert BatchRecord.from_bytes(bad) is None


def test_files_are_kept_per_key_listed_and_deleted(redis_namespace: str) -> None:
    for store in _stores(redis_namespace):

        async def go(store: BatchStore = store) -> None:
            first, second = _file(), _file()
            await store.put_file("team", first, b"one\n")
            await store.put_file("team", second, b"two\n")
            assert await store.get_file("team", first["id"]) == first
            assert await store.content("team", first["id"]) == b"one\n"
            assert await store.get_file("other", first["id"]) is None
            assert await store.content("other", first["id"]) is None
            assert [f["id"] for f in await store.files("team")] == [second["id"], first["id"]]
            assert await store.files("other") == []
            assert not await store.delete_file("other", first["id"])
            assert await store.delete_file("team", first["id"])
            assert await store.get_file("team", first["id"]) is None
            assert [f["id"] for f in await store.files("team")] == [second["id"]]
            await store.aclose()

        run(go())


def test_a_file_made_in_parts_reads_back_whole(redis_namespace: str) -> None:
    for store in _stores(redis_namespace):

        async def go(store: BatchStore = store) -> None:
            made = _file("batch_output")
            await store.put_part("team", made["id"], 0, b"a\n")
            await store.put_part("team", made["id"], 1, b"b\n")
            await store.put_part("team", made["id"], 1, b"b\nc\n")  # retried, with more
            await store.put_part("team", made["id"], 2, b"not counted\n")
            assert await store.get_file("team", made["id"]) is None  # not kept before
            await store.put_file("team", made, parts=2)
            assert await store.content("team", made["id"]) == b"a\nb\nc\n"
            assert await store.delete_file("team", made["id"])
            assert await store.content("team", made["id"]) is None
            await store.aclose()

        run(go())


def test_a_files_parts_outlive_a_long_run_then_expire_with_the_file(
    redis_namespace: str,
) -> None:
    """Parts written while a batch runs are kept `ttl_s` (a run longer than the
    client's output_expires_after lost its first parts, and so its whole file); the
    file, made when it ends, gives them its own lifetime from then."""
    import redis

    store = BatchStore(
        BatchesSettings(url=REDIS_URL, namespace=redis_namespace, ttl_s=3000.0),
        RedisStore(REDIS_URL, timeout_s=2.0),
    )
    client = redis.Redis.from_url(REDIS_URL)
    made = _file("batch_output")

    def part_ttls() -> list[int]:
        keys = [store._part_key("team", made["id"], k) for k in range(2)]
        return [int(client.pttl(key)) for key in keys]

    async def go() -> None:
        await store.put_part("team", made["id"], 0, b"a\n")
        await store.put_part("team", made["id"], 1, b"b\n")
        assert all(2_900_000 < t <= 3_000_000 for t in part_ttls())
        await store.put_file("team", made, parts=2, ttl_s=60.0)
        assert all(0 < t <= 60_000 for t in part_ttls())
        assert await store.content("team", made["id"]) == b"a\nb\n"
        await store.aclose()

    try:
        run(go())
    finally:
        client.close()


def test_batches_are_kept_listed_held_and_flagged(redis_namespace: str) -> None:
    for store in _stores(redis_namespace):

        async def go(store: BatchStore = store) -> None:
            ids = [new_batch_id() for _ in range(3)]
            for batch_id in ids:
                record = BatchRecord({"id": batch_id, "status": "validating"}, "f-o", "f-e")
                await store.put_batch("team", record, new=True)
            moved = BatchRecord({"id": ids[0], "status": "completed"}, "f-o", "f-e")
            await store.put_batch("team", moved)  # not listed twice
            listed = await store.batches("team")
            assert [b["id"] for b in listed] == ids[::-1]
            assert listed[-1]["status"] == "completed"
            assert await store.get_batch("other", ids[0]) is None
            assert not await store.held("team", ids[0])
            await store.hold("team", ids[0], "run-a")
            assert await store.held("team", ids[0])
            assert await store.renew("team", ids[0], "run-a")
            assert not await store.renew("team", ids[0], "run-b")
            assert await store.cancel_asked("team", ids[1]) is None
            await store.ask_cancel("team", ids[1], 1234)
            assert await store.cancel_asked("team", ids[1]) == 1234
            assert await store.cancel_asked("other", ids[1]) is None
            assert not await store.take("team", ids[0], "run-b")  # held
            assert await store.take("team", ids[2], "run-b")
            assert not await store.take("team", ids[2], "run-c")
            await store.release("team", ids[2], "run-c")  # not its to give up
            assert await store.held("team", ids[2])
            await store.release("team", ids[2], "run-b")
            await asyncio.sleep(0.01)
            assert not await store.held("team", ids[2])
            assert await store.take("team", ids[2], "run-c")
            await store.aclose()

        run(go())


def test_batches_made_at_once_stay_within_max_key_batches(redis_namespace: str) -> None:
    """Twenty batches noted running at once with ``max_key_batches: 3`` (memory and
    Redis): three are noted, each other one refused saying why; another key's still goes
    in. The count was read, then the batch noted: several could read it before any was
    noted, and each pass it."""

    def batch() -> BatchRecord:
        return BatchRecord({"id": new_batch_id(), "expires_at": 2**40}, "f-o", "f-e")

    async def go(store: BatchStore) -> tuple[list[str | None], str | None, int]:
        found = await asyncio.gather(*(store.mark_running("alice", batch()) for _ in range(20)))
        bobs = await store.mark_running("bob", batch())
        running = len(await store.running())
        await store.aclose()
        return list(found), bobs, running

    for kv in _stores(redis_namespace):
        store = BatchStore(kv.settings.model_copy(update={"max_key_batches": 3}), kv._store)
        refused, bobs, running = run(go(store))
        assert refused.count(None) == 3 and bobs is None and running == 4, store.url
        assert all("batches.max_key_batches (3)" in why for why in refused if why is not None)


class _Contended(MemoryStore):
    """A memory store where another upload of the key is kept between each read of the
    key's files and the write that depends on it."""

    async def set_appending(self, *args: Any) -> bool:
        return False


def test_an_upload_that_loses_every_quota_check_is_told_to_try_again() -> None:
    """Other uploads of its key kept each time its quota was checked: the upload was
    refused as over the quota (a 429 ``file_quota_exceeded`` marked not to be retried,
    saying to delete files), though the quota had room. It is told it may be sent again,
    apart from the quota's refusal; nothing of it is kept."""
    kv = _Contended(1000, 1 << 22)
    store = BatchStore(BatchesSettings(max_key_files=5), kv)

    async def go() -> int:
        with pytest.raises(UploadsContended) as raised:
            await store.put_upload("alice", _file(), b"{}\n")
        assert raised.value.tries > 1
        return len(kv._entries)

    assert run(go()) == 0  # its content deleted


def test_an_upload_past_the_quota_evicts_nothing() -> None:
    """An upload refused by its key's quota writes nothing: its content was kept first,
    then deleted once refused, and in a full memory store that write evicted what
    another key (bob, holding the most) had kept."""
    store = BatchStore(
        BatchesSettings(max_bytes=8192, max_file_bytes=4096, max_key_files=1),
        MemoryStore(1000, 8192, owner_of=owner_group),
    )

    async def go() -> tuple[str | None, bytes | None]:
        bobs = _file()
        await store.put_file("bob", bobs, b"b" * 5000)
        assert await store.put_upload("alice", _file(), b"a" * 100) is None
        why = await store.put_upload("alice", _file(), b"a" * 3000)
        return why, await store.content("bob", bobs["id"])

    why, bobs = run(go())
    assert why is not None and "max_key_files (1)" in why
    assert bobs == b"b" * 5000


def test_answers_larger_than_the_memory_store_are_named_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = BatchStore(BatchesSettings(max_bytes=2048, max_file_bytes=1024), MemoryStore(10, 2048))

    async def go() -> bytes | None:
        made = _file("batch_output")
        await store.put_part("team", made["id"], 0, b"x" * 4096)
        await store.put_file("team", made, parts=1)
        return await store.content("team", made["id"])

    with caplog.at_level("WARNING", "llmroute.batches"):
        assert run(go()) is None
    assert "more than the memory store holds" in caplog.text


def test_a_listing_forgets_what_expired() -> None:
    store = BatchStore(BatchesSettings(), MemoryStore(10_000, 1 << 24))

    async def go() -> None:
        files = [_file() for _ in range(1_200)]
        for file in files:
            await store.put_file("team", file, b"x\n")
        for file in files[:-5]:
            await store.delete_file("team", file["id"])
        assert len(await store.files("team")) == 5  # and the index is rewritten
        kept = _file()
        await store.put_file("team", kept, b"y\n")
        assert [f["id"] for f in await store.files("team")][:2] == [kept["id"], files[-1]["id"]]

    run(go())


def test_the_registry_section() -> None:
    base = """
encoder: builtin:static
providers: {fake: {kind: openai, base_url: "http://127.0.0.1:9/v1"}}
models: {small: {provider: fake, model: m}}
routes: [{name: r, examples: [hi], target: small}]
default: {target: small}
"""
    registry = parse_registry(base + "batches: {}\n").registry
    assert registry.batches == BatchesSettings()
    store = BatchStore.open(registry)
    assert store is not None and store.url == "memory"
    assert BatchStore.open(parse_registry(base).registry) is None
    quota = parse_registry(base + "batches: {max_key_files: 20, max_key_bytes: 104857600}\n")
    assert any(
        line.endswith(", each key at most 20 files and 104857600 bytes")
        for line in summarize(quota)
    )
    running = parse_registry(base + "batches: {max_key_batches: 3}\n")
    assert any(line.endswith(", each key at most 3 batches running") for line in summarize(running))
    for bad, field in (
        ("{concurrency: 0}", "concurrency"),
        ("{max_file_bytes: 10, max_bytes: 2000}", "max_file_bytes"),
        ("{max_file_bytes: 4096, max_bytes: 2048}", "max_file_bytes"),
        ("{url: ftp://x}", "url"),
        ("{lease_s: 0.5}", "lease_s"),
        ("{max_key_files: 0}", "max_key_files"),
        ("{max_key_bytes: 100}", "max_key_bytes"),
        ("{max_key_batches: 0}", "max_key_batches"),
        ("{max_key_bytes: 50000000}", "max_key_bytes (50000000)"),  # < max_file_bytes
    ):
        with pytest.raises(ConfigErrors) as caught:
            parse_registry(base + f"batches: {bad}\n")
        assert field in str(caught.value)


def test_a_running_batchs_answers_are_its_keys_last_records_evicted() -> None:
    """In memory the key holding the most loses its oldest records first; a running
    batch's parts and lease go last: alice's uploads, while her batch runs (its first
    part written long before, as after a reload), evict her older files instead, and the
    batch's output reads back whole (on the old code its first part went and it read
    None)."""
    store = BatchStore(
        BatchesSettings(max_bytes=8192, max_file_bytes=2048),
        MemoryStore(1000, 8192, owner_of=owner_group),
    )

    async def go() -> None:
        output, batch_id = new_file_id(), new_batch_id()
        await store.hold("alice", batch_id, "run-1")  # renewed by its run, never read
        await store.put_part("alice", output, 0, b"a" * 1500)
        uploads = [_file() for _ in range(6)]
        for upload in uploads:
            await store.put_file("alice", upload, b"u" * 1500)
        assert await store.held("alice", batch_id)  # else a read would fail the batch
        await store.put_part("alice", output, 1, b"b" * 1000)
        await store.put_file("alice", {"id": output, "object": "file"}, parts=2)
        assert await store.content("alice", output) == b"a" * 1500 + b"b" * 1000
        assert await store.content("alice", uploads[0]["id"]) is None  # hers went instead
        # the batch ended: its file is one of alice's records like any other
        for upload in [_file() for _ in range(6)]:
            await store.put_file("alice", upload, b"u" * 1500)
        assert await store.content("alice", output) is None

    run(go())


def test_an_ended_batchs_lease_is_not_kept_before_its_keys_files() -> None:
    """A batch's lease is pinned while it runs; once the batch has ended it holds
    nothing: alice's three ended batches, then four uploads (nine records) in a store of
    nine, evict her batches' records, never her first upload (on the old code their
    leases, left pinned, outlived it: an ended batch's lease was kept before her files)."""
    store = BatchStore(BatchesSettings(), MemoryStore(9, 1 << 20, owner_of=owner_group))

    async def go() -> None:
        for _ in range(3):
            record = BatchRecord({"id": new_batch_id(), "status": "in_progress"}, "o", "e")
            await store.put_batch("alice", record)
            await store.hold("alice", record.id, "run-1")
            await store.put_batch("alice", record.with_batch(status="completed"))
        uploads = [_file() for _ in range(4)]
        for upload in uploads:
            await store.put_file("alice", upload, b"u" * 100)
        assert await store.content("alice", uploads[0]["id"]) == b"u" * 100

    run(go())
