"""Closing a router (or a stream) while calls are in flight, on the SDK's loop thread,
on another thread's event loop or on the closing loop itself: each call ends promptly,
a call waiting for its answer, and a stream's loop the router cut short, with
`RouterClosed` (a stream its reader closed ends as at its end); its in-flight slot is
given back and its end recorded."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_upstream import FakeUpstream, fake_upstream
from redis_service import REDIS_URL
from test_sdk import HELLO, LONG, SDK_THREAD, _logged, _one_route, _streams_logged

from llmroute import Router
from llmroute.dispatch.deployments import Deployment
from llmroute.errors import RouterClosed
from llmroute.sdk.clients import LoopClients
from llmroute.sdk.streams import CUT_SHORT

GAP = "gap=0.2"  # a stream of 30 words, one every 0.2 s
WAIT = "delay=1"  # an answer after a second
OPENING = "ttft=1"  # a stream whose first event comes after a second
CUT = repr(RouterClosed(CUT_SHORT))  # what a stream's reader sees as its router closes


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


async def _awaited(call: Any) -> str:
    try:
        await call
    except BaseException as exc:  # what the caller would see
        return repr(exc)
    return "answered"


async def _until(seen: list[Any], count: int) -> None:
    deadline = time.monotonic() + 5
    while len(seen) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def _asked(upstream: FakeUpstream, capped: str) -> bool:
    """Whether `capped`'s upstream has been sent a request: the call is in flight."""
    return any(asked.body.get("model") == capped for asked in list(upstream.requests))


async def _until_asked(upstream: FakeUpstream, capped: str) -> None:
    deadline = time.monotonic() + 10
    while not _asked(upstream, capped) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def _wait_asked(upstream: FakeUpstream, capped: str) -> None:
    """`_until_asked`, for a thread: a fixed sleep let a loaded machine close the router
    before the call had begun, which then went on to its answer."""
    deadline = time.monotonic() + 10
    while not _asked(upstream, capped) and time.monotonic() < deadline:
        time.sleep(0.02)


def _serve_again(router: Router, capped: str) -> str:
    """The model the next call is served by: `capped` once its slot is back."""
    with router:
        return str(router.chat.completions.create(messages=HELLO).model)


@pytest.mark.parametrize("fault", [GAP, WAIT, OPENING], ids=["reading", "waiting", "opening"])
def test_closing_the_router_ends_the_calls_of_another_thread_s_loop(
    upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    redis_namespace: str,
    fault: str,
) -> None:
    """`router.close()` from one thread while another thread's ``asyncio.run`` reads a
    stream, waits for an answer or for a stream to open: the stream's ``async for``
    ends as the synchronous reader's ``for`` does, the awaited call raises
    `RouterClosed` (a stream's reader, that its answer was cut short: its loop ended as
    at the stream's end); the slot is given back and the call recorded. The calls went on
    with their clients closed under them: a stream raised aiohttp's bare
    ``RuntimeError('Connection closed.')`` and an ``acreate`` went on to its answer,
    or its timeout and the fallback, on a closed dispatcher."""
    path, capped, db = _capped(upstream, tmp_path, redis_namespace, monkeypatch, fault)
    router = Router.from_yaml(path)
    seen: list[Any] = []
    outcome: list[str] = []
    started = threading.Event()

    async def call() -> str:
        pending = router.chat.completions.acreate(messages=LONG, stream=fault != WAIT)
        if fault != GAP:  # waiting for the answer, or for the stream to open
            started.set()
            return await _awaited(pending)
        reading = asyncio.ensure_future(_read(await pending, seen))
        await _until(seen, 2)
        started.set()
        return await reading

    caller = threading.Thread(target=lambda: outcome.append(asyncio.run(call())), daemon=True)
    caller.start()
    assert started.wait(10)
    _wait_asked(upstream, capped)  # into the call's wait
    router.close()
    caller.join(10)
    assert not caller.is_alive()
    if fault == GAP:
        assert outcome == [CUT] and 2 <= len(seen) < 10
        assert _streams_logged(db) == [(200, "client_disconnected")]
    else:
        assert outcome == [repr(RouterClosed())]
        assert _logged(db) == [(499, "client_disconnected")]
    assert _serve_again(router, capped) == capped
    assert "already running" not in caplog.text and "never retrieved" not in caplog.text


@pytest.mark.parametrize("fault", [GAP, WAIT], ids=["reading", "waiting"])
def test_aclose_ends_the_calls_of_other_tasks_on_its_loop(
    upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    redis_namespace: str,
    fault: str,
) -> None:
    """``await router.aclose()`` while another task of the same loop reads a stream or
    waits for an answer ends that call as `close` does another loop's (`RouterClosed`):
    its dispatcher was closed under it."""
    path, capped, db = _capped(upstream, tmp_path, redis_namespace, monkeypatch, fault)
    router = Router.from_yaml(path)

    async def main() -> tuple[str, int]:
        seen: list[Any] = []
        if fault == GAP:
            stream = await router.chat.completions.acreate(messages=LONG, stream=True)
            task = asyncio.ensure_future(_read(stream, seen))
            await _until(seen, 2)
        else:
            task = asyncio.ensure_future(_awaited(router.chat.completions.acreate(messages=LONG)))
            await _until_asked(upstream, capped)
        await router.aclose()
        return await asyncio.wait_for(task, 10), len(seen)

    outcome, read = asyncio.run(main())
    if fault == GAP:
        assert outcome == CUT and 2 <= read < 10
        assert _streams_logged(db) == [(200, "client_disconnected")]
    else:
        assert outcome == repr(RouterClosed())
        assert _logged(db) == [(499, "client_disconnected")]
    assert _serve_again(router, capped) == capped
    assert "already running" not in caplog.text and "never retrieved" not in caplog.text


def test_an_async_stream_closed_from_another_task_ends_the_reading_loop(
    upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    redis_namespace: str,
) -> None:
    """A stop button in async code: one task reads, another calls ``aclose()``. The
    reader's ``async for`` ends as at the stream's end (its task is not left cancelled), and
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


def test_an_async_stream_closed_again_after_a_close_cancelled_midway_ends_once(
    upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    redis_namespace: str,
) -> None:
    """A close from another task cancelled while the read it ended was still unwinding
    (``wait_for(stream.aclose(), ...)``, a stop button's task cancelled) and a second
    close (the button again, the router closing): the second waits for that read to
    unwind, then ends the stream. It closed the stream's generator under the read
    still unwinding in it and raised RuntimeError ("already running")."""
    path, _, db = _capped(upstream, tmp_path, redis_namespace, monkeypatch, GAP)

    async def main() -> tuple[str, str, int]:
        router = Router.from_yaml(path)
        try:
            seen: list[Any] = []
            stream = await router.chat.completions.acreate(messages=LONG, stream=True)
            reader = asyncio.ensure_future(_read(stream, seen))
            await _until(seen, 2)
            first = asyncio.ensure_future(stream.aclose())
            await asyncio.sleep(0)  # it cancelled the read and waits for it to unwind
            first.cancel()
            second = await _awaited(stream.aclose())
            return second, await asyncio.wait_for(reader, 5), len(seen)
        finally:
            await router.aclose()

    second, outcome, read = asyncio.run(main())
    assert second == "answered" and outcome == "ended" and 2 <= read < 10
    assert _streams_logged(db) == [(200, "client_disconnected")]
    assert "already running" not in caplog.text


@pytest.mark.parametrize("closed_too", [False, True], ids=["cancelled", "cancelled-and-closed"])
def test_a_cancelled_reader_of_an_async_stream_still_sees_its_cancellation(
    upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_namespace: str,
    closed_too: bool,
) -> None:
    """The caller's own cancellation of a reading task (``wait_for``, a cancelled task)
    is not mistaken for a stream closed under it: the task is cancelled, and the stream
    ended as a caller leaving; so when another task closes the stream at that moment
    too (the close's own cancellation of the read is taken back, the caller's is not)."""
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
            if closed_too:
                await stream.aclose()
            await asyncio.wait({reader})
            served = (await router.chat.completions.acreate(messages=HELLO)).model
            return reader.cancelled(), len(seen), str(served)
        finally:
            await router.aclose()

    cancelled, read, served = asyncio.run(main())
    assert cancelled and 2 <= read < 10 and served == capped
    assert _streams_logged(db) == [(200, "client_disconnected")]


def test_an_async_stream_closed_under_a_reader_already_being_cancelled_ends_its_loop(
    upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_namespace: str,
) -> None:
    """A reader whose task had a cancellation caught before it read (cleanup code after
    a cancel, an anyio shielded scope) sees its ``async for`` end when another task
    closes the stream, as asyncio.timeout counts only the cancellations made since it
    began: the close's cancellation of the read was taken back only when none was left
    at all, so that reader got a CancelledError nobody had asked for."""
    path, _, db = _capped(upstream, tmp_path, redis_namespace, monkeypatch, GAP)

    async def main() -> tuple[str, int, int]:
        router = Router.from_yaml(path)
        try:
            seen: list[Any] = []
            stream = await router.chat.completions.acreate(messages=LONG, stream=True)

            async def read() -> tuple[str, int]:
                task = asyncio.current_task()
                assert task is not None
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0)  # caught, not taken back: cancelling() is 1
                return await _read(stream, seen), task.cancelling()

            reader = asyncio.ensure_future(read())
            await _until(seen, 2)
            await stream.aclose()
            outcome, cancelling = await asyncio.wait_for(reader, 5)
            return outcome, len(seen), cancelling
        finally:
            await router.aclose()

    outcome, read, cancelling = asyncio.run(main())
    assert outcome == "ended" and 2 <= read < 10 and cancelling == 1
    assert _streams_logged(db) == [(200, "client_disconnected")]


def test_closing_the_router_fails_the_call_of_a_task_already_being_cancelled_likewise(
    upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_namespace: str,
) -> None:
    """An ``acreate`` waiting for its answer in a task that had caught a cancellation
    before (cleanup code after a cancel) raises `RouterClosed` as the router closes, as
    any other: only a cancellation of the caller made since the call began is the
    caller's own, and it got a bare CancelledError."""
    path, capped, _ = _capped(upstream, tmp_path, redis_namespace, monkeypatch, WAIT)
    router = Router.from_yaml(path)

    async def main() -> str:
        async def call() -> str:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0)  # caught, not taken back: cancelling() is 1
            return await _awaited(router.chat.completions.acreate(messages=LONG))

        caller = asyncio.ensure_future(call())
        await _until_asked(upstream, capped)
        await router.aclose()
        return await asyncio.wait_for(caller, 10)

    assert asyncio.run(main()) == repr(RouterClosed())


def test_a_stream_opened_as_the_router_closes_is_ended_with_the_call_that_opened_it(
    upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_namespace: str,
) -> None:
    """A close that lands as a call opens its stream (another thread's ``close()`` took
    the loop's calls in flight, and has not yet ended them on the loop) ends that
    stream with the call: it was kept with the calls begun after the close, so it was
    not ended, and its reader read on a dispatcher closed under it (aiohttp's bare
    ``RuntimeError('Connection closed.')``). The close is made to land at that moment
    by closing just before the stream is kept."""
    path, capped, db = _capped(upstream, tmp_path, redis_namespace, monkeypatch, GAP)
    router = Router.from_yaml(path)
    keep = LoopClients.track

    def track(clients: LoopClients, stream: Any) -> None:
        monkeypatch.setattr(LoopClients, "track", keep)  # once
        clients.release_others(set())  # as `close()` does; ended on the loop later
        keep(clients, stream)

    monkeypatch.setattr(LoopClients, "track", track)

    async def main() -> tuple[str, int]:
        seen: list[Any] = []
        stream = await router.chat.completions.acreate(messages=LONG, stream=True)
        return await asyncio.wait_for(_read(stream, seen), 10), len(seen)

    outcome, read = asyncio.run(main())
    assert _serve_again(router, capped) == capped  # its slot back; the log flushed
    assert outcome == CUT and read < 10
    assert _streams_logged(db) == [(200, "client_disconnected")]


def test_a_read_begun_as_its_router_closes_the_stream_waits_for_that_close(
    upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_namespace: str,
) -> None:
    """A stream read once its router's close (from another thread) has begun ending it,
    while the close still gives back its slot (a slow Redis): the read raises
    `RouterClosed` once that close is over, as a read the close cut does. It raised at
    once, the program's ``asyncio.run`` ended and cancelled the give-back, and the slot
    stayed taken for its lease (10 minutes of the model's capacity)."""
    path, capped, db = _capped(upstream, tmp_path, redis_namespace, monkeypatch, GAP)
    router = Router.from_yaml(path)
    keep, give = LoopClients.track, Deployment.give_slot
    giving = asyncio.Event()

    def track(clients: LoopClients, stream: Any) -> None:
        monkeypatch.setattr(LoopClients, "track", keep)  # once
        clients.release_others(set())  # as `close()` does; ended on the loop later
        keep(clients, stream)

    async def slow_give(deployment: Deployment, slot: str) -> None:
        giving.set()
        await asyncio.sleep(0.3)
        await give(deployment, slot)

    monkeypatch.setattr(LoopClients, "track", track)
    monkeypatch.setattr(Deployment, "give_slot", slow_give)

    async def main() -> tuple[str, int]:
        seen: list[Any] = []
        stream = await router.chat.completions.acreate(messages=LONG, stream=True)
        await asyncio.wait_for(giving.wait(), 10)  # the close is giving the slot back
        return await asyncio.wait_for(_read(stream, seen), 10), len(seen)

    outcome, read = asyncio.run(main())
    assert outcome == CUT and read == 0
    assert _serve_again(router, capped) == capped  # its slot back
    assert _streams_logged(db) == [(200, "client_disconnected")]


def test_closing_the_router_fails_a_sync_create_with_router_closed(
    upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_namespace: str,
) -> None:
    """A `create` waiting for its answer as another thread closes the router raises
    `RouterClosed` (an `LlmrouteError` saying so), not the bare
    ``concurrent.futures.CancelledError`` of the loop's machinery."""
    path, capped, db = _capped(upstream, tmp_path, redis_namespace, monkeypatch, WAIT)
    router = Router.from_yaml(path)
    outcome: list[BaseException | str] = []

    def call() -> None:
        try:
            router.chat.completions.create(messages=LONG)
            outcome.append("answered")
        except BaseException as exc:  # what the caller would see
            outcome.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    _wait_asked(upstream, capped)
    router.close()
    caller.join(10)
    assert not caller.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], RouterClosed), outcome
    assert "closed" in str(outcome[0])
    assert _logged(db) == [(499, "client_disconnected")]
    assert _serve_again(router, capped) == capped


def test_close_racing_calls_that_restart_the_loop_leaves_nothing_behind(
    upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads calling `create` while another closes the router over and over: each
    call is answered or raises `RouterClosed` (none waits for ever on a loop that
    stopped under it), and once the last close has returned no loop thread is left."""
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", "off")
    path = _one_route(tmp_path, upstream, "quick: {provider: fake, model: quick}", "quick")
    router = Router.from_yaml(path)
    outcomes: list[str] = []
    stop = threading.Event()

    def call() -> None:
        for _ in range(200):  # bounded
            if stop.is_set():
                return
            try:
                router.chat.completions.create(messages=HELLO)
                outcomes.append("answered")
            except RouterClosed:
                outcomes.append("closed")
            except BaseException as exc:  # anything else fails the test
                outcomes.append(repr(exc))

    callers = [threading.Thread(target=call, daemon=True) for _ in range(3)]
    for caller in callers:
        caller.start()
    for _ in range(20):
        time.sleep(0.02)
        router.close()
    stop.set()
    for caller in callers:
        caller.join(20)
    assert not any(caller.is_alive() for caller in callers)
    router.close()
    assert not [t for t in threading.enumerate() if t.name == SDK_THREAD]
    assert set(outcomes) <= {"answered", "closed"}, set(outcomes) - {"answered", "closed"}
    assert "answered" in outcomes


def test_a_router_is_an_async_context_manager(
    upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``async with Router.from_yaml(...) as router:``, as docs/sdk.md offers it, closes
    the loop's connections on the way out (`aclose`); it raised TypeError (no
    ``__aenter__``)."""
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", "off")
    path = _one_route(tmp_path, upstream, "quick: {provider: fake, model: quick}", "quick")

    async def main() -> str:
        async with Router.from_yaml(path) as router:
            return str((await router.chat.completions.acreate(messages=HELLO)).model)

    assert asyncio.run(main()) == "quick"


def test_close_in_a_running_loop_warns_and_leaves_the_loop_running(
    upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``with router:`` in ``async def`` closes in a thread, with a `RuntimeWarning` at
    the user's line pointing to ``aclose``: the loop's other tasks keep running while
    another loop (busy for 1.5 s) is released, and what was logged is still flushed.
    The close blocked the loop until that loop answered (10 s at most)."""
    db = tmp_path / "log.db"
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", f"sqlite:///{db}")
    path = _one_route(tmp_path, upstream, "quick: {provider: fake, model: quick}", "quick")
    router = Router.from_yaml(path)
    ready = threading.Event()

    async def busy() -> None:  # another thread's loop, with a dispatcher, stuck a while
        await router.chat.completions.acreate(messages=HELLO)
        ready.set()
        time.sleep(1.5)

    other = threading.Thread(target=asyncio.run, args=(busy(),), daemon=True)
    other.start()
    assert ready.wait(10)

    async def main() -> float:
        gaps = [0.0]

        async def tick() -> None:
            while True:
                before = time.monotonic()
                await asyncio.sleep(0.01)
                gaps.append(time.monotonic() - before)

        ticker = asyncio.ensure_future(tick())
        await asyncio.sleep(0.05)
        with pytest.warns(RuntimeWarning, match="aclose") as warned, router:
            await router.chat.completions.acreate(messages=HELLO)
        await asyncio.sleep(0.2)
        ticker.cancel()
        assert warned[0].filename == __file__
        return max(gaps)

    assert asyncio.run(main()) < 0.5
    for closer in [t for t in threading.enumerate() if t.name == "llmroute-close"]:
        closer.join(10)
    other.join(10)
    assert _logged(db) == [(200, None), (200, None)]


def test_a_call_after_close_in_a_running_loop_is_not_ended_by_it(
    upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The router stays usable after ``close()`` in a running loop: a call begun once it
    returned is answered and logged. The close's thread took the loop's clients and the
    log when it ran, after the call had begun: it ended the call (`RouterClosed`), or
    closed the log the call's record was then offered to."""
    db = tmp_path / "log.db"
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", f"sqlite:///{db}")
    path = _one_route(tmp_path, upstream, f'slow: {{provider: fake, model: "slow?{WAIT}"}}', "slow")
    router = Router.from_yaml(path)
    router.chat.completions.create(messages=HELLO)  # the SDK's loop thread, which close stops

    async def main() -> str:
        with pytest.warns(RuntimeWarning, match="aclose"):
            router.close()
        return await _awaited(router.chat.completions.acreate(messages=HELLO))

    try:
        assert asyncio.run(main()) == "answered"
    finally:
        for closer in [t for t in threading.enumerate() if t.name == "llmroute-close"]:
            closer.join(10)
        router.close()
    assert _logged(db) == [(200, None), (200, None)]


def test_a_stream_its_router_closed_between_reads_raises_router_closed(
    upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_namespace: str,
) -> None:
    """An `AsyncStream` held between reads as its router closes: its next read raises
    `RouterClosed`, naming its decision, as often as it is read; its ``async for``
    ended as if the answer were whole. One read to its end before, or closed by its
    reader, ends as it did."""
    path, _, db = _capped(upstream, tmp_path, redis_namespace, monkeypatch, GAP)

    async def main() -> tuple[list[Any], str, str | None, str, list[str]]:
        router = Router.from_yaml(path)
        whole = await router.chat.completions.acreate(messages=HELLO, stream=True)
        read = [chunk async for chunk in whole]
        stopped = await router.chat.completions.acreate(messages=LONG, stream=True)
        await stopped.aclose()
        held = await router.chat.completions.acreate(messages=LONG, stream=True)
        await anext(held)
        await router.aclose()
        after = [chunk async for chunk in whole] + [chunk async for chunk in stopped]
        with pytest.raises(RouterClosed, match="cut short") as cut:
            async for _ in held:
                pass
        again = await _read(held, [])
        return after, again, cut.value.decision_id, held.llmroute["decision_id"], read

    after, again, named, decision_id, read = asyncio.run(main())
    assert read and after == [] and again == CUT and named == decision_id
    assert sorted(_streams_logged(db), key=lambda row: str(row[1])) == [
        (200, None),
        (200, "client_disconnected"),
        (200, "client_disconnected"),
    ]
