"""Stopping `llmroute serve` (SIGTERM, as Kubernetes and systemd stop it) while a long
stream and a slow answer are in flight: they get ``--graceful-timeout`` seconds, are then
cancelled, and their decisions are in the log (``server_shutdown``, charged what they
cost), which the process flushes before it exits; with one process and two workers."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_upstream import fake_upstream
from gateway_proc import serve_text, wait_for
from redis_service import REDIS_URL

from llmroute.state.limits import SETTLED_KEPT_S
from llmroute.telemetry.store import open_store

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 120}
models:
  slow:
    provider: fake
    model: "slow?gap=0.2"
    price: {input: 1, output: 1}
    budget: {usd: 1000, period: day}  # charged in Redis: the log waits for that
  hung: {provider: fake, model: "hung?delay=60", price: {input: 1, output: 1}}
  embed: {provider: fake, model: "emb?delay=60", kind: embedding, price: {input: 1}}
routes:
  - {name: chat, examples: [hello there], target: slow}
default: {target: slow}
dispatch:
  limits: {url: "%(redis)s", namespace: "%(namespace)s"}
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_cuts_a_long_stream_after_the_grace_and_logs_it(
    tmp_path: Path, workers: int, redis_namespace: str
) -> None:
    store_url = f"sqlite:///{tmp_path / 'log.db'}"
    words = " ".join(f"w{i}" for i in range(300))  # 60 s of stream at 0.2 s a word
    body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": words}]}
    lines: list[str] = []
    args = ["--graceful-timeout", "1", "--workers", str(workers)]
    env = {"LLMROUTE_TELEMETRY_URL": store_url}
    with fake_upstream() as upstream:
        text = REGISTRY % {"url": upstream.url, "redis": REDIS_URL, "namespace": redis_namespace}
        with serve_text(text, tmp_path, args, env) as served:

            def read() -> None:
                url = f"{served.url}/v1/chat/completions"
                try:
                    with httpx.stream("POST", url, json=body, timeout=90) as reply:
                        lines.extend(reply.iter_lines())
                except httpx.HTTPError:
                    lines.append("cut")

            answers: list[httpx.Response] = []

            def ask(path: str, asked: dict[str, Any]) -> None:
                with contextlib.suppress(httpx.HTTPError):
                    answers.append(httpx.post(f"{served.url}{path}", json=asked, timeout=90))

            reader = threading.Thread(target=read)
            reader.start()
            hung = {**body, "model": "hung", "stream": False}
            asker = threading.Thread(target=ask, args=("/v1/chat/completions", hung))
            asker.start()
            embedding = {"model": "embed", "input": words}
            embedder = threading.Thread(target=ask, args=("/v1/embeddings", embedding))
            embedder.start()
            wait_for("the stream's first words", lambda: len(lines) >= 3, 20)
            wait_for("the slow call upstream", lambda: upstream.counts["hung?delay=60"], 20)
            wait_for("the embeddings call upstream", lambda: upstream.counts["emb?delay=60"], 20)
            sent = time.monotonic()
            served.proc.send_signal(signal.SIGTERM)
            # a new connection is refused at once (another replica is tried), not left
            # queued unaccepted for the drain (the supervisor of workers held the socket)
            refused = None
            for _ in range(50):  # bounded: 5 s
                try:
                    httpx.get(f"{served.url}/health", timeout=0.5)
                except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
                    # refused, or reset: a connection the closing socket had queued
                    refused = time.monotonic() - sent
                    break
                except httpx.TimeoutException:
                    break
                time.sleep(0.1)
            served.proc.wait(timeout=30)
            stopped_s = time.monotonic() - sent
            reader.join(timeout=30)
            asker.join(timeout=30)
            embedder.join(timeout=30)
    assert stopped_s < 15, f"took {stopped_s:.1f} s to stop: {served.log_text()[-2000:]}"
    assert refused is not None, "a new connection during the drain was not refused"
    # cut before its answer started: OpenAI's error JSON, as it is logged (was a
    # plain-text 500 from uvicorn)
    assert len(answers) == 2  # the chat's and the embeddings'
    for cut_answer in answers:
        assert cut_answer.status_code == 503 and cut_answer.headers["retry-after"] == "1"
        assert cut_answer.json()["error"]["code"] == "server_shutdown"
    assert "data: [DONE]" not in lines  # cut, not finished
    store = open_store(store_url)
    try:
        rows = {row.model: row for row in store.decisions(0)}
    finally:
        store.close()
    cut = rows["slow"]
    assert cut.stream and cut.served_model == "slow" and cut.status == 200
    assert cut.error == "server_shutdown"  # not a client that hung up
    assert cut.tokens_out and cut.tokens_out < 300  # charged what it had streamed
    waiting = rows["hung"]
    assert (waiting.status, waiting.error, waiting.served_model) == (503, "server_shutdown", None)
    assert waiting.tokens_in and waiting.usage_estimated  # its prompt, sent: charged
    # an embeddings call is cut as a chat's is: logged, charged its input (the upstream
    # had it)
    embedded = rows["embed"]
    assert (embedded.api, embedded.status, embedded.error) == ("embeddings", 503, "server_shutdown")
    assert embedded.tokens_in and embedded.usage_estimated and embedded.cost_usd
    # the cut requests are said once each, a WARNING, not an ERROR with a traceback
    log = served.log_text()
    assert "Exception in ASGI application" not in log and "Traceback" not in log, log[-3000:]
    assert "ERROR" not in log, log[-3000:]
    assert "graceful timeout ended was cut" in log


@pytest.mark.parametrize(
    ("path", "shape"),
    [("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic")],
)
def test_a_request_cut_before_its_answer_gets_its_apis_error_shape(path: str, shape: str) -> None:
    """An Anthropic client of /v1/messages got OpenAI's error JSON when the graceful
    timeout cut its request."""
    import json

    from llmroute.server import shutdown

    async def slow(scope: object, receive: object, send: object) -> None:
        await asyncio.sleep(30)

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    async def go() -> None:
        app = shutdown.AnswerCutRequests(slow)  # type: ignore[arg-type]
        task = asyncio.create_task(app({"type": "http", "path": path}, receive, send))
        await asyncio.sleep(0.05)
        shutdown._STOPPING.set()
        try:
            task.cancel()
            await task  # answered, not cancelled
        finally:
            shutdown._STOPPING.clear()

    asyncio.run(go())
    start, body = sent
    assert start["status"] == 503
    error = json.loads(body["body"])  # type: ignore[arg-type]
    if shape == "anthropic":
        assert error["type"] == "error" and error["error"]["type"] == "overloaded_error"
    else:
        assert error["error"]["code"] == "server_shutdown"


HELD = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 120}
models:
  slow:
    provider: fake
    model: "slow?gap=0.2"
    price: {input: 1, output: 1}
    max_output_tokens: 1000
    max_in_flight: 4
    budget: {usd: 1000, period: day, hard: true}
routes:
  - {name: chat, examples: [hello there], target: slow}
default: {target: slow}
dispatch:
  limits: {url: "%(redis)s", namespace: "%(namespace)s"}
"""


def test_a_second_ctrl_c_cuts_the_streams_at_once_and_still_ends_them(
    tmp_path: Path, redis_namespace: str
) -> None:
    """A second Ctrl-C (uvicorn's force quit) skipped the app's shutdown: the streams
    were cancelled only as the event loop closed, after the Redis clients had, so their
    in-flight slots and hard-budget holds stayed held for their leases, their records
    never reached the decision log, and the log had a traceback."""
    import redis

    store_url = f"sqlite:///{tmp_path / 'log.db'}"
    words = " ".join(f"w{i}" for i in range(300))  # 60 s of stream at 0.2 s a word
    body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": words}]}
    lines: list[list[str]] = [[], []]
    args = ["--graceful-timeout", "30"]
    with fake_upstream() as upstream:
        text = HELD % {"url": upstream.url, "redis": REDIS_URL, "namespace": redis_namespace}
        with serve_text(text, tmp_path, args, {"LLMROUTE_TELEMETRY_URL": store_url}) as served:

            def read(into: list[str]) -> None:
                url = f"{served.url}/v1/chat/completions"
                with (
                    contextlib.suppress(httpx.HTTPError),
                    httpx.stream("POST", url, json=body, timeout=60) as reply,
                ):
                    into.extend(reply.iter_lines())

            readers = [threading.Thread(target=read, args=(into,)) for into in lines]
            for reader in readers:
                reader.start()
            wait_for("the streams' first words", lambda: min(map(len, lines)) >= 3, 20)
            sent = time.monotonic()
            served.proc.send_signal(signal.SIGINT)
            time.sleep(0.3)
            served.proc.send_signal(signal.SIGINT)  # not waiting the 30 s out
            served.proc.wait(timeout=20)
            stopped_s = time.monotonic() - sent
            for reader in readers:
                reader.join(timeout=10)
    log = served.log_text()
    assert stopped_s < 10, f"took {stopped_s:.1f} s to stop: {log[-2000:]}"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        held = _held(client, redis_namespace)
    finally:
        client.close()
    # the spend is kept; the slots and holds (and their lapse times) are given back
    assert not held, (held, log[-3000:])
    store = open_store(store_url)
    try:
        rows = store.decisions(0)
    finally:
        store.close()
    assert len(rows) == 2, log[-3000:]
    for row in rows:
        assert (row.status, row.error) == (200, "server_shutdown")
        assert row.tokens_out and row.tokens_out < 300  # charged what it had streamed
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
    assert "Force quit: cut 2 running request(s)" in log


SHADOWED = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 30}
models:
  small: {provider: fake, model: small}
  ref: {provider: fake, model: "ref?delay=0.5"}
routes:
  - {name: chat, examples: [hello there], target: small}
default: {target: small}
shadow: {rate: 1.0, reference: ref}
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_a_shadow_still_running_at_sigterm_is_logged(tmp_path: Path, workers: int) -> None:
    """The decision log was closed before the gateway's shadows were waited for: a
    shadow that ended during the shutdown found the log closed, and its record was lost
    (an ERROR with a traceback said so)."""
    import sqlite3

    store_url = f"sqlite:///{tmp_path / 'log.db'}"
    body = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}]}
    with fake_upstream() as upstream:
        text = SHADOWED % {"url": upstream.url}
        args = ["--workers", str(workers)]
        with serve_text(text, tmp_path, args, {"LLMROUTE_TELEMETRY_URL": store_url}) as served:
            answer = httpx.post(f"{served.url}/v1/chat/completions", json=body, timeout=10)
            served.proc.send_signal(signal.SIGTERM)  # its shadow still waits on `ref`
            served.proc.wait(timeout=20)
    assert answer.status_code == 200
    log = served.log_text()
    with contextlib.closing(sqlite3.connect(tmp_path / "log.db")) as db:
        shadows = db.execute("SELECT reference_model FROM shadow").fetchall()
    assert shadows == [("ref",)], log[-3000:]
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]


GIVEN_BACK = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 30}
models:
  slow:
    provider: fake
    model: "slow?delay=1"
    price: {input: 1, output: 1}
    max_output_tokens: 100
    max_in_flight: 4
    budget: {usd: 1000, period: day, hard: true}
routes:
  - {name: chat, examples: [hello there], target: slow}
default: {target: slow}
dispatch:
  limits: {url: "%(redis)s", namespace: "%(namespace)s"}
telemetry: {enabled: false}
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_give_backs_redis_missed_just_before_sigterm_are_made_at_exit(
    tmp_path: Path, redis_namespace: str, workers: int, paused_redis: str
) -> None:
    """A request whose slot give-back and budget settle Redis did not take (paused for
    a second and a half as the answer came) keeps them to make later; the gateway stopped
    right after closed without trying again (Redis was still taken for down): the
    slot stayed taken for its 10-minute lease, the hold for its 30 minutes, and the
    call's cost was never counted, with nothing in the log."""
    import redis

    body = {"model": "slow", "messages": [{"role": "user", "content": "hello there"}]}
    client = redis.Redis.from_url(paused_redis)
    try:
        with fake_upstream() as upstream:
            values = {"url": upstream.url, "redis": paused_redis, "namespace": redis_namespace}
            args = ["--workers", str(workers)]
            with serve_text(GIVEN_BACK % values, tmp_path, args) as served:
                url = f"{served.url}/v1/chat/completions"
                assert httpx.post(url, json=body, timeout=10).status_code == 200  # connected
                first = _spent(client, redis_namespace)
                answers: list[httpx.Response] = []
                asker = threading.Thread(
                    target=lambda: answers.append(httpx.post(url, json=body, timeout=10))
                )
                asker.start()
                # its slot and hold taken; Redis is paused as its answer comes (after 1 s:
                # the pause covers it however late this thread gets here, up to 1 s)
                wait_for("the call upstream", lambda: upstream.counts["slow?delay=1"] >= 2, 10)
                client.execute_command("CLIENT", "PAUSE", 1500, "WRITE")
                asker.join(timeout=10)
                served.proc.send_signal(signal.SIGTERM)
                served.proc.wait(timeout=20)
        held = _held(client, redis_namespace)
        spent = _spent(client, redis_namespace)
    finally:
        client.close()
    assert [a.status_code for a in answers] == [200]
    log = served.log_text()
    assert not held, (held, log[-3000:])
    assert first > 0 and spent == pytest.approx(2 * first), log[-3000:]  # both counted
    assert "did not take within" not in log, log[-3000:]


def _held(client: Any, namespace: str) -> list[str]:
    """The slots and hard-budget holds still held under `namespace` (a settled hold's
    id stays in `:lapses` as a tombstone that lapses within `SETTLED_KEPT_S`: not held)."""
    soon = time.time() + SETTLED_KEPT_S + 1
    held = []
    for key in sorted(k.decode() for k in client.scan_iter(match=f"{namespace}:*")):
        if key.endswith(":lapses"):
            leases = client.zrangebyscore(key, soon, "+inf")
            held += [f"{key} {lease.decode()}" for lease in leases]
        elif ":inflight:" in key or key.endswith(":holds"):
            held.append(key)
    return held


def _spent(client: Any, namespace: str) -> float:
    """What the model's budget counts as spent today."""
    names = client.scan_iter(match=f"{namespace}:usd:*")
    (budget,) = [k for k in names if not k.decode().endswith((":holds", ":lapses"))]
    return float(client.get(budget) or 0)
