"""An SDK call that raises after it was routed names its decision (`decision_id`), as the
gateway's error answers do in ``x-request-id``: an application logs it, finds the call
in the decision log and gives feedback on it. Against a fake upstream (real HTTP)."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_upstream import FAIL_400, FAIL_500, FAIL_MID, FakeUpstream, fake_upstream

from llmroute import Router
from llmroute.errors import (
    AllFallbacksFailed,
    CallTimeout,
    InvalidRequest,
    LlmrouteError,
    ModelNotFound,
    ProviderError,
    RouterClosed,
    UpstreamRejected,
)

KEY = "sk-test-h14-0123456789abcdef"  # the provider's key: never in an error
HELLO = [{"role": "user", "content": "hi there"}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as server:
        yield server


@pytest.fixture
def logged(
    upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path]:
    """A registry of faulty models, and the SQLite decision log its routers write."""
    db = tmp_path / "log.db"
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", f"sqlite:///{db}")
    monkeypatch.setenv("H14_FAKE_KEY", KEY)
    path = tmp_path / "registry.yaml"
    path.write_text(f"""
encoder: builtin:static
providers:
  fake: {{kind: openai, base_url: "{upstream.url}", timeout_s: 10, api_key_env: H14_FAKE_KEY}}
  hasty: {{kind: openai, base_url: "{upstream.url}", timeout_s: 0.3, api_key_env: H14_FAKE_KEY}}
models:
  ok: {{provider: fake, model: ok}}
  broken: {{provider: fake, model: {FAIL_500}}}
  picky: {{provider: fake, model: {FAIL_400}}}
  halfway: {{provider: fake, model: {FAIL_MID}}}
  slow: {{provider: fake, model: "slow-{tmp_path.name}?delay=2"}}
  stalled: {{provider: fake, model: "stalled?stall=2"}}
  hurried: {{provider: hasty, model: "hurried-{tmp_path.name}?delay=2"}}
routes:
  - {{name: any, examples: ["hello there"], target: ok}}
default: {{target: ok}}
dispatch:
  retries: {{attempts: 1, backoff_s: 0.01, max_backoff_s: 0.02}}
  breaker: {{enabled: false}}
""")
    return path, db


def _logged(db: Path) -> dict[str, tuple[int, str | None]]:
    """(status, error) of each decision logged, by its id."""
    store = sqlite3.connect(db)
    try:
        rows = store.execute("SELECT id, status, error FROM decisions").fetchall()
    finally:
        store.close()
    return {row[0]: (row[1], row[2]) for row in rows}


def _no_secret(exc: BaseException) -> None:
    assert KEY not in str(exc) and KEY not in repr(exc)


def test_upstream_failures_carry_their_logged_decision_and_status(
    logged: tuple[Path, Path],
) -> None:
    path, db = logged
    with Router.from_yaml(path) as router:
        with pytest.raises(AllFallbacksFailed) as failed:
            router.chat.completions.create(model="broken", messages=HELLO)
        with pytest.raises(UpstreamRejected) as rejected:
            router.chat.completions.create(model="picky", messages=HELLO)
    rows = _logged(db)
    assert failed.value.decision_id in rows and rows[failed.value.decision_id][0] == 502
    assert failed.value.status == 502 and failed.value.errors[0].status == 500
    assert rejected.value.decision_id in rows and rows[rejected.value.decision_id][0] == 400
    assert rejected.value.status == 400
    assert failed.value.decision_id != rejected.value.decision_id
    _no_secret(failed.value)
    _no_secret(rejected.value)


@pytest.mark.parametrize("stream", [False, True])
def test_the_registrys_timeout_is_not_the_calls(logged: tuple[Path, Path], stream: bool) -> None:
    """A guard: within a call's own (longer) `timeout`, the registry's timeout is the
    upstream's, as the gateway answers it: 504 ``upstream_error``, not ``timeout``."""
    path, db = logged
    with Router.from_yaml(path) as router, pytest.raises(LlmrouteError) as late:
        router.chat.completions.create(model="hurried", messages=HELLO, stream=stream, timeout=30)
    assert not isinstance(late.value, CallTimeout)
    assert _logged(db)[str(late.value.decision_id)] == (504, "upstream_error")


def test_errors_before_routing_name_no_decision(logged: tuple[Path, Path]) -> None:
    path, _ = logged
    with Router.from_yaml(path) as router:
        with pytest.raises(ModelNotFound) as unknown:
            router.chat.completions.create(model="nope", messages=HELLO)
        with pytest.raises(InvalidRequest) as invalid:
            router.chat.completions.create(messages=HELLO, tools=[])
    assert unknown.value.decision_id is None and invalid.value.decision_id is None


def test_timeouts_and_a_broken_stream_name_their_decision(logged: tuple[Path, Path]) -> None:
    path, db = logged
    words = [{"role": "user", "content": "one two three four"}]

    async def main() -> tuple[LlmrouteError, LlmrouteError, LlmrouteError, str, LlmrouteError, str]:
        async with Router.from_yaml(path) as router:
            with pytest.raises(CallTimeout) as late:
                await router.chat.completions.acreate(model="slow", messages=HELLO, timeout=0.2)
            with pytest.raises(CallTimeout) as unopened:
                await router.chat.completions.acreate(
                    model="slow", messages=HELLO, stream=True, timeout=0.2
                )
            stream = await router.chat.completions.acreate(
                model="halfway", messages=HELLO, stream=True
            )
            with pytest.raises(ProviderError) as broken:
                async for _ in stream:
                    pass
            stalled = await router.chat.completions.acreate(
                model="stalled", messages=words, stream=True, timeout=0.5
            )
            with pytest.raises(CallTimeout) as stall:  # one class, streamed or not
                async for _ in stalled:
                    pass
            return (
                late.value,
                unopened.value,
                broken.value,
                stream.llmroute["decision_id"],
                stall.value,
                stalled.llmroute["decision_id"],
            )

    late, unopened, broken, opened, stall, stalled = asyncio.run(main())
    assert broken.decision_id == opened and stall.decision_id == stalled
    rows = _logged(db)
    # the call's own timeout is one code, streamed or not (a whole answer's was logged
    # 504 upstream_error, as if the upstream had timed out)
    assert rows[late.decision_id] == rows[unopened.decision_id] == (504, "timeout")
    assert rows[opened] == (200, "stream_interrupted") and rows[stalled] == (200, "timeout")


def test_a_sync_stream_broken_midway_names_its_decision(logged: tuple[Path, Path]) -> None:
    path, _ = logged
    with Router.from_yaml(path) as router:
        stream = router.chat.completions.create(model="halfway", messages=HELLO, stream=True)
        with pytest.raises(ProviderError) as broken, stream:
            for _ in stream:
                pass
    assert broken.value.decision_id == stream.llmroute["decision_id"]


def test_router_closed_names_the_decision_it_ended(
    logged: tuple[Path, Path], upstream: FakeUpstream, tmp_path: Path
) -> None:
    """`RouterClosed` for an `acreate` and a `create` waiting as the router closes (an
    application's lifespan ending, a registry swapped) names the call's decision, logged
    as the caller leaving."""
    path, db = logged
    slow = f"slow-{tmp_path.name}?delay=2"

    async def main() -> BaseException:
        router = Router.from_yaml(path)
        call = asyncio.ensure_future(router.chat.completions.acreate(model="slow", messages=HELLO))
        deadline = time.monotonic() + 5
        while not upstream.calls_to(slow) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await router.aclose()
        with pytest.raises(RouterClosed) as closed:
            await call
        return closed.value

    ended_async = asyncio.run(main())
    seen: list[BaseException] = []
    router = Router.from_yaml(path)

    def call() -> None:
        try:
            router.chat.completions.create(model="slow", messages=HELLO)
        except BaseException as exc:  # what the calling thread sees
            seen.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 5
    while len(upstream.calls_to(slow)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    router.close()
    caller.join(10)
    assert len(seen) == 1 and isinstance(seen[0], RouterClosed), seen
    rows = _logged(db)
    for closed in (ended_async, seen[0]):
        assert isinstance(closed, RouterClosed)
        assert closed.decision_id is not None and rows[closed.decision_id][0] == 499


def test_a_router_freed_unclosed_lets_go_of_its_threads(logged: tuple[Path, Path]) -> None:
    """A registry reloaded by swapping routers, the old one dropped without a close: its
    loop thread and its decision log's writer thread (with its store) lived on, one of
    each per router, until the process ended. Freed, it lets go of them, what its log
    had queued written first."""
    path, db = logged
    before = set(threading.enumerate())
    router = Router.from_yaml(path)
    router.chat.completions.create(messages=HELLO)

    async def call(router: Router) -> None:
        await router.chat.completions.acreate(messages=HELLO)

    asyncio.run(call(router))
    names = ("llmroute-sdk", "llmroute-telemetry-writer")
    started = [t for t in threading.enumerate() if t not in before and t.name in names]
    assert sorted(t.name for t in started) == sorted(names)
    del router
    gc.collect()
    for thread in started:
        thread.join(10)
    assert [t.name for t in started if t.is_alive()] == []
    assert [status for status, _ in _logged(db).values()] == [200, 200]


def test_a_stream_outlives_its_router_freed_meanwhile(
    logged: tuple[Path, Path], tmp_path: Path
) -> None:
    """The router's SDK is closed once freed, but not under a stream opened on it and
    still read (an answer from the cache refers to nothing else of it)."""
    path, _ = logged
    cached = tmp_path / "cached.yaml"
    cached.write_text(path.read_text() + "cache: {}\n")
    words = [{"role": "user", "content": "one two three"}]

    async def main() -> tuple[str | None, int]:
        router = Router.from_yaml(cached)
        async with await router.chat.completions.acreate(messages=words, stream=True) as first:
            async for _ in first:
                pass
        stream = await router.chat.completions.acreate(messages=words, stream=True)
        del router, first  # the first holds the router (to record its end): not the hit
        gc.collect()
        await asyncio.sleep(0.2)  # what a close would do on this loop, done
        return stream.llmroute["cache"], len([chunk async for chunk in stream])

    cache, chunks = asyncio.run(main())
    assert cache == "hit" and chunks > 1
