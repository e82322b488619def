"""The SDK end to end: ``router.chat.completions`` in-process, against a fake
OpenAI-compatible upstream (a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import redis
from fake_upstream import FAIL_400, FAIL_500, FakeUpstream, fake_upstream
from gateway_proc import wait_for
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from redis_service import REDIS_URL

from llmroute import Router
from llmroute.errors import (
    CallTimeout,
    ConfigError,
    ModelNotFound,
    ProviderError,
    RouterClosed,
    RoutingError,
    UpstreamRejected,
)
from llmroute.sdk.streams import CUT_SHORT
from llmroute.telemetry.store import open_store

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small, price: {input: 1.0, output: 2.0}}
  large: {provider: fake, model: up-large}
  broken: {provider: fake, model: %(fail_500)s}
  picky: {provider: fake, model: %(fail_400)s}
  halfway: {provider: fake, model: fail-mid}
  reset-after: {provider: fake, model: "whole?after=reset"}
  open-after: {provider: fake, model: "whole?after=open", timeout_s: 120}
routes:
  - name: code
    examples: ["write a Python function to parse JSON", "debug this SQL query"]
    target: large
    policy: {fallback: [small]}
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: small
  - name: flaky
    examples: ["tell me about volcanoes", "how do glaciers form"]
    target: broken
    policy: {fallback: [small]}
  - name: rejected
    examples: ["translate this to French", "say hello in German"]
    target: picky
    policy: {fallback: [small]}
default: {target: small}
rules:
  - {name: vip, when: {header: {x-tier: vip}}, target: large}
dispatch:
  retries: {attempts: 1, backoff_s: 0.01, max_backoff_s: 0.02}
  breaker: {enabled: false}
"""

CODE = [{"role": "user", "content": "write a Python function to parse JSON"}]
HELLO = [{"role": "user", "content": "hi there!"}]
SDK_THREAD = "llmroute-sdk"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as server:
        yield server


@pytest.fixture(scope="module")
def registry(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sdk") / "registry.yaml"
    path.write_text(REGISTRY % {"url": upstream.url, "fail_500": FAIL_500, "fail_400": FAIL_400})
    return path


@pytest.fixture
def router(registry: Path) -> Iterator[Router]:
    with Router.from_yaml(registry) as router:
        yield router


def _sdk_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == SDK_THREAD]


def _text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_create_routes_and_returns_an_openai_completion(router: Router) -> None:
    completion = router.chat.completions.create(model="auto", messages=CODE)
    assert isinstance(completion, ChatCompletion)
    assert completion.model == "up-large"
    assert completion.choices[0].message.content == "echo: " + CODE[0]["content"]
    info = completion.llmroute  # type: ignore[attr-defined]
    assert info["route"] == "code" and info["model"] == "large"
    assert info["layer"] == "intent" and info["decision_id"]
    assert completion._request_id == info["decision_id"]  # as the gateway's x-request-id
    assert 0.0 < info["confidence"] <= 1.0
    assert completion.model_dump()["llmroute"] == info


def test_model_defaults_to_auto_and_pins_routes_and_pool_models(router: Router) -> None:
    assert router.chat.completions.create(messages=HELLO).model == "up-small"
    pinned = router.chat.completions.create(model="code", messages=HELLO)
    assert pinned.model == "up-large"
    assert pinned.llmroute["route"] == "code" and pinned.llmroute["layer"] == "pinned"
    pool = router.chat.completions.create(model="small", messages=CODE)
    assert pool.model == "up-small" and pool.llmroute["model"] == "small"
    assert pool.llmroute["cost_usd"] > 0  # priced from the registry's price


def test_extra_headers_feed_the_routing_rules(router: Router) -> None:
    completion = router.chat.completions.create(messages=HELLO, extra_headers={"X-Tier": "vip"})
    assert completion.llmroute["layer"] == "rules" and completion.model == "up-large"


def test_openai_parameters_reach_the_upstream_untouched(
    router: Router, upstream: FakeUpstream
) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    router.chat.completions.create(
        model="small",
        messages=HELLO,
        tools=tools,
        seed=7,
        response_format=fmt,
        temperature=0.2,
        extra_body={"top_k": 5},
        extra_headers={"x-ignored": "1"},
        timeout=5,
    )
    body = upstream.requests[-1].body
    assert body["tools"] == tools and body["seed"] == 7 and body["response_format"] == fmt
    assert body["temperature"] == 0.2 and body["top_k"] == 5
    assert body["messages"] == HELLO and body["model"] == "up-small"
    assert "timeout" not in body and "extra_headers" not in body and "stream" not in body


def test_a_previous_reply_message_can_be_sent_back(router: Router) -> None:
    first = router.chat.completions.create(model="small", messages=HELLO)
    history = [*HELLO, first.choices[0].message, {"role": "user", "content": "again"}]
    second = router.chat.completions.create(model="small", messages=history)
    assert second.choices[0].message.content == "echo: again"


def test_falls_back_on_an_upstream_500(router: Router, upstream: FakeUpstream) -> None:
    messages = [{"role": "user", "content": "tell me about volcanoes"}]
    completion = router.chat.completions.create(messages=messages)
    assert completion.model == "up-small"
    info = completion.llmroute
    assert info["route"] == "flaky" and info["model"] == "small"
    assert len(info["attempts"]) == 1 and "broken" in info["attempts"][0]
    assert FAIL_500 in upstream.models_called()


def test_errors_are_the_library_s(router: Router) -> None:
    with pytest.raises(UpstreamRejected) as rejected:
        router.chat.completions.create(model="picky", messages=HELLO)
    assert rejected.value.status == 400
    with pytest.raises(ModelNotFound) as unknown:
        router.chat.completions.create(model="gpt-nope", messages=HELLO)
    # the gateway's 404 names the field as OpenAI does; the SDK's said "messages"
    assert (unknown.value.param, unknown.value.code) == ("model", "model_not_found")
    with pytest.raises(RoutingError):
        router.chat.completions.create(messages=[])
    broken = [{"role": "user", "content": "bytes read with surrogateescape: \udcff"}]
    with pytest.raises(RoutingError, match="not valid Unicode"):
        router.chat.completions.create(messages=broken)


def test_sync_stream_yields_chunks_with_the_decision(router: Router) -> None:
    stream = router.chat.completions.create(messages=HELLO, stream=True)
    assert stream.usage is None  # known once the stream has ended
    chunks = list(stream)
    assert _text(chunks).strip() == "echo: hi there!" and stream.usage is not None
    assert stream.usage.cost_usd > 0
    stream = router.chat.completions.create(messages=CODE, stream=True)
    chunks = list(stream)
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert _text(chunks).strip() == "echo: " + CODE[0]["content"]
    assert {c.model for c in chunks} == {"up-large"}
    assert stream.llmroute["route"] == "code" == chunks[0].llmroute["route"]


def test_sync_stream_stops_early_and_closes(router: Router, upstream: FakeUpstream) -> None:
    with router.chat.completions.create(model="small", messages=CODE, stream=True) as stream:
        first = next(stream)
    assert first.choices[0].delta.role == "assistant"
    assert list(stream) == []  # closed: nothing more
    # the loop thread is still serving after an early close
    assert router.chat.completions.create(model="small", messages=HELLO).model == "up-small"


LONG = [{"role": "user", "content": " ".join(f"w{i}" for i in range(30))}]


def _one_route(
    tmp_path: Path, upstream: FakeUpstream, models: str, target: str, fallback: str = ""
) -> Path:
    """A registry of `models` (YAML lines) behind one route to `target`."""
    policy = f", policy: {{fallback: [{fallback}]}}" if fallback else ""
    path = tmp_path / "registry.yaml"
    path.write_text(f"""
encoder: builtin:static
providers:
  fake: {{kind: openai, base_url: "{upstream.url}", timeout_s: 10}}
models:
  {models}
routes:
  - {{name: any, examples: ["hello there"], target: {target}{policy}}}
default: {{target: {target}}}
""")
    return path


def test_a_sync_stream_closed_from_another_thread_ends_the_reading_loop(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """A stop button: one thread reads a slow stream, another closes it. The read in
    flight is cancelled on the SDK's loop (closing a stream while it was being read
    raised RuntimeError, "already running", and left the reader waiting), the reader's
    loop ends as at the stream's end, the upstream stream is cut, and the router serves
    on."""
    slow = f"slow-{tmp_path.name}?gap=0.4"
    path = _one_route(tmp_path, upstream, f'slow: {{provider: fake, model: "{slow}"}}', "slow")
    seen: list[Any] = []
    ended: list[BaseException | None] = []
    with Router.from_yaml(path) as router:
        stream = router.chat.completions.create(messages=LONG, stream=True)

        def read() -> None:
            try:
                for chunk in stream:
                    seen.append(chunk)
                ended.append(None)
            except BaseException as exc:  # what the reader would see
                ended.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        while len(seen) < 2 and reader.is_alive():
            time.sleep(0.02)
        stream.close()  # from this thread, while the reader waits for the next word
        reader.join(5)
        assert not reader.is_alive()
        assert ended == [None] and 2 <= len(seen) < 10
        assert router.chat.completions.create(messages=HELLO).model == slow
    deadline = time.monotonic() + 5  # the upstream hears of it as it writes its next word
    while not any(model == slow for model, _ in upstream.cut) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(model == slow for model, _ in upstream.cut)


def test_a_stream_dropped_unread_gives_its_slot_back(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """A stream the caller drops without reading or closing it (an error before its loop
    began) is ended once collected: its model's one in-flight slot is free for the next
    call, not held for its ten-minute lease, and the upstream stream is closed."""
    capped = f"capped-{tmp_path.name}?gap=0.3"
    models = f'capped: {{provider: fake, model: "{capped}", max_in_flight: 1}}'
    models += "\n  spare: {provider: fake, model: spare}"
    path = _one_route(tmp_path, upstream, models, "capped", fallback="spare")
    with Router.from_yaml(path) as router:
        stream = router.chat.completions.create(messages=LONG, stream=True)
        assert router.chat.completions.create(messages=HELLO).model == "spare"  # held
        del stream
        gc.collect()
        model, deadline = "", time.monotonic() + 5  # ended on the SDK's loop
        while model != capped and time.monotonic() < deadline:
            time.sleep(0.05)
            model = router.chat.completions.create(messages=HELLO).model
    assert model == capped


def test_least_in_flight_counts_an_sdk_stream_until_it_is_closed(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """Two deployments balanced by ``least_in_flight``: a stream the caller is reading
    counts on its deployment until the caller closes it, so the next stream goes to
    the other one, and a closed one frees its deployment for the next (each time the
    one closed, never left counted: counted off at its opening, the pick was random)."""
    one, two = f"one-{tmp_path.name}?gap=0.2", f"two-{tmp_path.name}?gap=0.2"
    models = (
        "pair:\n    model: m\n    balance: least_in_flight\n    deployments:\n"
        f'      - {{provider: fake, model: "{one}"}}\n'
        f'      - {{provider: fake, model: "{two}"}}'
    )
    path = _one_route(tmp_path, upstream, models, "pair")
    with Router.from_yaml(path) as router:

        def opened() -> tuple[Any, str]:
            stream = router.chat.completions.create(messages=LONG, stream=True)
            next(iter(stream))
            return stream, upstream.requests[-1].body["model"]

        streams = [opened(), opened()]
        assert {streams[0][1], streams[1][1]} == {one, two}
        for _ in range(6):  # close the older, open another: it goes where one was closed
            (closed, where), kept = streams
            closed.close()
            streams = [kept, opened()]
            assert streams[1][1] == where
        for stream, _ in streams:
            stream.close()


def _capped_behind_redis(
    upstream: FakeUpstream, tmp_path: Path, namespace: str, url: str = REDIS_URL
) -> Path:
    """One route to a model of one in-flight slot (its fallback: `spare`), its slots in
    Redis, so that closing a stream awaits (the slot's give-back) as it does in service."""
    capped = f"capped-{tmp_path.name}?gap=0.2"
    models = f'capped: {{provider: fake, model: "{capped}", max_in_flight: 1}}'
    models += "\n  spare: {provider: fake, model: spare}"
    path = _one_route(tmp_path, upstream, models, "capped", fallback="spare")
    limits = f"{{url: '{url}', namespace: {namespace}, timeout_s: 2}}"
    path.write_text(path.read_text() + f"dispatch: {{limits: {limits}}}\n")
    return path


def _capped_and_logged(
    upstream: FakeUpstream,
    tmp_path: Path,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    url: str = REDIS_URL,
) -> tuple[Path, str, Path]:
    """`_capped_behind_redis`'s registry, the capped model's upstream name, and the
    SQLite decision log the SDK's routers write (set by the environment)."""
    db = tmp_path / "log.db"
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", f"sqlite:///{db}")
    path = _capped_behind_redis(upstream, tmp_path, namespace, url)
    return path, f"capped-{tmp_path.name}?gap=0.2", db


def _logged(db: Path, where: str = "") -> list[tuple[int, str | None]]:
    """(status, error) of the decisions the routers wrote to `db` (`where`: a filter)."""
    store = sqlite3.connect(db)
    try:
        return store.execute(f"SELECT status, error FROM decisions {where}").fetchall()
    finally:
        store.close()


def _streams_logged(db: Path) -> list[tuple[int, str | None]]:
    return _logged(db, "WHERE stream = 1")


def test_a_sync_stream_its_reader_left_unclosed_is_ended_and_recorded(
    upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    redis_namespace: str,
) -> None:
    """A reader's loop body raises with no `with` around the stream, and the stream is
    dropped after a read: it is closed on the SDK's loop in order (its slot given back,
    its end recorded as the caller leaving). Left to the collector, every generator of
    the chain was closed by its own finaliser at once: "aclose(): asynchronous generator
    is already running" ("Task exception was never retrieved"), and no record."""
    path, capped, db = _capped_and_logged(upstream, tmp_path, redis_namespace, monkeypatch)
    with Router.from_yaml(path) as router:
        stream = router.chat.completions.create(messages=LONG, stream=True)
        try:
            for _ in stream:
                raise LookupError("the reader's own bug")
        except LookupError:
            pass
        del stream
        gc.collect()
        model, deadline = "", time.monotonic() + 5
        while model != capped and time.monotonic() < deadline:
            time.sleep(0.05)
            model = router.chat.completions.create(messages=HELLO).model
    assert model == capped
    assert "already running" not in caplog.text and "never retrieved" not in caplog.text
    assert _streams_logged(db) == [(200, "client_disconnected")]


def test_an_async_stream_left_mid_read_and_dropped_is_ended_and_recorded(
    upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    redis_namespace: str,
) -> None:
    """``async for ...: break`` with no ``async with``, the stream then dropped: closed
    in order on its loop as it is freed, as the synchronous one is."""
    path, capped, db = _capped_and_logged(upstream, tmp_path, redis_namespace, monkeypatch)

    async def main() -> str:
        router = Router.from_yaml(path)
        try:
            stream = await router.chat.completions.acreate(messages=LONG, stream=True)
            async for _ in stream:
                break
            del stream
            gc.collect()
            model, deadline = "", time.monotonic() + 5
            while model != capped and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                model = (await router.chat.completions.acreate(messages=HELLO)).model
            return model
        finally:
            await router.aclose()

    assert asyncio.run(main()) == capped
    assert "already running" not in caplog.text and "never retrieved" not in caplog.text
    assert _streams_logged(db) == [(200, "client_disconnected")]


@pytest.mark.parametrize("redis_paused", [False, True], ids=["redis", "redis-paused"])
def test_closing_the_router_ends_a_stream_another_thread_reads(
    upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    redis_namespace: str,
    redis_paused: bool,
    paused_redis: str,
) -> None:
    """`router.close()` while a worker reads a stream: the read in flight is cancelled as
    the SDK's loop stops, so the worker's loop ends with `RouterClosed` (it ended as if
    the answer were whole), the slot is given back and the end recorded. The loop
    stopped with the read pending: the worker waited for ever, the slot stayed held for
    its lease, and its generators were closed under the read ("already running").
    With Redis pausing writes as the router closes, the close waits for the slot's
    give-back."""
    path, capped, db = _capped_and_logged(
        upstream, tmp_path, redis_namespace, monkeypatch, paused_redis
    )
    ended: list[str] = []
    router = Router.from_yaml(path)
    stream = router.chat.completions.create(messages=LONG, stream=True)

    def read() -> None:
        try:
            for _ in stream:
                pass
            ended.append("ended")
        except BaseException as exc:  # what the worker would see
            ended.append(repr(exc))

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.3)
    if redis_paused:
        with redis.Redis.from_url(paused_redis) as admin:
            admin.execute_command("CLIENT", "PAUSE", 300, "WRITE")
    router.close()
    reader.join(5)
    assert not reader.is_alive() and ended == [repr(RouterClosed(CUT_SHORT))]
    with router:  # usable again: the slot was given back
        assert router.chat.completions.create(messages=HELLO).model == capped
    assert "already running" not in caplog.text
    assert _streams_logged(db) == [(200, "client_disconnected")]


def test_closing_the_router_ends_a_stream_left_between_reads(
    upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    redis_namespace: str,
) -> None:
    """A stream read in part and still held (not read, not closed) as the router closes
    is closed in order before the loop's generators are: ``shutdown_asyncgens`` closes
    them all at once, and the one its outer one was closing raised "already running".
    Its next read raises `RouterClosed`, naming its decision: it ended as if complete."""
    path, capped, db = _capped_and_logged(upstream, tmp_path, redis_namespace, monkeypatch)
    router = Router.from_yaml(path)
    stream = router.chat.completions.create(messages=LONG, stream=True)
    next(stream)
    router.close()
    assert "already running" not in caplog.text
    with pytest.raises(RouterClosed, match="cut short") as cut:
        next(stream)  # ended with the router's loop, before its end
    assert cut.value.decision_id == stream.llmroute["decision_id"]
    with pytest.raises(RouterClosed):
        next(stream)  # as often as it is read
    stream.close()
    with router:
        assert router.chat.completions.create(messages=HELLO).model == capped
    assert _streams_logged(db) == [(200, "client_disconnected")]


def test_a_stream_that_falls_back_after_its_opening_names_the_model_that_answered(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """Handed over at its opening (``stream_hold_s: 0``), the first model's stream fails
    before its first words and goes on from the fallback within the stream
    (dispatch.md#streams): its chunks and ``stream.llmroute`` then name the fallback,
    the provider it came from and the failure, as a completion that fell back does."""
    registry = tmp_path / "registry.yaml"
    registry.write_text(f"""
encoder: builtin:static
providers:
  fake: {{kind: openai, base_url: "{upstream.url}", timeout_s: 10}}
  spare: {{kind: openai, base_url: "{upstream.url}", timeout_s: 10}}
models:
  quitter: {{provider: fake, model: "quits?early=1"}}
  small: {{provider: spare, model: up-small}}
routes:
  - {{name: any, examples: ["hello there"], target: quitter, policy: {{fallback: [small]}}}}
default: {{target: quitter}}
dispatch: {{stream_hold_s: 0, retries: {{attempts: 0}}}}
""")
    with Router.from_yaml(registry) as router:
        stream = router.chat.completions.create(messages=HELLO, stream=True)
        assert stream.llmroute["model"] == "quitter"  # handed over at its opening
        chunks = list(stream)
    assert _text(chunks).strip() == "echo: hi there!"
    assert chunks[-1].model == "up-small"
    for info in (stream.llmroute, chunks[-1].llmroute):
        assert (info["model"], info["provider"]) == ("small", "spare")
        (failed,) = info["attempts"]
        assert failed.startswith("quitter via fake")


def test_a_stream_that_goes_on_on_another_deployment_names_the_one_that_answered(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """Handed over silent (``stream_hold_s``), the stream of one deployment answers 503
    before its first event and goes on on the model's other deployment (dispatch.md#
    streams): the model is the same, but its chunks' and ``stream.llmroute``'s provider
    is the deployment that answered."""
    registry = tmp_path / "registry.yaml"
    registry.write_text(f"""
encoder: builtin:static
providers:
  fake: {{kind: openai, base_url: "{upstream.url}", timeout_s: 10}}
  spare: {{kind: openai, base_url: "{upstream.url}", timeout_s: 10}}
models:
  flaky:
    model: up-small
    balance: sticky  # the same order for the same prompt: fake first
    deployments:
      - {{provider: fake, model: "up-small?delay=0.4&status=503", weight: 1000}}
      - {{provider: spare, weight: 1}}
routes:
  - {{name: any, examples: ["hello there"], target: flaky}}
default: {{target: flaky}}
dispatch: {{stream_hold_s: 0.05, retries: {{attempts: 0}}}}
""")
    with Router.from_yaml(registry) as router:
        stream = router.chat.completions.create(messages=HELLO, stream=True)
        assert stream.llmroute["provider"] == "fake"  # handed over before its 503
        chunks = list(stream)
    assert _text(chunks).strip() == "echo: hi there!"
    for info in (stream.llmroute, chunks[-1].llmroute):
        assert (info["model"], info["provider"], info["attempts"]) == ("flaky", "spare", [])


def test_a_stream_broken_midway_raises_provider_error(router: Router) -> None:
    stream = router.chat.completions.create(model="halfway", messages=HELLO, stream=True)
    with pytest.raises(ProviderError):
        list(stream)


def test_a_stream_broken_after_its_done_is_read_whole(
    router: Router, caplog: pytest.LogCaptureFixture
) -> None:
    """An upstream whose connection is cut once its ``[DONE]`` was read: the caller reads
    the whole answer and no error, as the gateway's client does, the break a warning.
    It raised `ProviderError` after the last chunk, an answer read whole taken for a
    failed one (a caller would pay for it again)."""
    stream = router.chat.completions.create(model="reset-after", messages=HELLO, stream=True)
    chunks = list(stream)
    assert _text(chunks).strip() == "echo: hi there!"
    assert chunks[-1].choices[0].finish_reason == "stop"
    said = [r for r in caplog.records if "broke off after its end" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING


def test_a_stream_whose_upstream_holds_its_body_open_after_its_done_ends_there(
    registry: Path, upstream: FakeUpstream
) -> None:
    """An upstream that sends its whole answer and ``[DONE]``, then keeps its body open
    (a proxy's keep-alive bug): the caller's stream ends (the body read on for a moment,
    `END_DRAIN_S`), the upstream's connection closed. It was read on until the upstream
    let go or its read timed out (here 120 s)."""

    async def main() -> list[Any]:
        router = Router.from_yaml(registry)
        try:
            stream = await router.chat.completions.acreate(
                model="open-after", messages=HELLO, stream=True
            )
            return [chunk async for chunk in stream]
        finally:
            await router.aclose()

    chunks = asyncio.run(asyncio.wait_for(main(), 30))  # far less than the upstream holds
    assert _text(chunks).strip() == "echo: hi there!"
    assert chunks[-1].choices[0].finish_reason == "stop"
    wait_for("the upstream released", lambda: "whole?after=open" in upstream.released, 10)


def test_async_create_and_stream(registry: Path) -> None:
    async def main() -> tuple[Any, list[Any], dict[str, Any]]:
        router = Router.from_yaml(registry)
        try:
            completion = await router.chat.completions.acreate(messages=CODE)
            stream = await router.chat.completions.acreate(messages=HELLO, stream=True)
            chunks = [chunk async for chunk in stream]
            async with await router.chat.completions.acreate(messages=HELLO, stream=True) as early:
                await anext(early)
            return completion, chunks, stream.llmroute
        finally:
            await router.aclose()

    completion, chunks, info = asyncio.run(main())
    assert isinstance(completion, ChatCompletion) and completion.model == "up-large"
    assert completion.llmroute["route"] == "code"
    assert _text(chunks).strip() == "echo: hi there!" and info["route"] == "chitchat"
    assert not _sdk_threads()  # the async path never started the loop thread


def test_async_errors_and_fallback(registry: Path) -> None:
    async def main() -> Any:
        router = Router.from_yaml(registry)
        try:
            with pytest.raises(UpstreamRejected):
                await router.chat.completions.acreate(model="picky", messages=HELLO)
            with pytest.raises(ModelNotFound):
                await router.chat.completions.acreate(model="nope", messages=HELLO, stream=True)
            return await router.chat.completions.acreate(model="flaky", messages=HELLO)
        finally:
            await router.aclose()

    assert asyncio.run(main()).llmroute["model"] == "small"


def test_one_router_serves_several_event_loops(registry: Path) -> None:
    router = Router.from_yaml(registry)

    async def once() -> str:
        completion = await router.chat.completions.acreate(model="small", messages=HELLO)
        return str(completion.model)

    # asyncio.run shuts down each loop; its connections are closed with it
    assert [asyncio.run(once()) for _ in range(2)] == ["up-small", "up-small"]
    router.close()


def test_close_stops_the_loop_thread_and_a_later_call_restarts_it(registry: Path) -> None:
    with Router.from_yaml(registry) as router:
        assert router.chat is router.chat
        router.chat.completions.create(model="small", messages=HELLO)
        assert len(_sdk_threads()) == 1
    assert not _sdk_threads()
    router.chat.completions.create(model="small", messages=HELLO)
    assert len(_sdk_threads()) == 1
    router.close()
    router.close()  # idempotent
    assert not _sdk_threads()


def test_timeout_is_honoured(upstream: FakeUpstream, tmp_path: Path) -> None:
    path = tmp_path / "slow.yaml"
    registry = REGISTRY % {"url": upstream.url, "fail_500": FAIL_500, "fail_400": FAIL_400}
    slow = registry.replace("model: up-small,", "model: 'slow?delay=1',")
    assert slow != registry
    path.write_text(slow)
    with Router.from_yaml(path) as router, pytest.raises(CallTimeout, match=r"0\.2s"):
        router.chat.completions.create(model="small", messages=HELLO, timeout=0.2)


@pytest.mark.parametrize("face", ["sync", "async"])
def test_a_stream_stalled_past_its_timeout_is_recorded_as_a_timeout(
    upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, face: str
) -> None:
    """The call's `timeout` cancelled the chunks' generator, whose end was then taken
    for the caller leaving: the record said ``client_disconnected``, not ``timeout``.
    It raises `CallTimeout`, as a completion past its `timeout` does: a bare
    `ProviderTimeout` could not be told from the registry's."""
    db = tmp_path / "log.db"
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", f"sqlite:///{db}")
    path = tmp_path / "stall.yaml"
    registry = REGISTRY % {"url": upstream.url, "fail_500": FAIL_500, "fail_400": FAIL_400}
    stalled = registry.replace("model: up-small,", "model: 'stall?stall=2',")
    assert stalled != registry
    path.write_text(stalled)
    ask: dict[str, Any] = {"model": "small", "messages": HELLO, "stream": True, "timeout": 0.4}
    read: list[Any] = []

    async def read_async() -> None:
        async with Router.from_yaml(path) as router:
            stream = await router.chat.completions.acreate(**ask)
            async for chunk in stream:
                read.append(chunk)

    with pytest.raises(CallTimeout, match=r"0\.4s"):
        if face == "async":
            asyncio.run(read_async())
        else:
            with Router.from_yaml(path) as router:
                for chunk in router.chat.completions.create(**ask):
                    read.append(chunk)
    assert read  # the first word came
    assert _streams_logged(db) == [(200, "timeout")]


WITHOUT_OPENAI = """
import json, sys
sys.modules["openai"] = None  # as if it were not installed
from llmroute import Router
with Router.from_yaml(sys.argv[1]) as router:
    reply = router.chat.completions.create(messages=[{"role": "user", "content": "hi"}])
    chunks = list(router.chat.completions.create(model="small", messages=[
        {"role": "user", "content": "hi"}], stream=True))
print(json.dumps([reply, chunks]))
"""


NEVER_CLOSED = """
import sys
from llmroute import Router
router = Router.from_yaml(sys.argv[1])  # a service's module global, never closed
router.chat.completions.create(model="small", messages=[{"role": "user", "content": "hi"}])
print("served")
"""


def test_a_router_never_closed_exits_quietly(registry: Path) -> None:
    """As the openai client does: its connections are closed at exit, not reported by
    aiohttp as an "Unclosed client session" on stderr."""
    result = subprocess.run(
        [sys.executable, "-c", NEVER_CLOSED, str(registry)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.strip() == "served", result.stderr
    assert "Unclosed" not in result.stderr, result.stderr


LEFT_OPEN = """
import asyncio, sys
from llmroute import Router
router = Router.from_yaml(sys.argv[1])  # never closed
read, keep = int(sys.argv[2]), sys.argv[3] == "keep"

async def main():
    stream = await router.chat.completions.acreate(
        model="slow", messages=[{"role": "user", "content": "one two three four five"}], stream=True
    )
    left = read
    while left:  # read `left` chunks, then leave the stream open
        await anext(stream)
        left -= 1
    return stream if keep else None

stream = asyncio.run(main())
print("ended" if stream is None or stream.usage is not None else "open")
"""


@pytest.mark.parametrize(("read", "keep"), [(0, "keep"), (1, "keep"), (1, "drop")])
def test_a_stream_left_open_past_asyncio_run_exits_quietly(
    upstream: FakeUpstream, tmp_path: Path, read: int, keep: str
) -> None:
    """A stream still open as ``asyncio.run`` ends (read in part, or not at all) is
    closed in order as the loop's tasks are cancelled, before ``shutdown_asyncgens``
    closes every generator at once: it printed "an error occurred during closing of
    asynchronous generator" and a traceback on stderr, its end unrecorded."""
    path = tmp_path / "registry.yaml"
    path.write_text(
        "encoder: builtin:static\n"
        f"providers: {{fake: {{kind: openai, base_url: '{upstream.url}', timeout_s: 5}}}}\n"
        "models: {slow: {provider: fake, model: 'up-slow?gap=0.05'}}\n"
        "routes: [{name: chat, examples: [hi there], target: slow}]\n"
        "default: {target: slow}\n"
        "telemetry: {enabled: false}\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", LEFT_OPEN, str(path), str(read), keep],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ended", result.stderr
    assert result.stderr == "", result.stderr


def test_without_openai_the_results_are_dicts(registry: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_OPENAI, str(registry)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    reply, chunks = json.loads(result.stdout)
    assert reply["model"] == "up-small" and reply["llmroute"]["route"] == "chitchat"
    assert chunks and all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["llmroute"]["model"] == "small" for c in chunks)


def test_metrics_go_to_the_callers_prometheus_registry(
    registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Router.from_yaml(..., metrics=CollectorRegistry())`: the SDK's calls are counted in
    the caller's registry as the gateway counts its requests, with the decision log off."""
    from prometheus_client import CollectorRegistry, generate_latest

    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", "off")
    prometheus = CollectorRegistry()
    with Router.from_yaml(registry, metrics=prometheus) as router:
        router.chat.completions.create(model="auto", messages=CODE)
        router.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "tell me about volcanoes"}]
        )
    with Router.from_yaml(registry, metrics=prometheus) as second:  # the same registry
        second.chat.completions.create(model="auto", messages=CODE)
    text = generate_latest(prometheus).decode()
    assert 'llmroute_requests_total{model="large",route="code",status="200"} 2.0' in text
    assert 'llmroute_fallbacks_total{route="flaky"} 1.0' in text  # broken -> small
    assert 'llmroute_upstream_attempts_total{deployment="fake",model="broken"' in text
    assert "llmroute_decision_seconds_count" in text

    db = registry.parent / "metrics-and-log.db"  # the decision log on as well
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", f"sqlite:///{db}")
    with Router.from_yaml(registry, metrics=prometheus) as third:
        third.chat.completions.create(model="auto", messages=CODE)
    text = generate_latest(prometheus).decode()
    assert 'llmroute_requests_total{model="large",route="code",status="200"} 3.0' in text
    store = open_store(f"sqlite:///{db}")
    try:
        assert store.count_decisions() == 1
    finally:
        store.close()


def test_a_cancelled_calls_cut_fallback_is_counted_under_the_fallback(
    upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decided model fails at once, its fallback is slow and the caller gives up
    (``wait_for``): the prompt sent to the fallback is its cost, in the metrics under the
    fallback (it was under the decided model, which was paid nothing)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", "off")
    path = tmp_path / "cut.yaml"
    path.write_text(
        f"""
encoder: builtin:static
providers:
  fake: {{kind: openai, base_url: "{upstream.url}", timeout_s: 10}}
models:
  first: {{provider: fake, model: 'first?status=500', price: {{input: 1000, output: 1000}}}}
  second: {{provider: fake, model: 'second?delay=5', price: {{input: 1000, output: 1000}}}}
routes:
  - {{name: r, examples: ["hello"], target: first, policy: {{fallback: [second]}}}}
default: {{target: first}}
dispatch:
  retries: {{attempts: 0}}
  breaker: {{enabled: false}}
"""
    )
    prometheus = CollectorRegistry()
    with Router.from_yaml(path, metrics=prometheus) as router:

        async def give_up() -> None:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(
                    router.chat.completions.acreate(model="r", messages=HELLO), 0.5
                )

        asyncio.run(give_up())
    cost = {
        s.labels["model"]: s.value
        for f in text_string_to_metric_families(generate_latest(prometheus).decode())
        for s in f.samples
        if s.name == "llmroute_cost_usd_total"
    }
    assert set(cost) == {"second"} and cost["second"] > 0, cost


def test_affinity_keeps_a_conversation_on_its_model(upstream: FakeUpstream, tmp_path: Path) -> None:
    path = tmp_path / "affinity.yaml"
    registry = REGISTRY % {"url": upstream.url, "fail_500": FAIL_500, "fail_400": FAIL_400}
    path.write_text(registry + "affinity: {mode: keep}\n")  # large has no price here
    later = [*CODE, {"role": "assistant", "content": "def parse(s): ..."}, *HELLO]
    with Router.from_yaml(path) as router:
        first = router.chat.completions.create(messages=CODE)
        kept = router.chat.completions.create(messages=later)
        chunks = list(router.chat.completions.create(messages=later, stream=True))

        async def in_a_loop() -> Any:
            return await router.chat.completions.acreate(messages=later)

        awaited = asyncio.run(in_a_loop())
    assert first.llmroute["model"] == "large"  # type: ignore[attr-defined]
    info = kept.llmroute  # type: ignore[attr-defined]
    assert (info["route"], info["model"], info["layer"]) == ("chitchat", "large", "affinity")
    assert kept.model == "up-large" and chunks[0].model == "up-large"
    assert awaited.llmroute["model"] == "large"  # another loop, the same process's memory


def test_bad_arguments_are_said_as_such(router: Router) -> None:
    """A string is not a list of messages (it was walked letter by letter), and a timeout
    of no time at all is a mistake, not an upstream's timeout."""
    from llmroute.errors import RoutingError

    with pytest.raises(RoutingError, match="'messages' must be a list"):
        router.chat.completions.create(messages="hi")  # type: ignore[arg-type]
    for bad in (-1, 0, float("nan")):
        with pytest.raises(ValueError, match="more than 0 seconds"):
            router.chat.completions.create(messages=HELLO, timeout=bad)
    with pytest.raises(TypeError, match="number of seconds"):
        router.chat.completions.create(messages=HELLO, timeout="1")  # type: ignore[arg-type]
    for name in ("extra_body", "extra_headers"):
        # a bare TypeError from dict.update, naming neither the argument nor the cause
        with pytest.raises(TypeError, match=f"^{name} must be a mapping .*, not list$"):
            router.chat.completions.create(messages=HELLO, **{name: [1]})


@pytest.mark.parametrize("value", [None, 1])
def test_a_header_value_that_is_no_string_is_named(router: Router, value: Any) -> None:
    """openai's client (httpx) refuses a header value that is no string; the SDK sent
    ``str(value)``: ``x-llmroute-session: None`` put every caller without an id in one
    conversation (affinity), and a rule could match the text "None"."""
    with pytest.raises(TypeError, match=r"^extra_headers\['x-llmroute-session'\] must be a "):
        router.chat.completions.create(messages=HELLO, extra_headers={"x-llmroute-session": value})


def test_a_header_value_omitted_leaves_the_header_out(router: Router) -> None:
    """openai's ``omit`` as a header value leaves the header out, as the client does
    (its text was sent, here a malformed ``x-llmroute-tags``: RoutingError)."""
    headers = {"x-llmroute-tags": openai.omit, "X-Tier": openai.omit, "x-other": b"bytes"}
    completion = router.chat.completions.create(messages=HELLO, extra_headers=headers)
    assert completion.llmroute["route"] == "chitchat"  # type: ignore[attr-defined]


@pytest.mark.parametrize("left_out", [openai.NOT_GIVEN, openai.omit])
def test_a_model_left_out_with_openais_sentinels_is_routed(router: Router, left_out: Any) -> None:
    """A wrapper forwarding ``model=NOT_GIVEN`` got ModelNotAString, though the other
    left-out params are dropped and the gateway routes a body without a model."""
    completion = router.chat.completions.create(model=left_out, messages=CODE)
    assert completion.llmroute["route"] == "code"  # type: ignore[attr-defined]
    assert completion.llmroute["layer"] == "intent"  # type: ignore[attr-defined]


LEARNED = """
encoder: builtin:static
providers:
  p: {kind: echo}
models:
  small: {provider: p, model: s}
  large: {provider: p, model: l}
routes:
  - name: code
    examples: [debug this SQL query, write a function]
    target: small
    cascade: {tiers: [small, large], gates: [{kind: learned, artifact: %s, threshold: 0}]}
default: {target: small}
reasoning: {scorer: null}
telemetry: {enabled: false}
"""


def test_a_missing_learned_gate_fails_at_load_as_in_serve(tmp_path: Path) -> None:
    """The SDK loaded learned gates on first use: a missing artifact loaded fine, then
    every request on the tier logged a warning and escalated, where `serve` refused it."""
    path = tmp_path / "registry.yaml"
    path.write_text(LEARNED % "gates/missing")
    with pytest.raises(ConfigError, match="no such learned gate") as info:
        Router.from_yaml(path)
    # the registry's line and field that name it (it named the folder alone), and the folder
    assert info.value.file == str(path) and info.value.line is not None
    assert info.value.field == "routes[0].cascade.gates[0].artifact"
    assert str(tmp_path / "gates/missing") in info.value.message


def test_the_sdk_gates_with_the_learned_models_loaded_at_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(LEARNED % "builtin")
    with Router.from_yaml(path) as router:
        assert router.gate_factory() is router.gate_factory()  # the one loaded
        served = router.chat.completions.create(model="code", messages=CODE)
    assert served.llmroute["model"] == "small"  # type: ignore[attr-defined]
    assert "could not be loaded" not in caplog.text


IMPORTED_BY = """
import asyncio, sys, threading
from llmroute import Router

importers = []

def audit(event, args):
    if event == "import" and args[0] == "openai.types.chat":
        importers.append(threading.current_thread().name)

sys.addaudithook(audit)
hello = [{"role": "user", "content": "hi there!"}]
with Router.from_yaml(sys.argv[1]) as router:
    if sys.argv[2] == "create":
        router.chat.completions.create(messages=hello)
    elif sys.argv[2] == "stream":
        list(router.chat.completions.create(messages=hello, stream=True))
    else:
        async def main():
            threading.current_thread().name = "caller-loop"
            await router.chat.completions.acreate(messages=hello)
            await router.aclose()
        asyncio.run(main())
print(",".join(importers))
"""


@pytest.mark.parametrize("how", ["create", "stream", "acreate"])
def test_openais_types_are_not_imported_on_an_event_loop(registry: Path, how: str) -> None:
    """Importing ``openai.types.chat`` takes a second or more: it was done by the first
    answer's conversion on the event loop (the router's loop thread, which every
    thread's calls share, or the caller's own loop), stalling every call on it."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORTED_BY, str(registry), how],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "LLMROUTE_TELEMETRY_URL": "off"},
    )
    assert result.returncode == 0, result.stderr
    importers = result.stdout.strip().split(",")
    assert SDK_THREAD not in importers and "caller-loop" not in importers, importers


def test_a_cascades_tiers_spend_under_their_own_models_in_the_metrics(
    upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the gateway's: the tier passed over (3 + 3 tokens) was counted under the
    model that served, completions and streams alike."""
    from urllib.parse import quote

    from prometheus_client import CollectorRegistry, generate_latest

    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", "off")
    refusal = quote("I'm sorry, but I can't help with that.")
    path = tmp_path / "cascade.yaml"
    path.write_text(
        f"""
encoder: builtin:static
providers:
  fake: {{kind: openai, base_url: "{upstream.url}", timeout_s: 5}}
models:
  small: {{provider: fake, model: 'small?reply={refusal}'}}
  large: {{provider: fake, model: large}}
routes:
  - {{name: tricky, examples: ["solve this puzzle"], target: small, cascade: [small, large]}}
default: {{target: large}}
dispatch:
  retries: {{attempts: 0}}
"""
    )
    prometheus = CollectorRegistry()
    asked = [{"role": "user", "content": "solve this puzzle"}]
    with Router.from_yaml(path, metrics=prometheus) as router:
        router.chat.completions.create(model="tricky", messages=asked)
        for _ in router.chat.completions.create(model="tricky", messages=asked, stream=True):
            pass
    text = generate_latest(prometheus).decode()
    for model in ("small", "large"):
        for direction in ("in", "out"):
            line = f'llmroute_tokens_total{{direction="{direction}",model="{model}"}} 6.0'
            assert line in text, text
