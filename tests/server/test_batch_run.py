"""`BatchRun` when its store stops answering (a Redis outage): the batch is not kept
failed for it but left in progress with its lease given up, for the next read to take
over, and the run says so in the log. A store standing in for Redis: the real one is
shared by the suite and cannot be stopped for one test."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from redis_service import REDIS_URL
from starlette.applications import Starlette
from starlette.requests import Request

from llmroute.registry.schema import ApiKey, BatchesSettings
from llmroute.server.auth import let_in_as
from llmroute.server.batch_run import PART_BYTES, BatchRun
from llmroute.server.batches import BatchRuns, follow_reload
from llmroute.server.state import Gateway, InFlight
from llmroute.state import MemoryStore, StoreUnavailable
from llmroute.state.batches import BatchRecord, BatchStore
from llmroute.state.stores import state_store


class _Outage(MemoryStore):
    """A memory store that looks shared and, once `down`, fails reads of `contents`."""

    url = "redis://127.0.0.1:6379/0"

    def __init__(self) -> None:
        super().__init__(100, 1 << 20)
        self.down = False
        self.contents: set[str] = set()

    async def get(self, key: str) -> bytes | None:
        if self.down and key in self.contents:
            raise StoreUnavailable("redis 127.0.0.1:6379: connection refused")
        return await super().get(key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        if self.down and key in self.contents:
            raise StoreUnavailable("redis 127.0.0.1:6379: connection refused")
        await super().set(key, value, ttl_s)

    async def set_pinned(self, key: str, value: bytes, ttl_s: float) -> None:
        if self.down and key in self.contents:
            raise StoreUnavailable("redis 127.0.0.1:6379: connection refused")
        await super().set_pinned(key, value, ttl_s)

    async def renew(self, key: str, value: bytes, ttl_s: float) -> bool:
        if self.down and key in self.contents:
            raise StoreUnavailable("redis 127.0.0.1:6379: connection refused")
        return await super().renew(key, value, ttl_s)


class _Gateway:
    """What a run uses of its gateway when it fails before sending anything."""

    def __init__(self) -> None:
        self.inflight = InFlight()
        self.max_body_bytes = 1 << 20


def _record(batch_id: str) -> BatchRecord:
    """A new chat-completions batch of the input file ``file-in``."""
    batch: dict[str, Any] = {
        "id": batch_id,
        "status": "validating",
        "endpoint": "/v1/chat/completions",
        "input_file_id": "file-in",
        "expires_at": 2**40,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
    }
    return BatchRecord(batch, "file-o", "file-e")


def _run(
    store: BatchStore,
    record: BatchRecord,
    count: Callable[[str, str], None],
    kind: type[BatchRun] = BatchRun,
) -> BatchRun:
    """`kind`'s run of `record` for the key ``team``, holding its lease as ``run-1``,
    with no request to answer from (none reaches it)."""
    return kind(
        None,  # type: ignore[arg-type]
        _Gateway(),  # type: ignore[arg-type]
        store,
        "team",
        record,
        asyncio.Semaphore(1),
        count,
        holder="run-1",
    )


def test_a_store_outage_leaves_the_batch_for_the_next_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kv = _Outage()
    store = BatchStore(BatchesSettings(url="redis://127.0.0.1:6379/0"), kv)
    record = _record("batch_x")
    counted: list[tuple[str, str]] = []

    async def go() -> tuple[BatchRecord | None, bool]:
        await store.put_file("team", {"id": "file-in", "purpose": "batch"}, b"{}\n")
        kv.contents = {store._key("team", "content\0file-in")}
        kv.down = True
        await store.put_batch("team", record, new=True)
        await store.hold("team", record.id, "run-1")
        run = _run(store, record, lambda kind, outcome: counted.append((kind, outcome)))
        await run()
        await asyncio.sleep(0.01)  # a lease given up expires in a millisecond
        return await store.get_batch("team", record.id), await store.held("team", record.id)

    with caplog.at_level(logging.WARNING, "llmroute.batches"):
        kept, held = asyncio.run(go())
    assert kept is not None and kept.status == "validating"  # not failed for an outage
    assert not held  # its lease given up: the next read takes it over
    assert counted == [("batch", "handed_over")]
    assert "left for the next read to take over" in caplog.text


def test_a_batch_whose_end_cannot_be_kept_is_not_counted_as_ended(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The store stopped answering as the batch ended: the run logged that it would be
    "found failed" and counted it completed (or failed), though the next read takes it
    over and runs it to its end there (counted again)."""
    kv = _Outage()
    store = BatchStore(BatchesSettings(url="redis://127.0.0.1:6379/0"), kv)
    record = _record("batch_y")
    counted: list[tuple[str, str]] = []

    async def go() -> None:
        await store.put_file("team", {"id": "file-in", "purpose": "batch"}, b"{}\n")
        await store.put_batch("team", record, new=True)
        await store.hold("team", record.id, "run-1")
        kv.contents = {store._key("team", f"batch\0{record.id}")}  # its record's writes fail
        kv.down = True
        run = _run(store, record, lambda kind, outcome: counted.append((kind, outcome)))
        await run()

    with caplog.at_level(logging.WARNING, "llmroute.batches"):
        asyncio.run(go())
    assert counted == [("batch", "handed_over")]
    assert "the next read takes it over once its lease lapses" in caplog.text
    assert "found failed" not in caplog.text


class _Answering(BatchRun):
    """A run whose requests are answered here, noting when each was sent."""

    sent: list[float]

    async def _answer(self, line: Any, content: bytes) -> None:
        self.sent.append(time.monotonic())
        await asyncio.sleep(0.05)
        self.answers.add(b'{"custom_id": "%s"}\n' % line.custom_id.encode(), True, None)


def test_a_run_sends_nothing_while_its_store_does_not_answer() -> None:
    """Redis down mid-batch: the run went on calling the models for answers it could
    neither keep nor hold the batch for (another process then ran them all again)."""
    kv = _Outage()
    store = BatchStore(BatchesSettings(url="redis://127.0.0.1:6379/0", concurrency=1), kv)
    lines = b"".join(
        b'{"custom_id": "r%d", "method": "POST", "url": "/v1/chat/completions", '
        b'"body": {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}}\n' % i
        for i in range(60)
    )
    record = _record("batch_z")

    async def go() -> tuple[list[float], float, float]:
        await store.put_file("team", {"id": "file-in", "purpose": "batch"}, lines)
        await store.put_batch("team", record, new=True)
        await store.hold("team", record.id, "run-1")
        run = _run(store, record, lambda kind, outcome: None, _Answering)
        run.sent = []
        task = asyncio.create_task(run())
        await asyncio.sleep(0.3)
        kv.contents = {store._lease("team", record.id)}
        kv.down = True  # the lease cannot be renewed
        down = time.monotonic()
        await asyncio.sleep(2.5)  # more than a tick (1 s) to notice, then a pause
        up = time.monotonic()
        kv.down = False
        await task
        return run.sent, down, up

    sent, down, up = asyncio.run(go())
    assert len(sent) == 60  # every line answered once, in the end
    # noticed within a tick: nothing sent in the last second of the outage
    assert not [t for t in sent if down + 1.5 < t < up]


class _Held(BatchRun):
    """A run whose requests are answered here, large (a part written by the next tick),
    the last one only once `go_on` is set."""

    go_on: asyncio.Event

    async def _answer(self, line: Any, content: bytes) -> None:
        if line.custom_id == "last":
            await self.go_on.wait()
        answer = {"custom_id": line.custom_id, "padding": "x" * PART_BYTES}
        self.answers.add(json.dumps(answer).encode() + b"\n", True, None)


def test_a_redis_batch_whose_answers_redis_evicted_ends_failed(redis_namespace: str) -> None:
    """Redis's own ``maxmemory-policy`` (any but ``noeviction``: the parts expire) may
    evict a running batch's answers (here a part deleted by hand): the batch ended
    ``completed`` with an output file that could not be read; it ends ``failed``,
    ``output_evicted``, naming Redis, as a memory store's does."""
    import redis

    settings = BatchesSettings(url=REDIS_URL, namespace=redis_namespace, concurrency=1)
    kv = state_store("batches", REDIS_URL, 100, 1 << 20, 2.0, per_owner=True)
    store = BatchStore(settings, kv)
    lines = b"".join(
        b'{"custom_id": "%s", "method": "POST", "url": "/v1/chat/completions", '
        b'"body": {"model": "auto", "messages": []}}\n' % name
        for name in (b"first", b"last")
    )
    record = _record("batch_evicted")

    async def go() -> BatchRecord | None:
        await store.put_file("team", {"id": "file-in", "purpose": "batch"}, lines)
        await store.put_batch("team", record, new=True)
        await store.hold("team", record.id, "run-1")
        run = _run(store, record, lambda kind, outcome: None, _Held)
        run.go_on = asyncio.Event()
        task = asyncio.create_task(run())
        while (kept := await store.get_batch("team", record.id)) is None or (
            kept.output_written.parts == 0
        ):
            await asyncio.sleep(0.05)
        with redis.Redis.from_url(REDIS_URL) as client:
            assert client.delete(store._part_key("team", "file-o", 0)) == 1
        run.go_on.set()
        await task
        found = await store.get_batch("team", record.id)
        await store.aclose()
        return found

    done = asyncio.run(asyncio.wait_for(go(), 30))
    assert done is not None and done.status == "failed", done
    errors = done.batch["errors"]["data"]
    assert [e["code"] for e in errors] == ["output_evicted"]
    assert "Redis" in errors[0]["message"]


class _Finishing(BatchRun):
    """A run whose one request is answered here once `answer` is set, and whose last
    write (as it ends) waits, once `settling` is set, for `settled`."""

    answer: asyncio.Event
    settling: asyncio.Event
    settled: asyncio.Event

    async def _answer(self, line: Any, content: bytes) -> None:
        await self.answer.wait()
        self.answers.add(b'{"custom_id": "%s"}\n' % line.custom_id.encode(), True, None)

    async def _flush(self, final: bool = False) -> None:
        if final:
            self.settling.set()
            await self.settled.wait()
        await super()._flush(final)


def _versions(store: BatchStore, key: ApiKey) -> list[Gateway]:
    """Three registry versions keeping batches in `store`: `key` in the first two, the
    third without it (revoked; another key left)."""
    other = ApiKey(name="other", key_env="LLMROUTE_TEST_OTHER")

    def version(*keys: ApiKey) -> Gateway:
        auth = SimpleNamespace(settings=SimpleNamespace(keys=keys))
        return Gateway(None, None, 1 << 20, auth=auth, batches=store)  # type: ignore[arg-type]

    return [version(key, other), version(key, other), version(other)]


def test_a_batch_moved_by_a_reload_then_revoked_as_it_finished_ends_key_removed() -> None:
    """A reload moved the batch to the next registry version (its request in flight let
    finish); a second one revoked its key after its last request, as the run wrote what
    it made on its way to going on: the batch was then left for a next read, its lease
    given up, ``in_progress`` and counted against ``max_key_batches`` until it expired
    (in memory no read ends it: a read needs the revoked key). It ends ``failed``,
    ``key_removed``, with its answer in its output file, and no run goes on with it."""
    kv = MemoryStore(100, 1 << 20)
    store = BatchStore(BatchesSettings(concurrency=1), kv)
    key = ApiKey(name="team", key_env="LLMROUTE_TEST_TEAM")
    first, second, third = _versions(store, key)
    app = Starlette()
    app.state.gateway = first
    scope: dict[str, Any] = {"type": "http", "app": app, "headers": []}
    let_in_as(scope, key)
    lines = b"".join(
        b'{"custom_id": "%s", "method": "POST", "url": "/v1/chat/completions", '
        b'"body": {"model": "auto", "messages": []}}\n' % name
        for name in (b"first", b"next")
    )
    record = _record("batch_moved")
    runs = BatchRuns()

    async def go() -> tuple[BatchRecord | None, list[str]]:
        await store.put_file("team", {"id": "file-in", "purpose": "batch"}, lines)
        await store.put_batch("team", record, new=True)
        await store.mark_running("team", record)
        await store.hold("team", record.id, "run-1")
        run = _Finishing(
            Request(scope),
            first,
            store,
            "team",
            record,
            asyncio.Semaphore(1),
            lambda *_: None,
            holder="run-1",
        )
        run.answer, run.settling, run.settled = asyncio.Event(), asyncio.Event(), asyncio.Event()
        runs.start_run(run)
        while run.record.status != "in_progress":
            await asyncio.sleep(0.01)
        app.state.gateway = second  # a reload: the batch follows it
        follow_reload(runs, first, second)
        run.answer.set()  # its request in flight answered
        await run.settling.wait()  # its last request done, its answers being written
        app.state.gateway = third  # a second reload: its key revoked
        follow_reload(runs, second, third)
        run.settled.set()
        await runs.aclose(5.0)
        found = await store.get_batch("team", record.id)
        return found, [r.batch_id for r in await store.running()]

    done, running = asyncio.run(asyncio.wait_for(go(), 30))
    assert done is not None and done.status == "failed", done
    assert [e["code"] for e in done.batch["errors"]["data"]] == ["key_removed"]
    assert done.output_written.lines == 1 and done.batch["output_file_id"] == "file-o"
    assert running == []  # no longer counted against max_key_batches


def test_a_batch_stopped_before_its_run_began_does_not_wait_for_a_slot() -> None:
    """A reload revoked the key of a batch just made, before its run's first step (its
    task made, not yet begun), every slot (``max_running``) taken: `stop` had no task to
    cancel, and the batch waited for a slot (hours, behind long batches) before it
    ended. It ends ``failed`` with the stop's error without one."""
    store = BatchStore(BatchesSettings(), MemoryStore(100, 1 << 20))
    record = _record("batch_early")
    runs = BatchRuns()

    async def go() -> BatchRecord | None:
        await store.put_file("team", {"id": "file-in", "purpose": "batch"}, b"{}\n")
        await store.put_batch("team", record, new=True)
        await store.hold("team", record.id, "run-1")
        run = _run(store, record, lambda kind, outcome: None)
        run.slots = asyncio.Semaphore(0)  # every slot taken
        runs.start_run(run)
        run.stop("key_removed", "revoked")  # in the same step: its task has not begun
        while runs.running(record.id):
            await asyncio.sleep(0.01)
        return await store.get_batch("team", record.id)

    done = asyncio.run(asyncio.wait_for(go(), 10))
    assert done is not None and done.status == "failed", done
    assert [e["code"] for e in done.batch["errors"]["data"]] == ["key_removed"]
