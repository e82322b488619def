"""`BatchRun` when its store stops answering (a Redis outage): the batch is not kept
failed for it but left in progress with its lease given up, for the next read to take
over, and the run says so in the log. A store standing in for Redis: the real one is
shared by the suite and cannot be stopped for one test."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from llmroute.registry.schema import BatchesSettings
from llmroute.server.batch_run import BatchRun
from llmroute.server.state import InFlight
from llmroute.state import MemoryStore, StoreUnavailable
from llmroute.state.batches import BatchRecord, BatchStore


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


class _Gateway:
    """What a run uses of its gateway when it fails before sending anything."""

    def __init__(self) -> None:
        self.inflight = InFlight()
        self.max_body_bytes = 1 << 20


def test_a_store_outage_leaves_the_batch_for_the_next_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kv = _Outage()
    store = BatchStore(BatchesSettings(url="redis://127.0.0.1:6379/0"), kv)
    batch: dict[str, Any] = {
        "id": "batch_x",
        "status": "validating",
        "endpoint": "/v1/chat/completions",
        "input_file_id": "file-in",
        "expires_at": 2**40,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
    }
    record = BatchRecord(batch, "file-o", "file-e")
    counted: list[tuple[str, str]] = []

    async def go() -> tuple[BatchRecord | None, bool]:
        await store.put_file("team", {"id": "file-in", "purpose": "batch"}, b"{}\n")
        kv.contents = {store._key("team", "content\0file-in")}
        kv.down = True
        await store.put_batch("team", record, new=True)
        await store.hold("team", record.id, "run-1")
        run = BatchRun(
            None,  # type: ignore[arg-type]  # never reached: the run stops before a request
            _Gateway(),  # type: ignore[arg-type]
            store,
            "team",
            record,
            asyncio.Semaphore(1),
            lambda kind, outcome: counted.append((kind, outcome)),
            holder="run-1",
        )
        await run()
        await asyncio.sleep(0.01)  # a lease given up expires in a millisecond
        return await store.get_batch("team", record.id), await store.held("team", record.id)

    with caplog.at_level(logging.WARNING, "llmroute.batches"):
        kept, held = asyncio.run(go())
    assert kept is not None and kept.status == "validating"  # not failed for an outage
    assert not held  # its lease given up: the next read takes it over
    assert counted == [("batch", "handed_over")]
    assert "left for the next read to take over" in caplog.text
