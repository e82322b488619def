"""A stream its caller drops unclosed inside a reference cycle (an exception's traceback
holding the frame that held it, as a web framework's cancelled response leaves one):
the collector frees it with every generator of its chain in one pass. Each is ended
once, in order, on its loop, not closed by its own finaliser beside that end."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_upstream import FakeUpstream, fake_upstream

from llmroute import Router

WORDS = [{"role": "user", "content": " ".join(f"w{i}" for i in range(30))}]
DROPS = 5  # bounded: the race it had, it lost in most runs of 5


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as server:
        yield server


@pytest.fixture
def capped(
    upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, str, Path]:
    """A registry whose one model has one in-flight slot and streams a word every 0.05
    s; its upstream name; the SQLite decision log."""
    db = tmp_path / "log.db"
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", f"sqlite:///{db}")
    name = f"capped-{tmp_path.name}?gap=0.05"
    path = tmp_path / "registry.yaml"
    path.write_text(f"""
encoder: builtin:static
providers:
  fake: {{kind: openai, base_url: "{upstream.url}", timeout_s: 10}}
models:
  capped: {{provider: fake, model: "{name}", max_in_flight: 1}}
routes:
  - {{name: any, examples: ["hello there"], target: capped}}
default: {{target: capped}}
dispatch: {{breaker: {{enabled: false}}}}
""")
    return path, name, db


def _unraisable(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the collector's finalisers raised (asyncgen closes included), as text."""
    seen: list[str] = []

    def hook(unraisable: Any) -> None:
        seen.append(f"{unraisable.object!r}: {unraisable.exc_value!r}")

    monkeypatch.setattr(sys, "unraisablehook", hook)
    return seen


@contextlib.contextmanager
def _switching_often() -> Iterator[None]:
    """The GIL passed between threads often, so that the loop thread's end of a stream
    runs while the calling thread's collector is still at work, as it did now and then;
    the objects there already frozen, so that each collection takes a millisecond, not
    a tenth of a second."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        sys.setswitchinterval(before)


def _in_a_cycle(stream: Any) -> None:
    """Held by nothing but a cycle: freed only by the cyclic collector."""
    box: list[Any] = [stream]
    box.append(box)


def _until_cut(upstream: FakeUpstream, name: str, count: int) -> None:
    deadline = time.monotonic() + 5
    while sum(m == name for m, _ in upstream.cut) < count and time.monotonic() < deadline:
        time.sleep(0.02)


def _ends(db: Path) -> list[tuple[int, str]]:
    store = sqlite3.connect(db)
    try:
        return store.execute("SELECT status, error FROM decisions WHERE stream = 1").fetchall()
    finally:
        store.close()


def test_a_sync_stream_dropped_in_a_cycle_is_ended_in_order(
    capped: tuple[Path, str, Path],
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Read in part from the calling thread, dropped there: the collector ran there
    while the SDK's loop thread ended the stream, and finalised the chain's generators
    under that end ("Exception ignored in: <async_generator object _chunks>:
    ValueError: async generator already executing", closing them from the wrong
    thread)."""
    path, name, db = capped
    raised = _unraisable(monkeypatch)
    with Router.from_yaml(path) as router, _switching_often():
        router.chat.completions.create(messages=WORDS)  # what it loads, loaded before
        for count in range(1, DROPS + 1):
            stream = router.chat.completions.create(messages=WORDS, stream=True)
            next(stream), next(stream)
            _in_a_cycle(stream)
            del stream
            gc.collect()
            _until_cut(upstream, name, count)
        # the one slot was given back each time: the last call is answered
        assert router.chat.completions.create(messages=WORDS).choices
    assert raised == []
    assert "already" not in caplog.text and "never retrieved" not in caplog.text
    assert _ends(db) == [(200, "client_disconnected")] * DROPS


def test_an_async_stream_dropped_in_a_cycle_is_ended_in_order(
    capped: tuple[Path, str, Path],
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path, name, db = capped
    raised = _unraisable(monkeypatch)

    async def main() -> None:
        async with Router.from_yaml(path) as router:
            await router.chat.completions.acreate(messages=WORDS)  # what it loads, loaded
            for count in range(1, DROPS + 1):
                stream = await router.chat.completions.acreate(messages=WORDS, stream=True)
                await anext(stream), await anext(stream)
                _in_a_cycle(stream)
                del stream
                gc.collect()
                await asyncio.to_thread(_until_cut, upstream, name, count)
            assert (await router.chat.completions.acreate(messages=WORDS)).choices

    with _switching_often():
        asyncio.run(main())
    assert raised == []
    assert "already" not in caplog.text and "never retrieved" not in caplog.text
    assert _ends(db) == [(200, "client_disconnected")] * DROPS
