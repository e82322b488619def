"""Stopping `llmroute serve` while every dependency of its shutdown hangs at once: Redis
(behind a proxy that stops answering) holds a give-back, a budget settle and a cache
write, the shadows' reference model never answers, the PostgreSQL decision log's
table is locked, and the OpenTelemetry collector takes the spans' export and never
answers. The shutdown's steps each had their own bound and added up to ~20 s,
past the 10 s after which the supervisor of ``--workers`` kills a worker, so the log's
"not written" WARNING was never said; now they share one deadline, 9 s after the
graceful timeout, and each says what it drops."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fake_upstream import fake_upstream
from gateway_proc import serve_text, wait_for
from redis_service import REDIS_URL
from services import require
from stall_proxy import StallProxy, silent_server, stall_proxy
from telemetry_records import PG_BASE, pg_execute, pg_reachable

from llmroute.server.workers import KILL_MARGIN_S

HUNG = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 120}
models:
  slow:
    provider: fake
    model: "slow?delay=1"
    price: {input: 1, output: 1}
    max_output_tokens: 100
    max_in_flight: 4
    budget: {usd: 1000, period: day, hard: true}
  ref: {provider: fake, model: "ref?delay=60"}
routes:
  - {name: chat, examples: [hello there], target: slow}
default: {target: slow}
shadow: {rate: 1.0, reference: ref}
cache: {url: "%(redis)s", namespace: "%(namespace)s", timeout_s: 20}
dispatch:
  limits: {url: "%(redis)s", namespace: "%(namespace)s"}
"""
GRACE_S = 1


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A schema of this test's own (dropped afterwards), as a decision-log URL."""
    require(pg_reachable())
    schema = f"t_{uuid.uuid4().hex[:12]}"
    pg_execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_BASE}?options=-csearch_path%3D{schema}&application_name={schema}"
    finally:
        pg_execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _decisions(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        try:
            row = conn.execute("SELECT count(*) FROM decisions").fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0]) if row else 0


def test_the_shutdown_ends_within_its_deadline_when_everything_hangs_and_says_what_it_drops(
    tmp_path: Path, redis_namespace: str, postgres_url: str
) -> None:
    """With two workers, so that the supervisor's kill is what the deadline must beat;
    a single process runs the same shutdown (one worker: ~13 s more of the suite)."""
    import psycopg

    def ask(content: str) -> dict[str, object]:
        return {"model": "auto", "messages": [{"role": "user", "content": content}]}

    args = ["--graceful-timeout", str(GRACE_S), "--workers", "2"]
    answers: list[httpx.Response] = []
    with (
        stall_proxy(REDIS_URL) as (redis, redis_url),
        fake_upstream() as upstream,
        silent_server() as collector,
    ):
        env = {
            "LLMROUTE_TELEMETRY_URL": postgres_url,
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector,  # each request's spans, never taken
            "OTEL_EXPORTER_OTLP_TIMEOUT": "60",  # an export waits this long (10 s by default)
        }
        values = {"url": upstream.url, "redis": redis_url, "namespace": redis_namespace}
        with serve_text(HUNG % values, tmp_path, args, env) as served:
            url = f"{served.url}/v1/chat/completions"
            # connected to Redis and to the log; its shadow waits on `ref` from now on
            assert httpx.post(url, json=ask("hello there"), timeout=20).status_code == 200
            wait_for("the first decision logged", lambda: _decisions(postgres_url) == 1, 20)
            with psycopg.connect(postgres_url) as locker:
                locker.execute("LOCK TABLE decisions IN ACCESS EXCLUSIVE MODE")
                asker = threading.Thread(
                    target=lambda: answers.append(
                        httpx.post(url, json=ask("hello there again"), timeout=20)
                    )
                )
                asker.start()
                # its slot and budget hold taken; Redis stops answering before its end:
                # the give-back, the settle and the cache write of its answer hang
                wait_for("the call upstream", lambda: upstream.counts["slow?delay=1"] >= 2, 10)
                redis.stall()
                asker.join(timeout=20)
                sent = time.monotonic()
                served.proc.send_signal(signal.SIGTERM)
                served.proc.wait(timeout=60)
                stopped_s = time.monotonic() - sent
                locker.rollback()
    log = served.log_text()
    assert [a.status_code for a in answers] == [200], log[-3000:]
    # within the graceful timeout and the supervisor's margin (the steps alone took
    # ~20 s); with workers, the supervisor did not have to kill one
    assert stopped_s < GRACE_S + KILL_MARGIN_S + 2, f"{stopped_s:.1f} s: {log[-3000:]}"
    assert "killing it" not in log, log[-3000:]
    # each step cut by the deadline says what it drops
    assert "shadow records are not written" in log, log[-3000:]
    assert "those answers are not stored" in log, log[-3000:]  # the cache write
    assert "did not take within" in log, log[-3000:]  # the give-back and the settle
    assert "1 decision record(s) not written within" in log, log[-3000:]
    assert "span(s) not exported within" in log, log[-3000:]  # beside the log, not after
    assert "Traceback" not in log, log[-3000:]


def test_charges_still_waiting_on_redis_are_cut_at_the_deadline_and_said(
    redis_namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A closing gateway waited for its client keys' charges however long Redis took
    (each as long as ``dispatch.limits.timeout_s``), past the shutdown's deadline."""
    import asyncio
    import logging

    from llmroute.deadline import Deadline
    from llmroute.registry.schema import ApiKey, Budget
    from llmroute.server.auth import Charges
    from llmroute.state import RedisLimits

    key = ApiKey(name="team", sha256="0" * 64, tpm=1_000, budget=Budget(usd=10))

    async def go(url: str, redis: StallProxy) -> int:
        limits = RedisLimits(url, 30.0, redis_namespace)
        charges = Charges(limits)
        try:
            await limits.tokens("apikey:team")  # connected
            redis.stall()
            charges.charge(key, 0.5, 100)  # its spend and its tokens
            charging = set(charges._tasks)
            await charges.aclose(Deadline.within(0.2))
            await asyncio.wait(charging, timeout=5)
            return sum(1 for task in charging if task.cancelled())
        finally:
            redis.resume()
            await limits.aclose(0)

    with stall_proxy(REDIS_URL) as (redis, url), caplog.at_level(logging.WARNING):
        cut = asyncio.run(go(url, redis))
    assert cut == 2  # cancelled, not left running past the close
    said = [r.getMessage() for r in caplog.records if "charge(s) of client keys" in r.getMessage()]
    assert len(said) == 1 and "closing with 2 charge(s)" in said[0], caplog.text


RETIRING = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 120}
models:
  slow: {provider: fake, model: "slow?delay=1", price: {input: 1, output: 1}}
  long:
    provider: fake
    model: "long?gap=0.2"
    price: {input: 1, output: 1}
    max_in_flight: 4
routes:
  - {name: chat, examples: [hello there], target: slow}
default: {target: slow}
%(rest)s
"""


def test_a_version_retiring_as_the_shutdown_cuts_its_last_stream_closes_by_the_deadline(
    tmp_path: Path, redis_namespace: str
) -> None:
    """A reload's old version closes when its last request ends; one cut by the graceful
    timeout ended it as the shutdown began, and the old version then waited its cache
    write on a hung Redis for as long as the write could take (~20 s here), after the
    decision log had closed and past the supervisor's kill."""
    words = " ".join(f"w{i}" for i in range(300))  # 60 s of stream at 0.2 s a word
    streamed = {"model": "long", "stream": True, "messages": [{"role": "user", "content": words}]}
    lines: list[str] = []
    answers: list[httpx.Response] = []
    args = ["--graceful-timeout", str(GRACE_S), "--reload-interval", "0.2"]
    with stall_proxy(REDIS_URL) as (redis, redis_url), fake_upstream() as upstream:
        shared = (
            f'cache: {{url: "{redis_url}", namespace: "{redis_namespace}", timeout_s: 20}}\n'
            f'dispatch:\n  limits: {{url: "{redis_url}", namespace: "{redis_namespace}"}}'
        )
        text = RETIRING % {"url": upstream.url, "rest": shared}
        with serve_text(text, tmp_path, args) as served:
            url = f"{served.url}/v1/chat/completions"

            def read() -> None:
                try:
                    with httpx.stream("POST", url, json=streamed, timeout=90) as reply:
                        lines.extend(reply.iter_lines())
                except httpx.HTTPError:
                    lines.append("cut")

            reader = threading.Thread(target=read)
            reader.start()
            wait_for("the stream's first words", lambda: len(lines) >= 3, 20)
            body = {"model": "slow", "messages": [{"role": "user", "content": "hello there"}]}
            asker = threading.Thread(
                target=lambda: answers.append(httpx.post(url, json=body, timeout=20))
            )
            asker.start()
            # Redis stops answering as the answer comes: its cache write hangs
            wait_for("the call upstream", lambda: upstream.counts["slow?delay=1"] >= 1, 10)
            redis.stall()
            asker.join(timeout=20)
            old = served.version()
            # the next version uses no Redis; the stream keeps the old one open
            (tmp_path / "registry.yaml").write_text(RETIRING % {"url": upstream.url, "rest": ""})
            wait_for("the reload", lambda: served.version() != old, 20, served.log)
            sent = time.monotonic()
            served.proc.send_signal(signal.SIGTERM)
            served.proc.wait(timeout=60)
            stopped_s = time.monotonic() - sent
            reader.join(timeout=30)
    log = served.log_text()
    assert [a.status_code for a in answers] == [200], log[-3000:]
    assert stopped_s < GRACE_S + KILL_MARGIN_S + 2, f"{stopped_s:.1f} s: {log[-3000:]}"
    assert "those answers are not stored" in log, log[-3000:]  # said, not cut by a kill
    assert "Traceback" not in log, log[-3000:]


def test_a_version_whose_last_request_ends_once_the_shutdown_began_closes_by_its_deadline(
    tmp_path: Path,
) -> None:
    """The other order of the test above: the cut stream of the old version ended
    before the shutdown's steps reached the retiring versions, and the reloader's own
    retiring of it closed it with each step's own bound, past the deadline."""
    import asyncio

    from starlette.datastructures import State

    from llmroute.deadline import NEVER, Deadline
    from llmroute.server.reload import Reloader
    from llmroute.server.settings import ServeSettings
    from llmroute.server.state import InFlight

    closed_by: list[Deadline] = []

    class Old:  # a retiring gateway, as `_retire` uses one
        inflight = InFlight()
        version = "old"

        async def aclose(self, by: Deadline = NEVER) -> None:
            closed_by.append(by)

    async def go() -> Deadline:
        reloader = Reloader(State(), str(tmp_path / "registry.yaml"), ServeSettings())
        old = Old()
        reloader._retiring.append(old)  # type: ignore[arg-type]
        closing = Deadline.within(7.0)
        reloader.stopping(closing)
        await reloader._retire(old)  # type: ignore[arg-type]
        return closing

    closing = asyncio.run(go())
    assert closed_by == [closing]


def test_a_version_already_closing_when_the_shutdown_begins_is_cut_at_its_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its last request ended in the graceful timeout, before the shutdown's steps: its
    close began with each step's own bound (a cache write on a hung Redis: 2 x
    ``cache.timeout_s``), and the shutdown waited for it after the decision log had
    closed, past the supervisor's kill."""
    import asyncio
    import logging

    from starlette.datastructures import State

    from llmroute.deadline import NEVER, Deadline
    from llmroute.server.reload import Reloader
    from llmroute.server.settings import ServeSettings
    from llmroute.server.state import InFlight

    class Old:  # a retiring gateway whose close hangs unless given a deadline
        inflight = InFlight()
        version = "old"

        async def aclose(self, by: Deadline = NEVER) -> None:
            await asyncio.sleep(60 if by is NEVER else by.left())

    async def go() -> bool:
        reloader = Reloader(State(), str(tmp_path / "registry.yaml"), ServeSettings())
        old = Old()
        reloader._retiring.append(old)  # type: ignore[arg-type]
        retiring = asyncio.create_task(reloader._retire(old))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)  # closing, with no deadline
        assert not retiring.done()
        reloader.stopping(Deadline.within(0.2))
        done, _ = await asyncio.wait({retiring}, timeout=10)
        retiring.cancel()
        return bool(done)

    with caplog.at_level(logging.WARNING, logger="llmroute.server"):
        ended = asyncio.run(go())
    assert ended  # by the deadline, not the close's own 60 s
    assert "version old, retiring, was still closing at the shutdown's deadline" in caplog.text


def test_a_retired_decision_log_already_closing_when_the_shutdown_begins_is_cut_at_its_deadline(
    tmp_path: Path, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A reload that changed the decision log's settings retires the old log with the
    old version, closed after it. Its close began before the shutdown's steps (the old
    version's last request ended in the graceful timeout; its store hung: a locked
    table) with its own 10 s, which the shutdown waited out after the current log had
    closed: up to the supervisor's kill, 10 s after the graceful timeout. Now it is cut
    at the deadline less the log's 2 s, and says what it did not write."""
    import asyncio
    import logging

    import psycopg
    from starlette.datastructures import State
    from telemetry_records import build_record

    from llmroute.deadline import NEVER, Deadline
    from llmroute.registry.schema import TelemetrySettings
    from llmroute.server.reload import Reloader
    from llmroute.server.settings import ServeSettings
    from llmroute.server.state import InFlight
    from llmroute.telemetry.metrics import GatewayMetrics
    from llmroute.telemetry.service import Telemetry

    class Old:  # a retiring gateway, closed at once: its log is what hangs
        inflight = InFlight()
        version = "old"

        async def aclose(self, by: Deadline = NEVER) -> None:
            pass

    settings = TelemetrySettings(url=postgres_url, flush_seconds=0.02)
    retired = Telemetry.open(settings, GatewayMetrics(), environ={})
    writer = retired.writer
    assert writer is not None
    writer.offer(build_record(0))
    assert writer.flush(10) and writer.written == 1  # migrated

    async def go() -> bool:
        reloader = Reloader(State(), str(tmp_path / "registry.yaml"), ServeSettings())
        old = Old()
        reloader._retiring.append(old)  # type: ignore[arg-type]
        reloader._retiring_logs[old] = retired  # type: ignore[index]
        writer.offer(build_record(1))  # held by the lock
        retiring = asyncio.create_task(reloader._retire(old))  # type: ignore[arg-type]
        await asyncio.sleep(0.1)  # the log closing, with its 10 s
        assert not retiring.done()
        reloader.stopping(Deadline.within(0.2))
        done, _ = await asyncio.wait({retiring}, timeout=8)
        return bool(done)

    try:
        with psycopg.connect(postgres_url) as locker:
            locker.execute("LOCK TABLE decisions IN ACCESS EXCLUSIVE MODE")
            with caplog.at_level(logging.WARNING, logger="llmroute.telemetry"):
                ended = asyncio.run(go())
            locker.rollback()
    finally:
        writer.close(timeout=10)  # the lock gone, the thread writes it and ends
    assert ended  # by the deadline, not the log's own 10 s
    said = [r.getMessage() for r in caplog.records if "not written within" in r.getMessage()]
    assert len(said) == 1 and "1 decision record(s)" in said[0], caplog.text
