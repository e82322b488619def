"""A background response's run, in-process (`_start_in_background`, `BackgroundRuns`):
what its end gives back, however it ends, and what is left of it in the store when
it is refused after its record was written or deleted while it runs. The stores are
real (memory, and Redis at `REDIS_URL`); the request is a bare ASGI scope."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from llmroute.registry.schema import ApiKey, StoredResponsesSettings
from llmroute.server.auth import Charges, account_of
from llmroute.server.background import background_runs
from llmroute.server.responses import _Kept, _Queued, _start_in_background
from llmroute.state.limits import MemoryLimits
from llmroute.state.stored_responses import ResponseStore
from llmroute.state.stores import MemoryStore, owner_group

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
    response = front.queued({"model": "small"})
    record = front.record(response)
    return front, _Queued(response, record, record.to_bytes(), release)


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


async def _settled(check: Callable[[], Awaitable[bool]], within_s: float = 10.0) -> None:
    """Wait (bounded) until `check()` holds."""
    async with asyncio.timeout(within_s):
        while not await check():
            await asyncio.sleep(0.05)
