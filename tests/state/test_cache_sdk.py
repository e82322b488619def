"""The response cache in the SDK: ``router.chat.completions`` in-process against a fake
upstream that numbers its answers, with the cache in memory (shared by the SDK's own
loop and the caller's) and in a real Redis (shared by two routers)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_upstream import FakeUpstream, fake_upstream
from redis_service import REDIS_URL

from llmroute import Router
from llmroute.dispatch import Served
from llmroute.state.lookup import CacheLookup

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: 'small?vary=1', price: {input: 1.0, output: 2.0}}
routes:
  - {name: chat, examples: ["hi there!", "how are you today?"], target: small}
default: {target: small}
cache: %(cache)s
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as server:
        yield server


def _router(tmp: Path, upstream: FakeUpstream, cache: str, name: str = "r.yaml") -> Router:
    path = tmp / name
    path.write_text(REGISTRY % {"url": upstream.url, "cache": cache})
    return Router.from_yaml(path)


def _ask(text: str) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}]}


def test_sync_and_async_calls_share_the_memory_cache(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    with _router(tmp_path, upstream, "{ttl_s: 60}") as router:
        before = len(upstream.requests)
        first = router.chat.completions.create(**_ask("hi there, sdk"))
        second = router.chat.completions.create(**_ask("hi there, sdk"))
        assert first.llmroute["cache"] == "miss"
        assert second.llmroute["cache"] == "hit" and second.llmroute["cost_usd"] == 0.0
        assert second.choices[0].message.content == first.choices[0].message.content
        third = asyncio.run(router.chat.completions.acreate(**_ask("hi there, sdk")))
        assert third.llmroute["cache"] == "hit"
        fresh = router.chat.completions.create(
            **_ask("hi there, sdk"), extra_headers={"Cache-Control": "no-cache"}
        )
        assert fresh.llmroute["cache"] == "bypass"
        assert fresh.choices[0].message.content != first.choices[0].message.content
        assert len(upstream.requests) == before + 2


def test_a_stream_is_replayed_chunk_by_chunk(tmp_path: Path, upstream: FakeUpstream) -> None:
    with _router(tmp_path, upstream, "{ttl_s: 60}") as router:
        ask = {**_ask("how are you today, streaming?"), "stream": True}
        first = router.chat.completions.create(**ask)
        first_chunks = [c.choices[0].delta.content for c in first if c.choices]
        assert first.llmroute["cache"] == "miss"
        before = len(upstream.requests)
        for _ in range(50):  # the write happens in the background after the stream ends
            second = router.chat.completions.create(**ask)
            chunks = [c.choices[0].delta.content for c in second if c.choices]
            if second.llmroute["cache"] == "hit":
                break
        assert second.llmroute["cache"] == "hit"
        assert chunks == first_chunks and len(chunks) > 1
        assert len(upstream.requests) <= before + 1


def test_two_routers_share_a_redis_cache(
    tmp_path: Path, upstream: FakeUpstream, redis_namespace: str
) -> None:
    cache = f"{{url: '{REDIS_URL}', namespace: {redis_namespace}, timeout_s: 2}}"
    before = len(upstream.requests)
    with _router(tmp_path, upstream, cache, "a.yaml") as a:
        first = a.chat.completions.create(**_ask("hi there, redis"))
        assert first.llmroute["cache"] == "miss"
    # Closing the router waited for the write; a second router (same registry) hits.
    with _router(tmp_path, upstream, cache, "b.yaml") as b:
        second = asyncio.run(b.chat.completions.acreate(**_ask("hi there, redis")))
        assert second.llmroute["cache"] == "hit"
        assert second.choices[0].message.content == first.choices[0].message.content
    assert len(upstream.requests) == before + 1


def test_the_sdk_answers_a_request_close_in_meaning(tmp_path: Path, upstream: FakeUpstream) -> None:
    with _router(tmp_path, upstream, "{ttl_s: 60, semantic: {threshold: 0.95}}") as router:
        before = len(upstream.requests)
        first = router.chat.completions.create(**_ask("What is the capital of France?"))
        close = router.chat.completions.create(**_ask("what is the capital of france"))
        assert first.llmroute["cache"] == "miss" and "cache_similarity" not in first.llmroute
        assert close.llmroute["cache"] == "hit"
        assert 0.95 <= close.llmroute["cache_similarity"] < 1.0
        assert close.choices[0].message.content == first.choices[0].message.content
        spain = router.chat.completions.create(**_ask("What is the capital of Spain?"))
        assert spain.llmroute["cache"] == "miss"
        assert len(upstream.requests) == before + 2


def test_two_routers_share_the_semantic_index_in_redis(
    tmp_path: Path, upstream: FakeUpstream, redis_namespace: str
) -> None:
    cache = (
        f"{{url: '{REDIS_URL}', namespace: {redis_namespace}, timeout_s: 2, "
        "semantic: {threshold: 0.95}}"
    )
    before = len(upstream.requests)
    with _router(tmp_path, upstream, cache, "a.yaml") as a:
        first = a.chat.completions.create(**_ask("What is the capital of France?"))
    with _router(tmp_path, upstream, cache, "b.yaml") as b:
        close = asyncio.run(b.chat.completions.acreate(**_ask("what is the capital of france")))
        assert close.llmroute["cache"] == "hit" and "cache_similarity" in close.llmroute
        assert close.choices[0].message.content == first.choices[0].message.content
    assert len(upstream.requests) == before + 1


def test_closing_the_router_lets_a_slow_cache_write_finish(
    tmp_path: Path, upstream: FakeUpstream, redis_namespace: str, paused_redis: str
) -> None:
    """Redis pauses writes (``CLIENT PAUSE``) while the router closes: the answer's
    write and its semantic index entry still land (closing the router cancelled them)."""
    import redis

    cache = (
        f"{{url: '{paused_redis}', namespace: {redis_namespace}, timeout_s: 2, "
        "semantic: {threshold: 0.95}}"
    )
    with redis.Redis.from_url(paused_redis) as admin, _router(tmp_path, upstream, cache) as a:
        a.chat.completions.create(**_ask("What is the capital of Italy?"))  # warm
        admin.execute_command("CLIENT", "PAUSE", 300, "WRITE")
        first = a.chat.completions.create(**_ask("What is the capital of Peru?"))
        assert first.llmroute["cache"] == "miss"
    with _router(tmp_path, upstream, cache, "b.yaml") as b:
        close = b.chat.completions.create(**_ask("what is the capital of peru"))
        assert close.llmroute["cache"] == "hit"
        assert close.choices[0].message.content == first.choices[0].message.content


def test_negative_feedback_through_the_sdk_evicts_the_cached_answer(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    log = f"sqlite:///{tmp_path / 'decisions.db'}"
    cache = f"{{ttl_s: 60}}\ntelemetry: {{url: '{log}'}}"
    with _router(tmp_path, upstream, cache) as router:
        first = router.chat.completions.create(**_ask("hi there, judge me"))
        hit = router.chat.completions.create(**_ask("hi there, judge me"))
        assert hit.llmroute["cache"] == "hit"
        assert router.chat.feedback(hit.llmroute["decision_id"], thumbs="down")
        fresh = router.chat.completions.create(**_ask("hi there, judge me"))
        assert fresh.llmroute["cache"] == "miss"
        assert fresh.choices[0].message.content != first.choices[0].message.content


async def _cut_while_storing(self: CacheLookup, served: Served) -> None:
    raise asyncio.CancelledError  # the caller's timeout, mid-write of a large answer


def test_a_call_cancelled_while_its_answer_is_stored_is_still_logged(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache write comes after the success's record: a call cut during it keeps its
    200 row and the answer's cost (the write came first, and the row was lost)."""
    monkeypatch.setattr(CacheLookup, "store", _cut_while_storing)
    db = tmp_path / "decisions.db"
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", f"sqlite:///{db}")
    with (
        _router(tmp_path, upstream, "{ttl_s: 60}") as router,
        pytest.raises(asyncio.CancelledError),
    ):
        asyncio.run(router.chat.completions.acreate(**_ask("hi there, cut me off")))
    store = sqlite3.connect(db)
    try:
        rows = store.execute("SELECT status, tokens_in, tokens_out, cost_usd FROM decisions")
        (status, tokens_in, tokens_out, cost), *more = rows.fetchall()
    finally:
        store.close()
    assert not more and status == 200
    assert tokens_in and tokens_out and cost is not None and cost > 0
