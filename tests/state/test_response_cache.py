"""`ResponseCache` on its own: what goes into the key, what the client's Cache-Control
allows, stored completions and streams, and a store that is down."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from loop_ticks import ticks_while

from llmroute.decide import Router
from llmroute.dispatch import Plan, plan_request
from llmroute.dispatch.text_completions import TextRequest, chat_content
from llmroute.errors import PolicyViolation
from llmroute.registry import parse_registry
from llmroute.registry.schema import CacheSettings
from llmroute.state import CachedAnswer, CacheDirectives, MemoryStore, RedisStore, ResponseCache
from llmroute.state.response_cache import open_semantic_index

REGISTRY = """
encoder: builtin:static
providers:
  up: {kind: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  small: {provider: up, model: small}
  large: {provider: up, model: large}
routes:
  - {name: code, examples: ["write a python function", "fix this bug in my code"], target: large}
  - {name: chat, examples: ["hello there", "how are you today"], target: small}
default: {target: small}
cache: {ttl_s: 60%(extra)s}
%(safety)s
"""


def router(extra: str = "", safety: str = "") -> Router:
    return Router(parse_registry(REGISTRY % {"extra": extra, "safety": safety}))


ROUTER = router()


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def body(text: str = "write a python function that adds", **over: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **over}


def plan(b: dict[str, Any], r: Router = ROUTER, headers: dict[str, str] | None = None) -> Plan:
    return plan_request(r, b, headers or {})


def cache_for(r: Router = ROUTER, **kw: Any) -> tuple[ResponseCache, list[str], Clock]:
    results: list[str] = []
    clock = Clock()
    settings = r.loaded.registry.cache
    assert settings is not None
    store = kw.pop("store", None)
    if store is None:  # (not `or`: an empty MemoryStore is falsy)
        store = MemoryStore(100, 1_000_000)
    cache = ResponseCache(settings, store, r.version, on_result=results.append, clock=clock)
    return cache, results, clock


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, CacheDirectives(True, True, None)),
        ("no-cache", CacheDirectives(False, True, None)),
        ("No-Store", CacheDirectives(False, False, None)),
        ("max-age=30", CacheDirectives(True, True, 30.0)),
        ('max-age="5", no-cache', CacheDirectives(False, True, 5.0)),
        ("max-age=soon", CacheDirectives(True, True, None)),
        ("private", CacheDirectives(True, True, None)),
    ],
)
def test_directives(header: str | None, expected: CacheDirectives) -> None:
    headers = {} if header is None else {"cache-control": header}
    assert CacheDirectives.from_headers(headers) == expected


def test_an_answer_round_trips_and_garbage_is_no_answer() -> None:
    answer = CachedAnswer("small", "up", 12.5, True, b"data: {}\n\ndata: [DONE]\n\n")
    assert CachedAnswer.decode(answer.encode()) == answer
    assert CachedAnswer.decode(b"no newline") is None
    assert CachedAnswer.decode(b'{"m": 1}\npayload') is None
    assert CachedAnswer.decode(b"not json\npayload") is None
    completion = CachedAnswer("small", "up", 1.0, False, b'{"id": "x"}')
    assert CachedAnswer.decode(completion.encode()) == completion
    not_an_object = CachedAnswer("small", "up", 1.0, False, b"[1, 2]")
    assert CachedAnswer.decode(not_an_object.encode()) is None
    cut = CachedAnswer("small", "up", 1.0, True, b"data: {}\n\n")
    assert CachedAnswer.decode(cut.encode()) is None  # a stream without its end


def test_the_key_follows_what_changes_the_answer() -> None:
    cache, _, _ = cache_for()
    base = cache.key(plan(body()), body(), stream=False)
    assert base is not None and base.startswith(f"llmroute:resp:v1:{ROUTER.version}:")
    # The same request, however it names the route or who sends it: the same key.
    assert cache.key(plan(body(model="code")), body(model="code"), False) == base
    same = body(user="alice", metadata={"team": "x"}, tags=["team:x"])  # sent to no model
    assert cache.key(plan(same), same, False) == base
    traced = body(litellm_metadata={"trace_id": "t-1", "tags": ["team:x"]})  # nor this
    assert cache.key(plan(traced), traced, False) == base
    # What the model sees or how it answers: another key.
    for other in (
        body(temperature=0.5),
        body(max_tokens=10),
        body("write a python function that subtracts"),
        body(model="small"),  # pinned to another model
    ):
        assert cache.key(plan(other), other, False) != base
    assert cache.key(plan(body()), body(), stream=True) != base
    # A completion (raw text models answer it raw), and each of its own fields.
    completion = replace(plan(body()), text=TextRequest())
    fim = replace(plan(body()), text=TextRequest.of({"suffix": "}"}))
    keys = {base, cache.key(completion, body(), False), cache.key(fim, body(), False)}
    assert len(keys) == 3
    # Another registry version: another namespace.
    other_router = router(extra=", max_entries: 5")
    other_cache, _, _ = cache_for(other_router)
    assert other_cache.key(plan(body(), other_router), body(), False) != base


def test_a_fill_in_the_middle_completion_is_looked_up_by_its_exact_key_only() -> None:
    """Its answer fits that prefix and suffix alone: no semantic lookup, whose text (the
    two parts joined) would not even tell where one ends and the other begins."""
    r = router(extra=", semantic: {threshold: 0.95}")
    settings = r.loaded.registry.cache
    assert settings is not None
    index = open_semantic_index("memory", settings)
    cache = ResponseCache(settings, MemoryStore(100, 10**6), r.version, semantic=index)
    chat = cache.keys(plan(body(), r), body(), False)
    assert chat is not None and chat.context is not None  # a chat request gets one
    split = {"role": "user", "content": chat_content("write a python", "function that adds")}
    fim_body = body(messages=[split])
    fim = replace(plan(fim_body, r), text=TextRequest.of({"suffix": "function that adds"}))
    keys = cache.keys(fim, fim_body, False)
    assert keys is not None and keys.context is None and keys.exact != chat.exact


def test_routes_and_streams_can_be_left_out() -> None:
    r = router(extra=", routes: [chat], streams: false")
    cache, _, _ = cache_for(r)
    assert cache.key(plan(body(), r), body(), False) is None  # the code route
    hello = body("hello there")
    assert cache.key(plan(hello, r), hello, False) is not None
    assert cache.key(plan(hello, r), hello, True) is None


def test_redacted_requests_share_a_key_and_blocked_ones_raise() -> None:
    r = router(safety="safety: {injection: {enabled: false}}")
    cache, _, _ = cache_for(r)
    a = body("email bob@example.com about the python function")
    b = body("email eve@example.org about the python function")
    key_a = cache.key(plan(a, r), a, False)
    assert key_a is not None and key_a == cache.key(plan(b, r), b, False)
    blocking = router(
        safety="safety: {injection: {enabled: false}, profiles: {standard: {pii: block}}}"
    )
    blocking_cache, _, _ = cache_for(blocking)
    with pytest.raises(PolicyViolation):
        blocking_cache.key(plan(a, blocking), a, False)


def test_store_then_hit_and_what_the_client_allows() -> None:
    cache, results, clock = cache_for()
    key = cache.key(plan(body()), body(), False)
    assert key is not None
    allow = CacheDirectives()
    usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4, "cost_usd": 0.5}
    data = {
        "id": "c1",
        "object": "chat.completion",
        "choices": [{"message": {"content": "hi"}}],
        "usage": usage,
    }

    async def go() -> None:
        assert await cache.get(key, allow) is None
        await cache.put_completion(key, allow, "large", "up", data)
        await cache.flush()
        hit = await cache.get(key, allow)
        assert hit is not None and hit.model == "large"
        # The same answer and token counts; the hit itself cost nothing.
        assert hit.data() == {**data, "usage": {**usage, "cost_usd": 0.0}}
        assert data["usage"]["cost_usd"] == 0.5  # the caller's answer is left alone
        assert not hit.stream and hit.deployment == "up"
        assert await cache.get(key, CacheDirectives(lookup=False)) is None
        clock.now += 30
        assert await cache.get(key, CacheDirectives(max_age_s=10)) is None
        assert await cache.get(key, CacheDirectives(max_age_s=60)) is not None
        await cache.put_completion("other", CacheDirectives(False, False), "large", "up", data)
        await cache.flush()
        assert await cache.store.get("other") is None

    asyncio.run(go())
    assert results == ["miss", "stored", "hit", "bypass", "miss", "hit"]


async def _events(*events: bytes) -> AsyncIterator[bytes]:
    for event in events:
        yield event


STREAM = (b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n', b"data: [DONE]\n\n")
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":3,"cost_usd":0.25}}\n\n'


def _small() -> tuple[str, str]:
    return "small", "up"


def test_streams_are_stored_only_when_complete_and_small_enough() -> None:
    settings = CacheSettings(max_entry_bytes=1024)
    results: list[str] = []
    cache = ResponseCache(settings, MemoryStore(10, 100_000), "v", on_result=results.append)
    allow = CacheDirectives()

    async def drain(events: AsyncIterator[bytes]) -> bytes:
        return b"".join([event async for event in events])

    async def go() -> None:
        sent = await drain(cache.tee_stream("done", allow, _small, _events(*STREAM)))
        assert sent == b"".join(STREAM)
        await drain(cache.tee_stream("cut", allow, _small, _events(STREAM[0])))
        big = (b"data: " + b"x" * 2000 + b"\n\n", STREAM[1])
        await drain(cache.tee_stream("big", allow, _small, _events(*big)))
        await cache.flush()
        stored = await cache.get("done", allow)
        assert stored is not None and stored.stream and stored.payload == b"".join(STREAM)
        assert await cache.store.get("cut") is None
        assert await cache.store.get("big") is None
        events = _events(*STREAM)
        assert cache.tee_stream("x", CacheDirectives(False, False), _small, events) is events
        priced = (STREAM[0], USAGE, STREAM[1])
        sent = await drain(cache.tee_stream("priced", allow, _small, _events(*priced)))
        assert sent == b"".join(priced)  # the client got the cost
        await cache.flush()
        replayed = await cache.get("priced", allow)
        assert replayed is not None
        assert b'"cost_usd":0.0' in replayed.payload and b"0.25" not in replayed.payload
        assert replayed.payload.startswith(STREAM[0]) and replayed.payload.endswith(STREAM[1])
        # a stream that fell back to another model after it opened is stored as that one's
        served = ["small", "up"]
        tee = cache.tee_stream("fell", allow, lambda: (served[0], served[1]), _events(*STREAM))
        async for _ in tee:
            served[:] = ["large", "up2"]
        await cache.flush()
        fell = await cache.get("fell", allow)
        assert fell is not None and (fell.model, fell.deployment) == ("large", "up2")

    asyncio.run(go())
    assert results.count("too_large") == 1 and results.count("stored") == 3


async def _broken_after(*events: bytes) -> AsyncIterator[bytes]:
    for event in events:
        yield event
    raise ConnectionResetError("the upstream broke off")


def test_a_stream_is_stored_up_to_its_done_once_that_went_out() -> None:
    """Whatever ends a stream after its ``[DONE]`` went out (its upstream breaking, more
    events after it), what the client got is stored: the events up to that ``[DONE]``.
    One closed as its ``[DONE]`` was being sent (the client gone) is not. A break after
    the ``[DONE]`` kept the stream out, and what followed it was stored and replayed."""
    cache = ResponseCache(CacheSettings(), MemoryStore(10, 100_000), "v")
    allow = CacheDirectives()
    late = b'data: {"choices":[{"delta":{"content":" late"}}]}\n\n'

    async def go() -> None:
        sent = []
        with pytest.raises(ConnectionResetError):
            async for event in cache.tee_stream("broke", allow, _small, _broken_after(*STREAM)):
                sent.append(event)
        assert sent == list(STREAM)
        more = _events(*STREAM, late, STREAM[1])
        assert len([e async for e in cache.tee_stream("more", allow, _small, more)]) == 4
        cut = cache.tee_stream("cut", allow, _small, _events(*STREAM))
        async for event in cut:
            if event == STREAM[1]:
                break  # its sender failed on the [DONE]: the client did not get it
        await cut.aclose()  # type: ignore[attr-defined]
        await cache.flush()
        for key in ("broke", "more"):
            stored = await cache.get(key, allow)
            assert stored is not None and stored.payload == b"".join(STREAM)
        assert await cache.store.get("cut") is None

    asyncio.run(go())


def test_a_store_that_is_down_is_a_miss_and_rested(closed_port: int) -> None:
    store = RedisStore(f"redis://127.0.0.1:{closed_port}/0", timeout_s=0.5)
    cache, results, clock = cache_for(store=store)
    allow = CacheDirectives()

    async def go() -> None:
        assert await cache.get("k", allow) is None  # tried: refused
        assert await cache.get("k", allow) is None  # within a second: not tried
        await cache.put_completion("k", allow, "small", "up", {"a": 1})  # skipped while down
        assert not cache._writes
        clock.now += 1.5
        assert await cache.get("k", allow) is None  # tried again
        await cache.aclose()

    asyncio.run(go())
    assert results == ["error", "error", "error"]


class SlowStore(MemoryStore):
    """A store whose writes take `delay_s` (a Redis slow to answer)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(100, 1_000_000)
        self.delay_s = delay_s

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await asyncio.sleep(self.delay_s)
        await super().set(key, value, ttl_s)


def slow_cache(store: SlowStore, **settings: float) -> ResponseCache:
    cache_settings = ROUTER.loaded.registry.cache
    assert cache_settings is not None
    return ResponseCache(cache_settings.model_copy(update=settings), store, ROUTER.version)


ANSWER = {"id": "c1", "object": "chat.completion", "choices": [{"message": {"content": "hi"}}]}


def test_closing_waits_for_a_write_as_long_as_the_store_may_take() -> None:
    """Closing waited 2 s for the writes in flight whatever the store's timeout: with
    ``timeout_s: 1`` an answer's write (its entry, then what served its decision)
    may take 3 s, and one cut at 2 s was lost as the gateway stopped. (A write of
    2.2 s: 0.8 s short of the wait, so that a loaded machine's stall does not cut it.)"""
    store = SlowStore(2.2)
    cache = slow_cache(store, timeout_s=1.0)
    key = cache.key(plan(body()), body(), False)
    assert key is not None

    async def go() -> None:
        await cache.put_completion(key, CacheDirectives(), "large", "up", ANSWER)
        await cache.aclose()

    asyncio.run(go())
    assert len(store) == 1  # the answer is stored


def test_a_write_cut_by_closing_is_said(caplog: pytest.LogCaptureFixture) -> None:
    store = SlowStore(5.0)
    cache = slow_cache(store)
    key = cache.key(plan(body()), body(), False)
    assert key is not None

    async def go() -> None:
        await cache.put_completion(key, CacheDirectives(), "large", "up", ANSWER)
        await cache.aclose(timeout_s=0.1)

    with caplog.at_level("WARNING", logger="llmroute.cache"):
        asyncio.run(go())
    assert "closing with 1 write(s) still waiting" in caplog.text
    assert len(store) == 0


def _with_logprobs(tokens: int) -> dict[str, Any]:
    """A chat answer with logprobs (20 alternatives a token: ~1.2 KB a token)."""
    alternatives = [{"token": "tok", "logprob": -0.5, "bytes": [116, 111, 107]}] * 20
    entry = {"token": "tok", "logprob": -0.25, "bytes": [116, 111, 107]}
    content = [{**entry, "top_logprobs": alternatives} for _ in range(tokens)]
    choice = {"index": 0, "message": {"role": "assistant", "content": "tok" * tokens}}
    usage = {"prompt_tokens": 3, "completion_tokens": tokens, "cost_usd": 0.5}
    return {
        "id": "c1",
        "object": "chat.completion",
        "choices": [{**choice, "logprobs": {"content": content}}],
        "usage": usage,
    }


def test_an_answer_past_max_entry_bytes_is_not_written_whole() -> None:
    """A large answer (logprobs) is ``too_large`` once its first ``max_entry_bytes`` are
    written, a step at a time with the event loop running between: it was written whole,
    in one call on the loop (~0.4 s for 12 MB), to find it too large. Within the bound it
    is stored as before, the same bytes."""
    large = _with_logprobs(4096)  # ~5 MB
    long_text = {"choices": [{"message": {"content": "x" * 2_000_000}}]}
    cache, results, _ = cache_for(store=MemoryStore(100, 50_000_000))  # 1 MiB entries

    async def too_large() -> None:
        await cache.put_completion("k", CacheDirectives(), "large", "up", large)
        await cache.put_completion("k", CacheDirectives(), "large", "up", long_text)
        await cache.flush()

    _, ticks = ticks_while(too_large)
    assert results == ["too_large", "too_large"]
    assert ticks > 1
    roomy, results, _ = cache_for(
        router(extra=", max_entry_bytes: 20000000"), store=MemoryStore(100, 50_000_000)
    )

    async def stored() -> CachedAnswer | None:
        await roomy.put_completion("k", CacheDirectives(), "large", "up", large)
        await roomy.flush()
        return await roomy.get("k", CacheDirectives())

    hit = asyncio.run(stored())
    freed = {**large, "usage": {**large["usage"], "cost_usd": 0.0}}
    assert hit is not None and results == ["stored", "hit"]
    assert hit.payload == json.dumps(freed, separators=(",", ":"), ensure_ascii=False).encode()
