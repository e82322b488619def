"""The SDK's synchronous calls made in a running event loop (an ``async def`` handler)
hold the loop, and every task on it, until they return: they say so, once per router,
with a `RuntimeWarning` pointing to the asynchronous call. Against a fake upstream."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_upstream import FakeUpstream, fake_upstream
from test_sdk import HELLO, _one_route

from llmroute import Router
from llmroute.sdk.streams import Stream


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as server:
        yield server


def test_sync_calls_in_a_running_loop_warn_once_pointing_to_the_async_ones(
    upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", f"sqlite:///{tmp_path / 'log.db'}")
    path = _one_route(tmp_path, upstream, "quick: {provider: fake, model: quick}", "quick")
    router = Router.from_yaml(path)

    async def main() -> list[warnings.WarningMessage]:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")  # the once is the router's, not the filter's
            for _ in range(2):
                reply = router.chat.completions.create(messages=HELLO)
                router.chat.feedback(reply.llmroute["decision_id"], thumbs="up")
            await router.chat.completions.acreate(messages=HELLO)
        return seen

    try:
        seen = asyncio.run(main())
        router.chat.completions.create(messages=HELLO)  # no loop: no warning (an error here)
    finally:
        router.close()
    assert [w.category for w in seen] == [RuntimeWarning, RuntimeWarning]
    assert [w.filename for w in seen] == [__file__, __file__]
    create, feedback = (str(w.message) for w in seen)
    assert create.startswith("router.chat.completions.create() was called in a running")
    assert "`await router.chat.completions.acreate(...)`" in create
    assert "`await router.chat.afeedback(...)`" in feedback


def test_a_sync_stream_read_in_a_running_loop_warns_once(
    upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `Stream` created outside the loop (no warning from ``create``) and read in it
    holds the loop at each chunk: it says so once per router, at the reader's line."""
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", f"sqlite:///{tmp_path / 'log.db'}")
    path = _one_route(tmp_path, upstream, "quick: {provider: fake, model: quick}", "quick")
    router = Router.from_yaml(path)

    async def main(streams: list[Stream]) -> list[warnings.WarningMessage]:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            for stream in streams:
                assert list(stream)
        return seen

    try:
        created = [router.chat.completions.create(messages=HELLO, stream=True) for _ in "ab"]
        seen = asyncio.run(main(created))
        assert list(router.chat.completions.create(messages=HELLO, stream=True))  # no loop
    finally:
        router.close()
    assert [(w.category, w.filename) for w in seen] == [(RuntimeWarning, __file__)]
    message = str(seen[0].message)
    # "router.chat" first: the filter docs/sdk.md gives for notebooks silences it too
    assert message.startswith("router.chat.completions.create(stream=True)'s Stream was read")
    assert "`async for chunk in await router.chat.completions.acreate(..., stream=True)`" in message
