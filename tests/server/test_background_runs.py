"""A background response's run, in-process (`_start_in_background`, `BackgroundRuns`):
what its end gives back, however it ends, and what is left of it in the store when
it is refused after its record was written or deleted while it runs. The stores are
real (memory, and Redis at `REDIS_URL`); the request is a bare ASGI scope."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from types import SimpleNamespace
from typing import Any

import pytest
from redis_service import REDIS_URL
from stall_proxy import StallProxy, stall_proxy
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from llmroute.registry.schema import ApiKey, StoredResponsesSettings
from llmroute.server.auth import Charges, account_of
from llmroute.server.background import BackgroundRuns, background_runs
from llmroute.server.background_stream import EventChunks, RunLog
from llmroute.server.errors import GatewayError
from llmroute.server.responses import _cancel, _forget
from llmroute.server.responses_background import (
    _answer_in_background,
    _Queued,
    _start_in_background,
    _Stream,
    reaped,
)
from llmroute.server.responses_kept import _chain_of, _Kept
from llmroute.state.conversations import ConversationStore
from llmroute.state.limits import MemoryLimits
from llmroute.state.stored_responses import BrokenChain, ResponseStore
from llmroute.state.stores import MemoryStore, RedisStore, StoreUnavailable, owner_group

_GATEWAY: Any = SimpleNamespace(inflight=contextlib.nullcontext())


def _request() -> Request:
    scope = {"type": "http", "app": Starlette(), "method": "POST", "path": "/v1/responses"}
    return Request({**scope, "headers": [], "query_string": b""})


def _memory_store() -> ResponseStore:
    return ResponseStore(StoredResponsesSettings(), MemoryStore(100, 1 << 20, owner_of=owner_group))


def _queued(
    store: ResponseStore, release: Callable[[], None] | None = None
) -> tuple[_Kept, _Queued]:
    """A background request's front and its response as first answered."""
    front = _Kept(store, "team")
    front.background = True
    response = front.queued({"model": "small", "background": True})
    record = front.record(response)
    queued = _Queued(response, record, record.to_bytes())
    front.queued_as = queued.value  # as `_start_in_background` keeps it
    return front, queued if release is None else dataclasses.replace(queued, release=release)


def _requeued(front: _Kept, queued: _Queued) -> _Queued:
    """`queued` made again from `front` as it is now (a stream's, one in a conversation:
    its record says so), and kept as `_start_in_background` keeps it."""
    record = front.record(queued.response)
    queued = dataclasses.replace(queued, record=record, value=record.to_bytes())
    front.queued_as = queued.value
    return queued


def test_a_run_gives_back_its_keys_tokens_once_however_it_ends() -> None:
    """The tokens a background request holds against its key's tpm were given back only
    by its answer: a run cancelled before its task's first step (a shutdown or a cancel
    right after it started) runs none of its code, so they counted against the key until
    their minute ended. Now its task's end gives them back too, and a run that gave them
    back itself is not given back twice (which would free another request's hold)."""
    limits = MemoryLimits()
    charges = Charges(limits)
    key = ApiKey(name="frugal", key_env="LLMROUTE_TEST_FRUGAL_KEY", tpm=10_000)
    store = _memory_store()

    async def never() -> Response:
        raise AssertionError("a run cancelled before its first step asks for nothing")

    async def go() -> float:
        request = _request()
        runs = background_runs(request)
        others = await charges.hold(key, 50)  # another request's, still in flight
        assert others is not None
        front, queued = _queued(store, await charges.hold(key, 400))
        await _start_in_background(request, _GATEWAY, front, {}, queued, never)
        assert runs.cancel(front.id)  # before its task's first step
        release = await charges.hold(key, 300)
        assert release is not None

        async def answered() -> Response:  # gives its tokens back itself, as serve_chat does
            release()
            return Response()

        front, queued = _queued(store, release)
        await _start_in_background(request, _GATEWAY, front, {}, queued, answered)
        await runs.aclose(5.0)
        await charges.aclose()
        return await limits.tokens(account_of(key))

    assert asyncio.run(go()) == 50


class _Lands:
    """A key-value store (`kv`'s) where `landing()` (another request's write) is made just
    after the `reads`-th read of key `at` from now (a run or a read looked at the
    response, and writes it next)."""

    def __init__(self, kv: Any) -> None:
        self.kv = kv
        self.at = ""
        self.reads = 0
        self.landing: Callable[[], Awaitable[Any]] = _nothing

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kv, name)

    async def get(self, key: str) -> bytes | None:
        found = await self.kv.get(key)
        if key == self.at:
            self.reads -= 1
            if self.reads == 0:
                await self.landing()
        return found


async def _nothing() -> None:
    pass


def _stores(
    where: str, bound: int | None, namespace: str
) -> tuple[ResponseStore, _Lands, ResponseStore]:
    """A response store whose reads of a response can have another request's write land
    after them (`_Lands`), and one over the same keys, unwatched, for that write."""
    url = REDIS_URL if where == "redis" else "memory"
    settings = StoredResponsesSettings(url=url, namespace=namespace, max_key_responses=bound)
    kv = RedisStore(url, 2) if url != "memory" else MemoryStore(100, 1 << 20, owner_of=owner_group)
    lands = _Lands(kv)
    return ResponseStore(settings, lands), lands, ResponseStore(settings, kv)


_COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "up-small",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


async def _answered(front: _Kept, store: ResponseStore) -> None:
    await front.answer(_COMPLETION, "small", {"model": "small", "input": "hi"})


async def _failed(front: _Kept, store: ResponseStore) -> None:
    assert not await front.fail(500, "boom")  # False: deleted, as it says


async def _found_abandoned(front: _Kept, store: ResponseStore) -> None:
    assert await reaped(store, "team", front.id) is None  # no lease: read again, then kept


async def _cancelled(front: _Kept, store: ResponseStore) -> None:
    record = await store.get("team", front.id)  # as `POST …/cancel` reads it
    assert record is not None
    with pytest.raises(GatewayError) as caught:
        await _cancel(_request(), store, "team", record)
    assert caught.value.status == 404


@pytest.mark.parametrize("where", ["memory", "redis"])
@pytest.mark.parametrize("bound", [None, 10], ids=["unbounded", "max_key_responses"])
def test_a_response_deleted_just_before_a_write_of_its_run_stays_deleted(
    where: str, bound: int | None, redis_namespace: str
) -> None:
    """Each write of a background response after its first (its answer, its failure,
    found abandoned, cancelled) read it, then wrote it: a ``DELETE`` landing in between
    was undone, the response kept again (with its text) until ``ttl_s``. Now the write
    is made only over the record, in one step (Redis ``SET XX``, or in the bound's
    script), so the response stays deleted."""
    writes = {_answered: 1, _failed: 1, _found_abandoned: 2, _cancelled: 1}

    async def go() -> dict[str, bool]:
        store, lands, plain = _stores(where, bound, redis_namespace)
        kept = {}
        try:
            for write, reads in writes.items():
                front, queued = _queued(store)
                assert await store.put("team", queued.record)
                lands.at, lands.reads = store.key("team", front.id), reads
                lands.landing = partial(plain.delete, "team", front.id)
                await write(front, store)
                kept[write.__name__] = await plain.get("team", front.id) is not None
        finally:
            await store.aclose()
        return kept

    assert asyncio.run(go()) == dict.fromkeys([w.__name__ for w in writes], False)


async def _answered_late(front: _Kept, store: ResponseStore) -> str:
    answered = await front.answer(_COMPLETION, "small", {"model": "small", "input": "hi"})
    return str(answered["status"])


async def _failed_late(front: _Kept, store: ResponseStore) -> str:
    return "cancelled" if not await front.fail(500, "boom") else "failed"


async def _reaped_late(front: _Kept, store: ResponseStore) -> str:
    found = await reaped(store, "team", front.id)  # no lease: read again, then kept
    return "gone" if found is None else str(found.response["status"])


async def _cancelled_late(front: _Kept, store: ResponseStore) -> str:
    record = await store.get("team", front.id)  # as `POST …/cancel` reads it
    assert record is not None
    return str((await _cancel(_request(), store, "team", record))["status"])


@pytest.mark.parametrize("where", ["memory", "redis"])
@pytest.mark.parametrize("bound", [None, 10], ids=["unbounded", "max_key_responses"])
def test_a_background_response_ended_just_before_a_write_of_its_run_stays_so(
    where: str, bound: int | None, redis_namespace: str
) -> None:
    """The writes of a background response after its first read it running, then wrote
    over it whatever it held: a cancel landing in between was overwritten by the run's
    answer (``completed``, its text kept) or failure, or by a read finding it abandoned
    (``failed``), and the run's answer landing between a cancel's read and write was
    overwritten by ``cancelled``. Now each is written only over the record as it was
    read (in one step: a script on Redis), so what landed first stays, and is told."""
    writes = {
        _answered_late: "cancelled",
        _failed_late: "cancelled",
        _reaped_late: "cancelled",
        _cancelled_late: "completed",
    }

    async def go() -> dict[str, tuple[str, str]]:
        store, lands, plain = _stores(where, bound, redis_namespace)
        seen = {}
        try:
            for write, landed in writes.items():
                front, queued = _queued(store)
                assert await store.put("team", queued.record)
                ended = {**queued.response, "status": landed}
                lands.at, lands.reads = store.key("team", front.id), 1 + (write is _reaped_late)
                lands.landing = partial(
                    plain.put, "team", dataclasses.replace(queued.record, response=ended)
                )
                told = await write(front, store)
                kept = await plain.get("team", front.id)
                assert kept is not None
                seen[write.__name__] = (told, str(kept.response["status"]))
        finally:
            await store.aclose()
        return seen

    told_by_answer = "completed"  # the answer was made: its caller is told it as made
    assert asyncio.run(go()) == {
        "_answered_late": (told_by_answer, "cancelled"),
        "_failed_late": ("cancelled", "cancelled"),
        "_reaped_late": ("cancelled", "cancelled"),
        "_cancelled_late": ("completed", "completed"),
    }


@pytest.mark.parametrize("where", ["memory", "redis"])
@pytest.mark.parametrize("landing", ["deleted", "cancelled"])
def test_a_background_response_ended_just_before_its_answer_adds_no_turn(
    where: str, landing: str, redis_namespace: str
) -> None:
    """A background response's answer looked once at whether it still ran, then added
    its turn to its conversation and kept it: a ``DELETE`` or cancel landing in between
    was not undone, but the conversation gained the turn of a response nobody wanted
    (and the run was counted ``completed``). Now the answer is kept first, over its
    running record, and added only once kept; the run is counted ``cancelled``."""

    async def go() -> tuple[list[str], list[dict[str, Any]]]:
        store, lands, plain = _stores(where, None, redis_namespace)
        conversations = ConversationStore(plain)
        try:
            talk = await conversations.create("team", {}, [])
            front, queued = _queued(store)
            front._conversation = talk.id
            assert await store.put("team", queued.record)
            lands.at, lands.reads = store.key("team", front.id), 1
            ended = {**queued.response, "status": "cancelled"}
            cancel = partial(plain.put, "team", dataclasses.replace(queued.record, response=ended))
            lands.landing = (
                cancel if landing == "cancelled" else partial(plain.delete, "team", front.id)
            )
            outcomes: list[str] = []

            async def answer() -> Any:
                return await front.answer(_COMPLETION, "small", {"model": "small", "input": "hi"})

            await _answer_in_background(answer, _GATEWAY, front, outcomes.append)
            return outcomes, await conversations.items("team", talk.id)
        finally:
            await store.aclose()

    assert asyncio.run(go()) == (["cancelled"], [])


def test_a_shutdown_waits_for_the_runs_started_while_it_waits() -> None:
    """`BackgroundRuns.aclose` waited only for the runs there when it began: one started
    meanwhile (by a request the shutdown cut short after its record was written, to
    forget it: `_discarded`) was neither waited for nor cancelled, left to the event
    loop's close. Now it is waited for with the others."""

    async def go() -> bool:
        runs = BackgroundRuns()
        forgotten = asyncio.Event()

        async def forget() -> None:
            await asyncio.sleep(0.05)
            forgotten.set()

        async def cut_short() -> None:
            await asyncio.sleep(0)  # the shutdown waits for it meanwhile
            runs.start("resp_discarded", forget())

        runs.start("resp_running", cut_short())
        await runs.aclose(5.0)
        return forgotten.is_set()

    assert asyncio.run(go())


class _StallsAt(RedisStore):
    """A Redis store whose Redis stops answering while key `at` is written (`timeout_s`
    0.2 s, then the store's pause), and answers again after."""

    def __init__(self, url: str, proxy: StallProxy) -> None:
        super().__init__(url, 0.2)
        self._proxy = proxy
        self.at = ""

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        if key != self.at:
            return await super().set(key, value, ttl_s)
        self._proxy.stall()
        try:
            await super().set(key, value, ttl_s)
        finally:
            self._proxy.resume()


@pytest.mark.parametrize(
    "name", ["lease\x00{}", "events\x00{}\x000"], ids=["its lease", "its first events"]
)
def test_a_background_response_refused_after_its_record_was_written_is_forgotten(
    name: str, redis_namespace: str
) -> None:
    """Redis failing between the write of a background response's record and its lease
    (or, streaming, its first events: `name`) answered the request 503, never saying its
    id, and left its record ``in_progress``: pinned, neither evicted nor counted for its
    key's bound, until ``ttl_s``. Now the record (and what else of it was written) is
    deleted in a task of the runs, past the store's pause."""
    settings = StoredResponsesSettings(url=REDIS_URL, namespace=redis_namespace, ttl_s=600)
    body = {"model": "small", "background": True, "stream": name.startswith("events")}

    async def never() -> Response:
        raise AssertionError("a refused request is not answered")

    async def go(url: str, proxy: StallProxy) -> tuple[bool, bool, int]:
        kv = _StallsAt(url, proxy)
        store = ResponseStore(settings, kv)
        front, queued = _queued(store)
        kv.at = store.key("team", name.format(front.id))
        request = _request()
        with pytest.raises(GatewayError) as refused:
            await _start_in_background(request, _GATEWAY, front, body, queued, never)
        assert refused.value.status == 503
        await background_runs(request).aclose(10.0)
        await store.aclose()
        direct = ResponseStore(settings, RedisStore(REDIS_URL, 2))
        try:
            kept = await direct.get("team", front.id) is not None
            held = await direct.held("team", front.id)
            return kept, held, len(await EventChunks(direct, "team", front.id).read(0))
        finally:
            await direct.aclose()

    with stall_proxy(REDIS_URL) as (proxy, url):
        assert asyncio.run(go(url, proxy)) == (False, False, 0)


def test_a_streamed_response_deleted_while_it_runs_leaves_no_events() -> None:
    """``DELETE`` forgets a background stream's events with its response, but the run
    went on writing its batches until it was stopped (its last flush after), so the
    events written since (the answer's text) were kept again until ``ttl_s``: unread
    (a follower stops at the first missing batch), but kept all the same."""
    store = _memory_store()
    front, queued = _queued(store)
    front._streamed = True
    stream = _Stream(RunLog(), front.events())

    async def events() -> AsyncIterator[bytes]:
        for n in range(1, 4):
            if n == 2:  # a client's DELETE, taken by another process
                assert await _forget(store, "team", front.id)
            yield f'event: response.output_text.delta\ndata: {{"n": {n}}}\n\n'.encode()
            await asyncio.sleep(0.3)  # past a flush

    async def answer() -> Response:
        return StreamingResponse(events(), media_type="text/event-stream")

    async def go() -> int:
        assert await store.put("team", queued.record)
        await stream.chunks.write(0, [b"event: response.created\ndata: {}\n\n"])
        await _answer_in_background(answer, _GATEWAY, front, lambda _: None, stream)
        kept = await store.kv.get_many([stream.chunks._key(k) for k in range(8)])
        return len([chunk for chunk in kept if chunk is not None])

    assert asyncio.run(go()) == 0


def test_a_run_started_once_the_runs_are_shut_down_is_refused() -> None:
    """A run started after `BackgroundRuns.aclose` returned (a request cut short by the
    shutdown forgetting what it wrote, `_discarded`, once the runs' wait was over) got a
    task nobody waited for or cancelled: pending when the event loop closed ("Task was
    destroyed but it is pending"). Now `start` refuses it: closed unrun, its end told."""

    async def go() -> tuple[bool, list[str], bool, int]:
        runs = BackgroundRuns()
        await runs.aclose(1.0)
        seen: list[str] = []

        async def forget() -> None:
            seen.append("ran")

        events = RunLog()
        started = runs.start("resp_late", forget(), events, partial(seen.append, "ended"))
        await asyncio.sleep(0.05)
        return started, seen, events.done, len(runs)

    assert asyncio.run(go()) == (False, ["ended"], True, 0)


class _ClosesAtLease(MemoryStore):
    """A memory store where the runs shut down (`closing`) while a response's lease is
    taken: the request is kept as the shutdown ends."""

    closing: Callable[[], Awaitable[None]] = _nothing

    async def set_pinned(self, key: str, value: bytes, ttl_s: float) -> None:
        await super().set_pinned(key, value, ttl_s)
        if value == b"1":  # a lease (a record is JSON)
            await self.closing()


@pytest.mark.parametrize("streams", [False, True], ids=["polled", "streamed"])
def test_a_background_request_kept_as_the_runs_shut_down_is_refused_and_forgotten(
    streams: bool,
) -> None:
    """A background request whose record was kept as the runs shut down started its run
    after `aclose` returned: a task nobody waited for, and its response left
    ``in_progress`` with its lease. Now it is answered 503 ``server_shutdown`` and what
    was kept of it is forgotten; one that comes after is refused before anything is
    kept."""
    kv = _ClosesAtLease(100, 1 << 20, owner_of=owner_group)
    store = ResponseStore(StoredResponsesSettings(), kv)
    body = {"model": "small", "background": True, "stream": streams}

    async def never() -> Response:
        raise AssertionError("a refused request is not answered")

    async def go() -> list[tuple[int, str | None, int]]:
        request = _request()
        kv.closing = partial(background_runs(request).aclose, 1.0)
        seen = []
        for _ in range(2):
            front, queued = _queued(store)
            with pytest.raises(GatewayError) as refused:
                await _start_in_background(request, _GATEWAY, front, body, queued, never)
            seen.append((refused.value.status, refused.value.code, len(kv)))
        return seen

    assert asyncio.run(go()) == [(503, "server_shutdown", 0)] * 2


class _FailsAtLeaseClosing(_ClosesAtLease):
    """`_ClosesAtLease`, whose lease is then said not taken (a Redis timeout after the
    write: made all the same)."""

    async def set_pinned(self, key: str, value: bytes, ttl_s: float) -> None:
        await super().set_pinned(key, value, ttl_s)
        if value == b"1":
            raise StoreUnavailable("redis 127.0.0.1:6379: timed out after 0.2 s")


def test_a_background_request_failing_as_the_runs_shut_down_is_forgotten() -> None:
    """A background request whose lease failed to be kept (its record written) as the
    runs shut down was to be forgotten in a run of its own (`_discarded`), which the
    closed runs refused (closed unrun): its record and lease were left in the store, an
    ``in_progress`` response whose id nobody was told, until ``ttl_s``. It is forgotten
    at once instead."""
    kv = _FailsAtLeaseClosing(100, 1 << 20, owner_of=owner_group)
    store = ResponseStore(StoredResponsesSettings(), kv)
    body = {"model": "small", "background": True}

    async def never() -> Response:
        raise AssertionError("a refused request is not answered")

    async def go() -> tuple[int, str | None, int]:
        request = _request()
        kv.closing = partial(background_runs(request).aclose, 1.0)
        front, queued = _queued(store)
        with pytest.raises(GatewayError) as refused:
            await _start_in_background(request, _GATEWAY, front, body, queued, never)
        return refused.value.status, refused.value.code, len(kv)

    assert asyncio.run(go()) == (503, "store_unavailable", 0)


def _near_the_bound(store: ResponseStore, bound: int) -> tuple[_Kept, _Queued]:
    """A background response whose running record is just under `bound` bytes."""
    front, queued = _queued(store)
    front._input = [{"type": "message", "role": "user", "content": ""}]
    size = len(front.record(queued.response).to_bytes())
    front._input[0]["content"] = "x" * (bound - size - 20)
    record = front.record(queued.response)
    queued = _Queued(queued.response, record, record.to_bytes())
    front.queued_as = queued.value
    return front, queued


async def _failed_large(front: _Kept, store: ResponseStore) -> None:
    await front.fail(502, "the upstream stream ended before the response was made")


async def _cancelled_large(front: _Kept, store: ResponseStore) -> None:
    record = await store.get("team", front.id)
    assert record is not None
    await _cancel(_request(), store, "team", record)


async def _reaped_large(front: _Kept, store: ResponseStore) -> None:
    await reaped(store, "team", front.id)  # no lease: found abandoned


@pytest.mark.parametrize("where", ["memory", "redis"])
def test_a_background_response_ended_too_large_to_keep_reads_as_ended(
    where: str, redis_namespace: str
) -> None:
    """A background response's end (failed, cancelled, found abandoned) is its running
    record with a new status (and error): one past ``max_key_bytes`` by then (its
    error's message, or the bound lowered by a reload since it was kept) was not kept,
    so the response read as running until ``ttl_s``. Now it is kept trimmed: its status,
    its error saying so, without its input and the request's fields it repeats."""
    url = REDIS_URL if where == "redis" else "memory"
    bound = 2048
    settings = StoredResponsesSettings(url=url, namespace=redis_namespace, max_key_bytes=bound)
    ends = {_failed_large: "failed", _cancelled_large: "cancelled", _reaped_large: "failed"}

    async def go() -> dict[str, tuple[str | None, int, str]]:
        kv = RedisStore(url, 2) if url != "memory" else MemoryStore(100, 1 << 20)
        store = ResponseStore(settings, kv)
        lowered = ResponseStore(settings.model_copy(update={"max_key_bytes": 1024}), kv)
        seen = {}
        try:
            for end in ends:
                front, queued = _near_the_bound(store, bound)
                assert await store.put("team", queued.record)
                # failing adds an error (past the bound); the others are read after a reload
                await end(front, store if end is _failed_large else lowered)
                kept = await store.get("team", front.id)
                assert kept is not None
                error = kept.response.get("error") or {}
                seen[end.__name__] = (
                    kept.response["status"],
                    len(kept.input),
                    "too large to keep" if "too large to keep" in str(error) else str(error),
                )
        finally:
            await store.aclose()
        return seen

    assert asyncio.run(go()) == {
        "_failed_large": ("failed", 0, "too large to keep"),
        "_cancelled_large": ("cancelled", 0, "{}"),
        "_reaped_large": ("failed", 0, "too large to keep"),
    }


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    data = {"id": "c1", "object": "chat.completion.chunk", "model": "up-small", "choices": [choice]}
    return f"data: {json.dumps(data)}\n\n".encode()


class _FailsFinal(MemoryStore):
    """A memory store whose writes of a response's answer (``completed``) fail
    `failures` times (as a Redis timeout does: `lands`, the write was made all the same)."""

    failures = 0
    lands = False

    async def replace(
        self, key: str, value: bytes, ttl_s: float, over: bytes, *, pinned: bool = False
    ) -> bool:
        if b'"status":"completed"' not in value or self.failures == 0:
            return await super().replace(key, value, ttl_s, over, pinned=pinned)
        self.failures -= 1
        if self.lands:
            await super().replace(key, value, ttl_s, over, pinned=pinned)
        raise StoreUnavailable("redis 127.0.0.1:6379: timed out after 0.2 s")


async def _abandoned_meanwhile(store: ResponseStore, response_id: str) -> None:
    await store.release("team", response_id)  # its lease lapsed: a read finds it abandoned
    assert await reaped(store, "team", response_id) is not None


async def _cancelled_meanwhile(store: ResponseStore, response_id: str) -> None:
    record = await store.get("team", response_id)
    assert record is not None
    await _cancel(_request(), store, "team", record)


@pytest.mark.parametrize(
    ("case", "ends"),
    [
        ("fails once", ("response.completed", "completed")),
        ("lands, said failed", ("response.completed", "completed")),
        ("fails", ("response.failed", "failed")),
        ("abandoned meanwhile", ("response.failed", "failed")),
        ("cancelled meanwhile", (None, "cancelled")),
    ],
)
def test_a_background_streams_last_event_says_what_its_record_says(
    case: str, ends: tuple[str | None, str]
) -> None:
    """A background stream whose answer could not be kept (its store failing, or the
    response found abandoned or cancelled meanwhile) still ended with
    ``response.completed`` (``store`` false, or as made), while a poll read it
    ``failed`` or ``cancelled``. Now its last event is made of its record as kept then,
    and a write that failed once is asked again (past the store's pause) first."""
    kv = _FailsFinal(100, 1 << 20, owner_of=owner_group)
    kv.failures = {"fails once": 1, "lands, said failed": 1, "fails": 9}.get(case, 0)
    kv.lands = case == "lands, said failed"
    store = ResponseStore(StoredResponsesSettings(), kv)
    body = {"model": "small", "input": "hi", "background": True, "stream": True}
    meanwhile = {"abandoned meanwhile": _abandoned_meanwhile}.get(case)
    meanwhile = _cancelled_meanwhile if case == "cancelled meanwhile" else meanwhile

    async def go() -> tuple[str | None, str, list[str]]:
        request = _request()
        front, queued = _queued(store)
        front._streamed = True
        queued = _requeued(front, queued)

        async def chat() -> AsyncIterator[bytes]:
            yield _chunk({"role": "assistant", "content": "hi"})
            if meanwhile is not None:
                await meanwhile(store, front.id)
            yield _chunk({}, "stop")
            yield b"data: [DONE]\n\n"

        async def answer() -> Response:
            events = front.stream("small", body, chat())
            return StreamingResponse(events, media_type="text/event-stream")

        await _start_in_background(request, _GATEWAY, front, body, queued, answer)
        await background_runs(request).aclose(5.0)
        chunks = EventChunks(store, "team", front.id)
        events = [e for raw in await chunks.read(0) for e in raw.split(b"\n\n") if e]
        kinds = [e.split(b"\n", 1)[0].removeprefix(b"event: ").decode() for e in events]
        last = kinds[-1] if kinds[-1] in ("response.completed", "response.failed") else None
        record = await store.get("team", front.id)
        assert record is not None
        return last, str(record.response["status"]), kinds

    last, status, kinds = asyncio.run(go())
    assert (last, status) == ends, kinds


class _StallsFinal(RedisStore):
    """A Redis store whose Redis stops answering (`timeout_s` 0.5 s, then the store's
    pause) while a response's answer (``completed``) is first written: `replies` only
    (the write is made, its reply lost) or both ways."""

    def __init__(self, url: str, proxy: StallProxy, replies: bool) -> None:
        super().__init__(url, 0.5)  # a connect under load: not 0.2
        self._proxy = proxy
        self._replies = replies
        self.failures = 1

    async def replace(
        self, key: str, value: bytes, ttl_s: float, over: bytes, *, pinned: bool = False
    ) -> bool:
        if b'"status":"completed"' not in value or self.failures == 0:
            return await super().replace(key, value, ttl_s, over, pinned=pinned)
        self.failures -= 1
        (self._proxy.stall_replies if self._replies else self._proxy.stall)()
        try:
            return await super().replace(key, value, ttl_s, over, pinned=pinned)
        finally:
            self._proxy.resume()


@pytest.mark.parametrize("replies", [False, True], ids=["stalled", "reply lost"])
def test_a_background_streams_answer_is_kept_past_one_redis_timeout(
    replies: bool, redis_namespace: str
) -> None:
    """A real Redis timing out on a background stream's last write (the write made all
    the same: its reply lost, or its command held and delivered late) with the write
    asked again past the pause (`_asked_again`): the second write, over the running
    record, finds it changed, and the run reads it back as made, so its stream and its
    record both say ``completed``. (A write that never lands is
    `test_a_background_streams_last_event_says_what_its_record_says`'s, in memory: the
    proxy delivers a held command once it resumes.)"""
    settings = StoredResponsesSettings(url=REDIS_URL, namespace=redis_namespace)
    body = {"model": "small", "input": "hi", "background": True, "stream": True}

    async def go(url: str, proxy: StallProxy) -> tuple[str, str]:
        store = ResponseStore(settings, _StallsFinal(url, proxy, replies))
        request = _request()
        front, queued = _queued(store)
        front._streamed = True
        queued = _requeued(front, queued)

        async def chat() -> AsyncIterator[bytes]:
            yield _chunk({"role": "assistant", "content": "hi"})
            yield _chunk({}, "stop")

        async def answer() -> Response:
            events = front.stream("small", body, chat())
            return StreamingResponse(events, media_type="text/event-stream")

        try:
            await _start_in_background(request, _GATEWAY, front, body, queued, answer)
            await background_runs(request).aclose(10.0)
            raws = await EventChunks(store, "team", front.id).read(0)
            last = [e for raw in raws for e in raw.split(b"\n\n") if e][-1]
            kept = await store.get("team", front.id)
            assert kept is not None
            return last.split(b"\n", 1)[0].decode(), str(kept.response["status"])
        finally:
            await store.aclose()

    with stall_proxy(REDIS_URL) as (proxy, url):
        assert asyncio.run(go(url, proxy)) == ("event: response.completed", "completed")


@pytest.mark.parametrize("replies", [False, True], ids=["stalled", "reply lost"])
def test_a_background_answer_kept_past_one_redis_timeout_is_completed_with_its_turn(
    replies: bool, redis_namespace: str
) -> None:
    """A background response's answer (no stream) whose write to a real Redis timed out
    though it landed (its reply lost, or its command held and delivered late): the write
    asked again found the record changed (by itself), and the run took it for cancelled,
    so the run was counted ``cancelled`` and its conversation lost the turn, while the
    record, read back, said ``completed``. As a background stream's end does
    (`test_a_background_streams_answer_is_kept_past_one_redis_timeout`), the answer read
    back as made is made: counted ``completed``, its turn added."""
    settings = StoredResponsesSettings(url=REDIS_URL, namespace=redis_namespace)

    async def go(url: str, proxy: StallProxy) -> tuple[list[str], str, int]:
        store = ResponseStore(settings, _StallsFinal(url, proxy, replies))
        conversations = ConversationStore(store)
        try:
            talk = await conversations.create("team", {}, [])
            front, queued = _queued(store)
            front._conversation = talk.id
            front._input = [{"type": "message", "role": "user", "content": "hi"}]
            assert await store.put("team", queued.record, value=queued.value)
            outcomes: list[str] = []

            async def answer() -> Any:
                return await front.answer(_COMPLETION, "small", {"model": "small", "input": "hi"})

            await _answer_in_background(answer, _GATEWAY, front, outcomes.append)
            kept = await store.get("team", front.id)
            assert kept is not None
            items = await conversations.items("team", talk.id)
            return outcomes, str(kept.response["status"]), len(items)
        finally:
            await store.aclose()

    with stall_proxy(REDIS_URL) as (proxy, url):
        assert asyncio.run(go(url, proxy)) == (["completed"], "completed", 2)


def test_a_background_streams_turn_is_added_once_past_two_redis_timeouts(
    redis_namespace: str,
) -> None:
    """A real Redis stalling through both tries of a background stream's last write (the
    first made late, as the proxy delivers a held command): the run, not knowing, added
    its turn (the store refused unasked for its pause: taken as running), then read the
    record back ``completed`` (`_settled`) and added the turn a second time: the
    conversation held it twice. A turn is added once."""
    settings = StoredResponsesSettings(url=REDIS_URL, namespace=redis_namespace)
    body = {"model": "small", "input": "hi", "background": True, "stream": True}

    async def go(url: str, proxy: StallProxy) -> tuple[str, int]:
        kv = _StallsFinal(url, proxy, False)
        kv.failures = 3  # the first try, the one refused for its pause, the second
        store = ResponseStore(settings, kv)
        conversations = ConversationStore(store)
        try:
            talk = await conversations.create("team", {}, [])
            request = _request()
            front, queued = _queued(store)
            front._streamed = True
            front._conversation = talk.id
            front._input = [{"type": "message", "role": "user", "content": "hi"}]
            queued = _requeued(front, queued)

            async def chat() -> AsyncIterator[bytes]:
                yield _chunk({"role": "assistant", "content": "hi"})
                yield _chunk({}, "stop")

            async def answer() -> Response:
                events = front.stream("small", body, chat())
                return StreamingResponse(events, media_type="text/event-stream")

            await _start_in_background(request, _GATEWAY, front, body, queued, answer)
            await background_runs(request).aclose(10.0)
            kept = await store.get("team", front.id)
            assert kept is not None
            return str(kept.response["status"]), len(await conversations.items("team", talk.id))
        finally:
            await store.aclose()

    with stall_proxy(REDIS_URL) as (proxy, url):
        assert asyncio.run(go(url, proxy)) == ("completed", 2)


@pytest.mark.parametrize("ends", ["answered", "failed", "streamed"])
def test_a_run_found_abandoned_meanwhile_is_counted_once(ends: str) -> None:
    """A run whose response a read found abandoned meanwhile (its lease lapsed: kept
    failed, counted ``abandoned``) went on, found its record no longer running and was
    counted ``cancelled`` (or ``failed``, its failure not kept) as well: the response was
    subtracted twice from ``started`` in the "running now" arithmetic. It is counted
    once, as the read counted it."""
    store = _memory_store()
    body = {"model": "small", "input": "hi", "background": True, "stream": ends == "streamed"}

    async def go() -> tuple[list[str], str]:
        front, queued = _queued(store)
        front._streamed = ends == "streamed"
        record = front.record(queued.response)
        front.queued_as = record.to_bytes()
        assert await store.put("team", record, value=front.queued_as)
        outcomes: list[str] = []
        abandoned = partial(outcomes.append, "abandoned")

        async def reap() -> None:  # no lease: a read finds it abandoned
            assert await reaped(store, "team", front.id, abandoned) is not None

        async def chat() -> AsyncIterator[bytes]:
            yield _chunk({"role": "assistant", "content": "hi"})
            await reap()
            yield _chunk({}, "stop")

        async def answer() -> Any:
            if ends == "streamed":
                events = front.stream("small", body, chat())
                return StreamingResponse(events, media_type="text/event-stream")
            await reap()
            if ends == "failed":
                raise GatewayError(502, "the upstream did not answer")
            return await front.answer(_COMPLETION, "small", body)

        stream = _Stream(RunLog(), front.events()) if ends == "streamed" else None
        await _answer_in_background(answer, _GATEWAY, front, outcomes.append, stream)
        kept = await store.get("team", front.id)
        assert kept is not None
        return outcomes, str(kept.response["status"])

    assert asyncio.run(go()) == (["abandoned"], "failed")


class _ReadsFail(MemoryStore):
    """A memory store whose reads of key `at` fail (a Redis timeout) once `left` more
    have been answered."""

    at = ""
    left: int | None = None

    async def get(self, key: str) -> bytes | None:
        if key == self.at and self.left is not None:
            if self.left == 0:
                raise StoreUnavailable("redis 127.0.0.1:6379: timed out after 0.2 s")
            self.left -= 1
        return await super().get(key)


def test_a_background_stream_found_abandoned_ends_failed_though_its_store_then_fails() -> None:
    """A background stream whose response was found abandoned meanwhile (kept failed by
    a read) reads its record at its end to say what a poll reads; a store failing then
    took it for cancelled or deleted and dropped the closing event: the stream ended
    with no ``response.failed``. It ends with the record as it was last found."""
    kv = _ReadsFail(100, 1 << 20, owner_of=owner_group)
    store = ResponseStore(StoredResponsesSettings(), kv)
    body = {"model": "small", "input": "hi", "background": True, "stream": True}

    async def go() -> list[bytes]:
        front, queued = _queued(store)
        front._streamed = True
        record = front.record(queued.response)
        front.queued_as = record.to_bytes()
        assert await store.put("team", record, value=front.queued_as)
        kv.at = store.key("team", front.id)

        async def chat() -> AsyncIterator[bytes]:
            yield _chunk({"role": "assistant", "content": "hi"})
            assert await reaped(store, "team", front.id) is not None  # no lease
            kv.left = 1  # the run finds it ended; its read after fails
            yield _chunk({}, "stop")

        async def answer() -> Response:
            events = front.stream("small", body, chat())
            return StreamingResponse(events, media_type="text/event-stream")

        stream = _Stream(RunLog(), front.events())
        await _answer_in_background(answer, _GATEWAY, front, lambda _: None, stream)
        return stream.run.events

    last = asyncio.run(go())[-1]
    assert last.startswith(b"event: response.failed\n"), last
    error = json.loads(last.split(b"data: ", 1)[1])["response"]["error"]
    assert "lease" in error["message"], error


@pytest.mark.parametrize("where", ["memory", "redis"])
def test_a_background_response_ended_too_large_even_trimmed_reads_as_ended(
    where: str, redis_namespace: str
) -> None:
    """A background response's end too large to keep even trimmed (a long chain, past
    ``max_key_bytes`` lowered by a reload) was not kept: its run's failure said
    "cancelled or deleted" (counted so), and the response read ``in_progress`` until
    ``ttl_s``, each read finding it abandoned failing to end it again. It is kept bare
    (its status, its error saying so), and continuing it is refused (400), not made
    without its earlier turns."""
    url = REDIS_URL if where == "redis" else "memory"
    settings = StoredResponsesSettings(url=url, namespace=redis_namespace, max_key_bytes=8192)
    ends = {_failed_large: "failed", _cancelled_large: "cancelled", _reaped_large: "failed"}

    async def go() -> dict[str, tuple[Any, ...]]:
        kv = RedisStore(url, 2) if url != "memory" else MemoryStore(100, 1 << 20)
        store = ResponseStore(settings, kv)
        lowered = ResponseStore(settings.model_copy(update={"max_key_bytes": 1024}), kv)
        seen = {}
        try:
            for end in ends:
                front, _ = _queued(lowered)  # its run's, after the reload
                front._chain = [f"resp_{n:048x}" for n in range(30)]  # about 1.7 kB
                body = {
                    "model": "small",
                    "background": True,
                    "previous_response_id": front._chain[-1],
                }
                record = front.record(front.queued(body))
                front.queued_as = record.to_bytes()
                assert await store.put("team", record, value=front.queued_as)
                told = await front.fail(502, "boom") if end is _failed_large else None
                if told is None:
                    await end(front, lowered)
                kept = await store.get("team", front.id)
                assert kept is not None
                error = str(kept.response.get("error") or "")
                with pytest.raises(BrokenChain):
                    await store.chain("team", front.id)
                seen[end.__name__] = (told, kept.response["status"], "too large" in error)
        finally:
            await store.aclose()
        return seen

    assert asyncio.run(go()) == {
        "_failed_large": (True, "failed", True),
        "_cancelled_large": (None, "cancelled", False),
        "_reaped_large": (None, "failed", True),
    }


def test_max_key_bytes_is_each_writers_own_and_never_leaves_a_response_running(
    redis_namespace: str,
) -> None:
    """Two gateways on one Redis with different ``max_key_bytes`` (a partial reload):
    each write carries its writer's bound into the script, checked by the writer first
    (`ResponseStore.encoded`), so a background response kept by the gateway with the
    larger bound is neither refused nor trimmed by the other's: running, it is pinned
    (unlisted: the other's writes do not evict it); ended by its own gateway, it is kept
    whole; the other's next write for the key evicts it then (gone, a 404), as any
    response past that bound goes. Nothing reads running."""
    settings = StoredResponsesSettings(url=REDIS_URL, namespace=redis_namespace)
    kv = RedisStore(REDIS_URL, 2)
    larger = ResponseStore(settings.model_copy(update={"max_key_bytes": 65536}), kv)
    smaller = ResponseStore(settings.model_copy(update={"max_key_bytes": 2048}), kv)

    async def other(store: ResponseStore) -> None:
        front, queued = _queued(store)
        done = {**queued.response, "status": "completed", "background": False}
        assert await store.put("team", front.record(done))

    async def go() -> list[str | None]:
        front, _ = _queued(larger)
        front._input = [{"type": "message", "role": "user", "content": "x" * 4000}]
        record = front.record(front.queued({"model": "small", "background": True}))
        front.queued_as = record.to_bytes()
        seen = []

        async def status() -> str | None:
            kept = await larger.get("team", front.id)
            seen.append(None if kept is None else str(kept.response["status"]))
            return None if kept is None else str(kept.input[0]["content"])[:1]

        try:
            assert await larger.put("team", record, value=front.queued_as)
            await other(smaller)  # the other gateway's writes, while it runs
            await status()
            assert await front.fail(502, "boom")  # its own gateway ends it: kept whole
            assert await status() == "x"
            await other(smaller)  # past the smaller bound: the key's oldest go
            await status()
        finally:
            await larger.aclose()
        return seen

    assert asyncio.run(go()) == ["in_progress", "failed", None]


@pytest.mark.parametrize("ends", ["answered", "failed"])
def test_a_run_found_abandoned_and_kept_bare_is_counted_once(ends: str) -> None:
    """A run whose response a read found abandoned is counted once, by that read, when
    its record says so (its error's message begins as the read's does); but a record
    too large to keep even trimmed is kept `bare`, with only its message's first 100
    characters, shorter than what was looked for: the run was counted a second time
    (``cancelled``: its answer, or its failure, found the record ended)."""
    settings = StoredResponsesSettings(max_key_bytes=8192)
    kv = MemoryStore(100, 1 << 20, owner_of=owner_group)
    store = ResponseStore(settings, kv)
    lowered = ResponseStore(settings.model_copy(update={"max_key_bytes": 1024}), kv)

    async def go() -> tuple[list[str], str, bool]:
        front, _ = _queued(lowered)  # its run's, after a reload lowered the bound
        front._chain = [f"resp_{n:048x}" for n in range(30)]  # about 1.7 kB
        body = {"model": "small", "background": True, "previous_response_id": front._chain[-1]}
        record = front.record(front.queued(body))
        front.queued_as = record.to_bytes()
        assert await store.put("team", record, value=front.queued_as)
        outcomes: list[str] = []
        abandoned = partial(outcomes.append, "abandoned")

        async def answer() -> Any:
            assert await reaped(lowered, "team", front.id, abandoned) is not None
            if ends == "failed":
                raise GatewayError(502, "the upstream did not answer")
            return await front.answer(_COMPLETION, "small", body)

        await _answer_in_background(answer, _GATEWAY, front, outcomes.append, None)
        kept = await store.get("team", front.id)
        assert kept is not None
        error = str(kept.response.get("error"))
        return outcomes, str(kept.response["status"]), "even without" in error

    assert asyncio.run(go()) == (["abandoned"], "failed", True)


def test_continuing_a_response_kept_bare_says_why_it_is_refused() -> None:
    """A response whose end was kept `bare` (too large even trimmed: its chain long) is
    refused when continued (400), as its earlier turns are not kept with it; the error
    said the response it continues "is no longer kept (expired, evicted or deleted)",
    which it may not be (kept still, and continued by others), and not why.
    It now says this response was kept without its earlier turns, too large."""
    settings = StoredResponsesSettings(max_key_bytes=8192)
    kv = MemoryStore(100, 1 << 20, owner_of=owner_group)
    store = ResponseStore(settings, kv)
    lowered = ResponseStore(settings.model_copy(update={"max_key_bytes": 1024}), kv)

    async def go() -> str:
        first, _ = _queued(store)
        assert await store.put("team", first.record(first.queued({"model": "small"})))
        front, _ = _queued(lowered)
        front._chain = [*(f"resp_{n:048x}" for n in range(30)), first.id]  # about 1.7 kB
        body = {"model": "small", "background": True, "previous_response_id": first.id}
        record = front.record(front.queued(body))
        front.queued_as = record.to_bytes()
        assert await store.put("team", record, value=front.queued_as)
        assert await front.fail(502, "boom")  # kept bare
        with pytest.raises(GatewayError) as refused:
            await _chain_of(store, "team", front.id)
        assert refused.value.status == 400
        return refused.value.message

    message = asyncio.run(go())
    assert "too large" in message and "no longer kept" not in message, message
