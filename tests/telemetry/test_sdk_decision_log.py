"""The SDK's decision log: ``router.chat.completions`` calls (sync, async, streamed,
failed) are written to the same store as gateway requests, read back from a real SQLite
file and a real PostgreSQL schema. Upstream: the fake OpenAI server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_upstream import FAIL_500, FakeUpstream, fake_upstream
from gateway_proc import wait_for

from llmroute import Router
from llmroute.errors import ProviderError, RoutingError
from llmroute.telemetry.record import LoggedDecision
from llmroute.telemetry.store import open_store

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small, price: {input: 1.0, output: 2.0}}
  large: {provider: fake, model: up-large}
  broken: {provider: fake, model: %(fail_500)s}
  halfway: {provider: fake, model: fail-mid}
  hung: {provider: fake, model: "hung?delay=4", price: {input: 5.0, output: 15.0}}
routes:
  - name: code
    examples: ["write a Python function to parse JSON", "debug this SQL query"]
    target: large
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: small
default: {target: small}
dispatch:
  retries: {attempts: 1, backoff_s: 0.01, max_backoff_s: 0.02}
  breaker: {enabled: false}
telemetry:
  prompts: full
%(telemetry)s
"""

CODE = [{"role": "user", "content": "write a Python function to parse JSON"}]
HELLO = [{"role": "user", "content": "hi there!"}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as server:
        yield server


def _registry(tmp_path: Path, upstream: FakeUpstream, telemetry: str = "") -> Path:
    path = tmp_path / "registry.yaml"
    path.write_text(REGISTRY % {"url": upstream.url, "fail_500": FAIL_500, "telemetry": telemetry})
    return path


def _logged(url: str) -> list[LoggedDecision]:
    store = open_store(url)
    try:
        return sorted(store.decisions(0.0), key=lambda d: d.ts)
    finally:
        store.close()


def _exercise(router: Router) -> list[str]:
    """One call of each kind; the decision ids of the five that answered, in order."""
    ids = []
    done = router.chat.completions.create(
        messages=CODE, user="user-1", extra_headers={"X-LLMRoute-Tags": "team:search,app=sdk"}
    )
    ids.append(done.llmroute["decision_id"])
    with pytest.raises(RoutingError, match=r"x-llmroute-tags: .*letters, digits"):
        router.chat.completions.create(messages=CODE, extra_headers={"x-llmroute-tags": "a b"})
    with router.chat.completions.create(messages=HELLO, stream=True) as stream:
        chunks = list(stream)
    assert chunks
    ids.append(stream.llmroute["decision_id"])
    cut = router.chat.completions.create(messages=HELLO, model="halfway", stream=True)
    with cut, pytest.raises(ProviderError):
        list(cut)
    ids.append(cut.llmroute["decision_id"])
    with router.chat.completions.create(messages=CODE, stream=True) as early:
        next(iter(early))
    ids.append(early.llmroute["decision_id"])
    with pytest.raises(ProviderError):
        router.chat.completions.create(messages=HELLO, model="broken")

    async def acreate() -> str:
        reply = await router.chat.completions.acreate(messages=HELLO)
        return str(reply.llmroute["decision_id"])

    ids.append(asyncio.run(acreate()))
    return ids


def _check(rows: list[LoggedDecision], ids: list[str]) -> None:
    assert len(rows) == 6
    by_id = {row.id: row for row in rows}
    assert set(ids) <= set(by_id)

    plain = by_id[ids[0]]
    assert (plain.route, plain.model, plain.served_model, plain.layer) == (
        "code",
        "large",
        "large",
        "intent",
    )
    assert plain.status == 200 and plain.error is None and not plain.stream
    assert plain.tokens_in and plain.tokens_out and plain.latency_ms > 0
    assert plain.prompt == "write a Python function to parse JSON"
    assert plain.margin is not None
    assert (plain.end_user, plain.tags) == ("user-1", ("team:search", "app=sdk"))
    assert all(row.tags == () for row in rows if row.id != plain.id)
    assert [layer["layer"] for layer in plain.signals["layers"]][-1] == "intent"

    streamed = by_id[ids[1]]
    assert (streamed.route, streamed.stream, streamed.error) == ("chitchat", True, None)
    assert streamed.ttft_ms is not None and streamed.ttft_ms <= streamed.latency_ms
    assert streamed.cost_usd is not None  # small has a price

    assert by_id[ids[2]].error == "stream_interrupted"
    assert by_id[ids[3]].error == "client_disconnected"

    failed = [row for row in rows if row.status >= 500]
    assert len(failed) == 1 and failed[0].error == "upstream_error"
    assert failed[0].model == "broken" and failed[0].attempts

    assert by_id[ids[4]].status == 200 and by_id[ids[4]].route == "chitchat"


def test_sdk_calls_are_logged_to_sqlite(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'sdk.db'}"
    monkeypatch.delenv("LLMROUTE_TELEMETRY_URL")
    registry = _registry(tmp_path, upstream, f"  url: {url}")
    with Router.from_yaml(registry) as router:
        ids = _exercise(router)
    _check(_logged(url), ids)  # close() flushed the writer


def test_sdk_calls_are_logged_to_postgresql(
    tmp_path: Path, upstream: FakeUpstream, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the environment variable wins over the registry, as for the gateway
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", postgres_url)
    registry = _registry(tmp_path, upstream, "  url: sqlite:///never-used.db")
    with Router.from_yaml(registry) as router:
        ids = _exercise(router)
    _check(_logged(postgres_url), ids)
    assert not (tmp_path / "never-used.db").exists()


def test_an_async_call_its_caller_cancels_is_logged_and_charged(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``asyncio.wait_for`` giving up on ``acreate`` cancels the upstream call, and the call
    is logged as the gateway logs a client that hung up: 499 ``client_disconnected``,
    with the prompt it sent as its (estimated) usage."""
    url = f"sqlite:///{tmp_path / 'sdk.db'}"
    monkeypatch.delenv("LLMROUTE_TELEMETRY_URL")
    registry = _registry(tmp_path, upstream, f"  url: {url}")
    before = len(upstream.cut)
    with Router.from_yaml(registry) as router:

        async def impatient() -> None:
            try:
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(
                        router.chat.completions.acreate(messages=HELLO, model="hung"), 0.3
                    )
            finally:
                await router.aclose()

        asyncio.run(impatient())
    (row,) = [r for r in _logged(url) if r.model == "hung"]
    assert (row.status, row.error, row.served_model) == (499, "client_disconnected", None)
    assert row.usage_estimated and row.tokens_out == 0 and row.tokens_in
    assert row.cost_usd == pytest.approx(row.tokens_in * 5.0 / 1e6)
    wait_for("the upstream call closed", lambda: len(upstream.cut) > before, 10)
    assert upstream.cut[before:] == [("hung?delay=4", 0)]


def test_a_stream_silent_past_the_hold_logs_its_first_event_as_its_ttft(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model that sends nothing for 0.6 s, past ``stream_hold_s`` (0.1 s): the stream
    is returned before its first event, and its ``ttft_ms`` is that event's, not the
    return's (the hold, as it was); one closed before any event was read has none."""
    url = f"sqlite:///{tmp_path / 'sdk.db'}"
    monkeypatch.delenv("LLMROUTE_TELEMETRY_URL")
    registry = _registry(tmp_path, upstream, f"  url: {url}")
    text = registry.read_text().replace("dispatch:\n", "dispatch:\n  stream_hold_s: 0.1\n")
    text = text.replace(
        "models:\n", 'models:\n  silent: {provider: fake, model: "silent?ttft=0.6"}\n'
    )
    registry.write_text(text)
    with Router.from_yaml(registry) as router:
        with router.chat.completions.create(messages=HELLO, model="silent", stream=True) as read:
            assert list(read)
        with router.chat.completions.create(messages=HELLO, model="silent", stream=True):
            pass  # closed unread
    rows = {row.id: row for row in _logged(url)}
    whole = rows[read.llmroute["decision_id"]]
    assert whole.error is None and whole.ttft_ms is not None and whole.ttft_ms >= 600
    (unread,) = [row for row in rows.values() if row.id != whole.id]
    assert unread.error == "client_disconnected" and unread.ttft_ms is None


def test_no_log_when_telemetry_is_off(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMROUTE_TELEMETRY_URL")
    monkeypatch.chdir(tmp_path)
    registry = _registry(tmp_path, upstream, "  enabled: false")
    with Router.from_yaml(registry) as router:
        router.chat.completions.create(messages=CODE)
    assert list(tmp_path.glob("*.db")) == []


def test_the_request_log_line_is_written_with_telemetry_off(
    tmp_path: Path,
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The ``llmroute.requests`` line does not need the decision log (the gateway's
    ``--log-requests`` writes it with the log off): a router with neither the log nor
    metrics still says each finished call, sync and async, once the logger is on."""
    monkeypatch.delenv("LLMROUTE_TELEMETRY_URL")
    monkeypatch.chdir(tmp_path)
    registry = _registry(tmp_path, upstream, "  enabled: false")
    with Router.from_yaml(registry) as router:
        router.chat.completions.create(messages=CODE)  # the line is off: nothing said
        with caplog.at_level(logging.INFO, logger="llmroute.requests"):
            done = router.chat.completions.create(messages=CODE)

            async def acreate() -> str:
                reply = await router.chat.completions.acreate(messages=HELLO)
                await router.aclose()
                return str(reply.llmroute["decision_id"])

            async_id = asyncio.run(acreate())
    lines = [r.getMessage() for r in caplog.records if r.name == "llmroute.requests"]
    assert [line.split()[0] for line in lines] == [done.llmroute["decision_id"], async_id]
    assert "route=code model=large served=large status=200" in lines[0]
    assert list(tmp_path.glob("*.db")) == []


def test_a_failing_store_never_fails_a_call(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "not-a-dir").write_text("")  # the database would have to live inside it
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", f"sqlite:///{tmp_path / 'not-a-dir' / 'x.db'}")
    with Router.from_yaml(_registry(tmp_path, upstream)) as router:
        for _ in range(3):
            done = router.chat.completions.create(messages=HELLO)
            assert done.choices[0].message.content
        writer = router.chat._engine.log.writer
        assert writer is not None
        writer.flush(5.0)
        assert writer.dropped == 3 and writer.written == 0  # counted, never raised


def test_feedback_on_an_sdk_answer_is_stored_beside_its_decision(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'fb.db'}"
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", url)
    with Router.from_yaml(_registry(tmp_path, upstream)) as router:
        done = router.chat.completions.create(messages=CODE)
        decision_id = done.llmroute["decision_id"]
        # right after the answer: the decision may still be in the writer's queue
        assert router.chat.feedback(decision_id, thumbs="down", comment="wrong language")
        assert router.chat.feedback(decision_id, score=0.25)
        assert not router.chat.feedback("no-such-decision", thumbs="up")
        with pytest.raises(ValueError, match="score"):
            router.chat.feedback(decision_id, score=2)
        with pytest.raises(ValueError, match="thumbs"):
            router.chat.feedback(decision_id)
    store = open_store(url)
    try:
        stored = store.feedback(0.0)
    finally:
        store.close()
    assert [(f.decision_id, f.thumbs, f.score, f.comment) for f in stored] == [
        (decision_id, "down", None, "wrong language"),
        (decision_id, None, 0.25, None),
    ]


def test_async_feedback_runs_off_the_loop_and_is_stored(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'afb.db'}"
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", url)

    async def main(router: Router) -> tuple[str, list[bool], int]:
        done = await router.chat.completions.acreate(messages=CODE)
        decision_id = done.llmroute["decision_id"]
        loop_thread = threading.get_ident()
        seen: list[int] = []
        original = router.chat.feedback

        def spy(*args: Any, **kwargs: Any) -> bool:
            seen.append(threading.get_ident())
            return original(*args, **kwargs)

        router.chat.feedback = spy  # type: ignore[method-assign]
        results = [
            await router.chat.afeedback(decision_id, thumbs="up", comment="async"),
            await router.chat.afeedback("no-such-decision", score=0.5),
        ]
        with pytest.raises(ValueError, match="score"):
            await router.chat.afeedback(decision_id, score=-1)
        assert seen and loop_thread not in seen
        return decision_id, results, len(seen)

    with Router.from_yaml(_registry(tmp_path, upstream)) as router:
        decision_id, results, calls = asyncio.run(main(router))
    assert results == [True, False] and calls == 3
    store = open_store(url)
    try:
        stored = store.feedback(0.0)
    finally:
        store.close()
    assert [(f.decision_id, f.thumbs, f.comment) for f in stored] == [(decision_id, "up", "async")]


def test_feedback_without_a_decision_log_says_so(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", "off")
    with Router.from_yaml(_registry(tmp_path, upstream)) as router:
        done = router.chat.completions.create(messages=CODE)
        with pytest.raises(RuntimeError, match="decision log"):
            router.chat.feedback(done.llmroute["decision_id"], thumbs="up")


def test_the_sdks_writer_reports_its_queue_and_drops_to_the_callers_metrics(
    tmp_path: Path,
) -> None:
    """With `metrics=` the SDK's decision-log writer says its queue depth and its drops
    to those metrics, as serve's does (it said them to no metric)."""
    from telemetry_records import build_record

    from llmroute.registry.schema import TelemetrySettings
    from llmroute.sdk.decision_log import SdkDecisionLog
    from llmroute.telemetry.metrics import GatewayMetrics

    depths: list[int] = []
    dropped: list[tuple[int, str]] = []

    class Seen(GatewayMetrics):
        def depth_reporter(self) -> Any:
            report = super().depth_reporter()

            def seen(depth: int) -> None:
                depths.append(depth)
                report(depth)

            return seen

        def on_drop(self, n: int, reason: str) -> None:
            dropped.append((n, reason))
            super().on_drop(n, reason)

        telemetry_dropped = on_drop

    url = f"sqlite:///{tmp_path / 'sdk.db'}"
    settings = TelemetrySettings(url=url, flush_seconds=0.5, queue_size=3, batch_size=2)
    log = SdkDecisionLog(settings, environ={}, metrics=Seen())
    assert log.recorder() is not None and log.writer is not None
    offered = [log.writer.offer(build_record(i)) for i in range(4)]  # the queue holds 3
    assert offered == [True, True, True, False]
    log.close()
    assert dropped == [(1, "queue_full")]
    assert depths[0] == 2 and 3 in depths and depths[-1] == 0  # a batch waiting .. drained


def test_a_bodys_tags_are_the_calls_as_at_the_gateway(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LiteLLM's tags (``tags``, ``metadata.tags``), which the SDK checks and sends to no
    model, tag the call after its header's, as the gateway's request line has them."""
    url = f"sqlite:///{tmp_path / 'sdk.db'}"
    monkeypatch.delenv("LLMROUTE_TELEMETRY_URL")
    with Router.from_yaml(_registry(tmp_path, upstream, f"  url: {url}")) as router:
        router.chat.completions.create(
            messages=HELLO,
            extra_headers={"x-llmroute-tags": "team:a"},
            extra_body={"tags": ["app=sdk", "team:a"], "metadata": {"tags": ["feature:x"]}},
        )
    (row,) = _logged(url)
    assert row.tags == ("team:a", "app=sdk", "feature:x")
    assert "tags" not in upstream.requests[-1].body
