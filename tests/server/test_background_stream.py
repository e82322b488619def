"""A background stream's events kept as made and followed (llmroute.server.background_stream),
in process against a memory store: batches written while the stream goes and at its end,
a follower resuming after any event from the run or from the store, and one whose store
stops answering ending with OpenAI's ``error`` event that says where to resume."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence

import pytest

from llmroute.registry.schema import StoredResponsesSettings
from llmroute.server import background_stream
from llmroute.server.background_stream import EventChunks, RunLog, follow, kept_as_made
from llmroute.state.stored_responses import ResponseStore, StoredResponse
from llmroute.state.stores import MemoryStore, StoreUnavailable


def _event(kind: str, number: int) -> bytes:
    data = {"type": kind, "sequence_number": number}
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


EVENTS = [
    _event("response.created", 0),
    _event("response.in_progress", 1),
    *(_event("response.output_text.delta", n) for n in range(2, 7)),
    _event("response.completed", 7),
]


async def _slowly(events: Sequence[bytes], gap_s: float) -> AsyncIterator[bytes]:
    for event in events:
        await asyncio.sleep(gap_s)
        yield event


def _numbers(events: list[bytes]) -> list[int]:
    return [json.loads(e.split(b"data: ", 1)[1])["sequence_number"] for e in events]


async def _nothing() -> StoredResponse | None:
    return None


def _store() -> ResponseStore:
    return ResponseStore(StoredResponsesSettings(), MemoryStore(1000, 1 << 20))


def test_events_are_kept_in_batches_and_followed_from_run_or_store() -> None:
    async def go() -> tuple[list[int], list[int], list[int], int]:
        background_stream.FLUSH_S = 0.05
        chunks = EventChunks(_store(), "team", "resp_x")
        run = RunLog()
        making = asyncio.create_task(kept_as_made(_slowly(EVENTS, 0.03), run, chunks))
        live = asyncio.create_task(_drain(follow(chunks, run, 2, _nothing)))
        await making
        batches = len(await chunks.read(0))
        later = await _drain(follow(chunks, None, 4, _nothing))  # another process, after
        whole = await _drain(follow(chunks, run, -1, _nothing))  # the run has ended
        return await live, later, whole, batches

    try:
        live, later, whole, batches = asyncio.run(go())
    finally:
        background_stream.FLUSH_S = 0.25
    assert live == list(range(3, 8))
    assert later == list(range(5, 8))
    assert whole == list(range(8))
    assert 1 < batches <= 8  # written while the stream went, not only at its end


async def _drain(events: AsyncIterator[bytes]) -> list[int]:
    return _numbers([event async for event in events])


class _Down(MemoryStore):
    """A store that has stopped answering reads."""

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        raise StoreUnavailable("redis redis://127.0.0.1:6379/0: connection refused")


def test_a_follower_whose_store_stops_answering_says_where_to_resume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(background_stream, "OUTAGE_S", 0.2)  # 5 s: riding out an outage

    async def go() -> list[bytes]:
        store = ResponseStore(StoredResponsesSettings(), _Down(10, 1 << 20))
        return [event async for event in follow(EventChunks(store, "", "r"), None, 3, _nothing)]

    (error,) = asyncio.run(go())
    assert error.startswith(b"event: error\n")
    data = json.loads(error.split(b"data: ", 1)[1])
    assert data["code"] == "store_unavailable" and data["sequence_number"] == 4
    assert "starting_after=3" in data["message"]


class _Paused(MemoryStore):
    """A Redis store just after a failure: its writes are not asked of Redis for a
    moment (its pause, a second in the gateway), then they are."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        super().__init__(max_entries, max_bytes)
        self.until = time.monotonic() + 0.2

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        left = self.until - time.monotonic()
        if left > 0:
            raise StoreUnavailable("redis 127.0.0.1:6379: not asked for a moment", left)
        await super().set(key, value, ttl_s)


def test_a_runs_last_events_are_kept_past_the_stores_pause() -> None:
    """The last flush of a run is its events' last chance: one that fell in the pause
    after a Redis failure (nothing asked) lost them, though Redis answered again."""

    async def go() -> int:
        chunks = EventChunks(
            ResponseStore(StoredResponsesSettings(), _Paused(1000, 1 << 20)), "team", "r"
        )
        await kept_as_made(_slowly(EVENTS, 0), RunLog(), chunks)  # one flush: the last
        return len(await chunks.read(0))

    assert asyncio.run(go()) == 1


def _ended(status: str) -> StoredResponse:
    response = {"id": "r", "object": "response", "status": status, "background": True}
    return StoredResponse(response, [], [], streamed=True)


@pytest.mark.parametrize(
    ("status", "closing"),
    [
        ("completed", "response.completed"),
        ("incomplete", "response.incomplete"),
        ("failed", "response.failed"),
        ("cancelled", None),
    ],
)
@pytest.mark.parametrize("where", ["this process", "another process"])
def test_a_follower_whose_last_batch_never_came_ends_as_the_record_says(
    status: str, closing: str | None, where: str
) -> None:
    """A run whose last batch of events never reached the store (its store failing at
    its end) left followers reading the store ending without ``response.completed``
    once the record said ended: only a failed one got its closing event, made from the
    record. Each now ends with the record's closing event (none for a cancelled one)."""

    async def go() -> list[bytes]:
        chunks = EventChunks(_store(), "team", "r")
        await chunks.write(0, EVENTS[:5])  # the run's last batch, from 5 on, was lost
        run = None
        if where == "this process":
            run = RunLog()
            run.close()

        async def settled() -> StoredResponse | None:
            return _ended(status)

        return [event async for event in follow(chunks, run, 2, settled)]

    events = asyncio.run(go())
    assert _numbers(events[:2]) == [3, 4]
    kinds = [e.split(b"\n", 1)[0].removeprefix(b"event: ").decode() for e in events[2:]]
    assert kinds == ([] if closing is None else [closing])
    if closing is not None:
        data = json.loads(events[2].split(b"data: ", 1)[1])
        assert (data["sequence_number"], data["response"]["status"]) == (5, status)


def test_a_follower_waits_a_poll_for_the_last_batch_of_a_run_that_has_just_ended() -> None:
    """A run keeps its response ended, then writes its last batch: a follower of
    another process reading the record ended in between read the store once more at
    once, found nothing yet and ended there (now: with a closing event made from the
    record, without the last events). It gives the last batch a poll to come."""

    async def go() -> list[bytes]:
        chunks = EventChunks(_store(), "team", "r")
        await chunks.write(0, EVENTS[:5])
        landing: list[asyncio.Task[None]] = []

        async def last_batch() -> None:
            await asyncio.sleep(0.02)
            await chunks.write(1, EVENTS[5:])

        async def settled() -> StoredResponse | None:
            landing.append(asyncio.create_task(last_batch()))
            return _ended("completed")

        return [event async for event in follow(chunks, None, 2, settled)]

    events = asyncio.run(go())
    assert _numbers(events) == [3, 4, 5, 6, 7]
    assert events[-1] == EVENTS[-1]


@pytest.mark.parametrize("others", [False, True], ids=["alone", "beside other calls"])
def test_a_follower_rides_out_a_store_outage_shorter_than_its_bound(
    redis_namespace: str, others: bool
) -> None:
    """A follower reading the store through a proxy to the real Redis that refuses every
    connection for 3 s, shorter than the 5 s it rides out: it made 5 tries over ~2.5 s,
    those refused unasked in the store's 1 s pause after a failure counted, and ended
    the client's stream with ``store_unavailable`` (traced at 1.5 s beside other calls,
    its last try landed 0.2 s after the pause another call's failure had kept going).
    Alone, and beside other calls to the store (other requests) whose failures keep
    the pause going."""
    from redis_service import REDIS_URL
    from stall_proxy import stall_proxy

    from llmroute.state.redis_store import RedisStore

    settings = StoredResponsesSettings(namespace=redis_namespace)

    async def go(proxied: str) -> list[bytes]:
        through = RedisStore(proxied, settings.timeout_s)
        direct = RedisStore(REDIS_URL, settings.timeout_s)
        follower = EventChunks(ResponseStore(settings, through), "team", "r")
        writer = EventChunks(ResponseStore(settings, direct), "team", "r")  # elsewhere
        await writer.write(0, EVENTS[:3])
        record = _ended("in_progress")

        async def settled() -> StoredResponse | None:
            await through.get(f"{redis_namespace}:nothing")
            return record

        async def other_calls() -> None:
            while True:
                with contextlib.suppress(StoreUnavailable):
                    await through.get(f"{redis_namespace}:other")
                await asyncio.sleep(0.05)

        got: list[bytes] = []

        async def read() -> None:
            async for event in follow(follower, None, -1, settled):
                got.append(event)

        reading = asyncio.create_task(read())
        calling = asyncio.create_task(other_calls()) if others else None
        while len(got) < 3:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # a poll or so found nothing more
        proxy.refuse()
        await asyncio.sleep(3.0)
        proxy.resume()
        await writer.write(1, EVENTS[3:])
        await asyncio.wait_for(reading, 30)
        if calling is not None:
            calling.cancel()
        await through.aclose()
        await direct.aclose()
        return got

    with stall_proxy(REDIS_URL) as (proxy, url):
        events = asyncio.run(go(url))
    assert events == EVENTS, [e.split(b"\n", 1)[0] for e in events]
