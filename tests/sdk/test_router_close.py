"""Closing a stream while calls are in flight: each call ends promptly, a stream's loop
as at its end; its in-flight slot is given back and its end recorded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_upstream import FakeUpstream, fake_upstream
from redis_service import REDIS_URL
from test_sdk import HELLO, LONG, _one_route, _streams_logged

from llmroute import Router

GAP = "gap=0.2"  # a stream of 30 words, one every 0.2 s


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as server:
        yield server


def _capped(
    upstream: FakeUpstream,
    tmp_path: Path,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> tuple[Path, str, Path]:
    """A route to a model of one in-flight slot (in Redis; its fallback: `spare`) whose
    upstream has `fault`; the registry, that model's upstream name and the SQLite
    decision log the routers write."""
    db = tmp_path / "log.db"
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", f"sqlite:///{db}")
    capped = f"capped-{tmp_path.name}?{fault}"
    models = f'capped: {{provider: fake, model: "{capped}", max_in_flight: 1}}'
    models += "\n  spare: {provider: fake, model: spare}"
    path = _one_route(tmp_path, upstream, models, "capped", fallback="spare")
    limits = f"{{url: '{REDIS_URL}', namespace: {namespace}, timeout_s: 2}}"
    path.write_text(path.read_text() + f"dispatch: {{limits: {limits}}}\n")
    return path, capped, db


async def _read(stream: Any, seen: list[Any]) -> str:
    try:
        async for chunk in stream:
            seen.append(chunk)
    except BaseException as exc:  # what the reader would see
        return repr(exc)
    return "ended"


async def _until(seen: list[Any], count: int) -> None:
    deadline = time.monotonic() + 5
    while len(seen) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def test_an_async_stream_closed_from_another_task_ends_the_reading_loop(
    upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    redis_namespace: str,
) -> None:
    """A stop button in async code: one task reads, another calls ``aclose()``. The
    reader's ``async for`` ends as at the stream's end (its task is not cancelled), and
    the stream is ended once: its slot given back, one record. ``aclose()`` raised
    RuntimeError ("aclose(): asynchronous generator is already running") and left the
    reader waiting for the next word."""
    path, capped, db = _capped(upstream, tmp_path, redis_namespace, monkeypatch, GAP)

    async def main() -> tuple[str, int, str, bool]:
        router = Router.from_yaml(path)
        try:
            seen: list[Any] = []
            stream = await router.chat.completions.acreate(messages=LONG, stream=True)
            reader = asyncio.ensure_future(_read(stream, seen))
            await _until(seen, 2)
            await stream.aclose()
            await stream.aclose()  # idempotent
            outcome = await asyncio.wait_for(reader, 5)
            served = (await router.chat.completions.acreate(messages=HELLO)).model
            return outcome, len(seen), str(served), reader.cancelled()
        finally:
            await router.aclose()

    outcome, read, served, cancelled = asyncio.run(main())
    assert outcome == "ended" and 2 <= read < 10 and not cancelled
    assert served == capped
    assert _streams_logged(db) == [(200, "client_disconnected")]
    assert "already running" not in caplog.text and "never retrieved" not in caplog.text


def test_a_cancelled_reader_of_an_async_stream_still_sees_its_cancellation(
    upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_namespace: str,
) -> None:
    """The caller's own cancellation of a reading task (``wait_for``, a cancelled task)
    is not mistaken for a stream closed under it: the task is cancelled, and the stream
    ended as a caller leaving."""
    path, capped, db = _capped(upstream, tmp_path, redis_namespace, monkeypatch, GAP)

    async def main() -> tuple[bool, int, str]:
        router = Router.from_yaml(path)
        try:
            seen: list[Any] = []
            stream = await router.chat.completions.acreate(messages=LONG, stream=True)

            async def read() -> None:
                async for chunk in stream:
                    seen.append(chunk)

            reader = asyncio.ensure_future(read())
            await _until(seen, 2)
            reader.cancel()
            await asyncio.wait({reader})
            served = (await router.chat.completions.acreate(messages=HELLO)).model
            return reader.cancelled(), len(seen), str(served)
        finally:
            await router.aclose()

    cancelled, read, served = asyncio.run(main())
    assert cancelled and 2 <= read < 10 and served == capped
    assert _streams_logged(db) == [(200, "client_disconnected")]
