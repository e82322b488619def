"""A request that got no answer keeps in its decision log row what it did before it
ended, as a served one's row does: one cut by its client while on its fallback lists
the failed model and the cut one (so the report and the dashboard count it as a
fallback), and one a bug ended after a tier had answered (a 500 ``internal_error``)
counts that tier's cost under its model, its span saying the status the client got.
A gateway in a thread (`create_app`) before a fake upstream on 127.0.0.1, its log in a
SQLite file; the bug is a function of ours made to raise once the request is routed."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_upstream import FakeUpstream, fake_upstream
from gateway_proc import serve_in_thread, wait_for
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from llmroute.dispatch import cascade
from llmroute.dispatch import dispatcher as dispatcher_module
from llmroute.dispatch import usage as usage_module
from llmroute.dispatch.usage import StreamUsage
from llmroute.errors import TelemetryError
from llmroute.providers.openai_compat import OpenAICompatProvider
from llmroute.safety.answer_pii import AnswerMask
from llmroute.safety.stream_edit import StreamEdit
from llmroute.server import app as app_module
from llmroute.server import chat, messages_convert
from llmroute.server.responses_stream import ResponsesStream
from llmroute.telemetry import recorder as recorder_module
from llmroute.telemetry import tracing as tracing_module
from llmroute.telemetry.record import LoggedDecision
from llmroute.telemetry.report import is_fallback
from llmroute.telemetry.store import open_store
from llmroute.telemetry.tracing import Tracing

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 10}
models:
  broken: {provider: fake, model: "broken?status=500", price: {input: 1, output: 2}}
  hung: {provider: fake, model: "hung?delay=4&ttft=4", price: {input: 5, output: 15}}
  cutoff: {provider: fake, model: "cutoff?finish=length", price: {input: 1, output: 2}}
  good: {provider: fake, model: good-up, price: {input: 10, output: 30}}
  slow: {provider: fake, model: "slow?gap=0.05", max_in_flight: 1, price: {input: 1, output: 2}}
  undone: {provider: fake, model: "undone?nodone=1", price: {input: 1, output: 2}}
  undone-bare: {provider: fake, model: "undone?nodone=1&nousage=1", price: {input: 1, output: 2}}
  reset-after: {provider: fake, model: "whole?after=reset", price: {input: 1, output: 2}}
  garbage-after: {provider: fake, model: "whole?after=garbage", price: {input: 1, output: 2}}
  hold-after: {provider: fake, model: "whole?after=hold", price: {input: 1, output: 2}}
  lag-after: {provider: fake, model: "whole?after=lag", price: {input: 1, output: 2}}
  open-after:
    {provider: fake, model: "whole?after=open", timeout_s: 120, price: {input: 1, output: 2}}
  chunk-after: {provider: fake, model: "whole?after=chunk", price: {input: 1, output: 2}}
  spaced-done: {provider: fake, model: "whole?done=spaced&nousage=1", price: {input: 1, output: 2}}
  refused: {provider: fake, model: "refused?status=400", price: {input: 1, output: 2}}
  cut-mid: {provider: fake, model: "cut?mid=1", price: {input: 1, output: 2}}
  two-cut: {provider: fake, model: "two?choices=2&cutchoice=1", price: {input: 1, output: 2}}
  two-undone: {provider: fake, model: "two?choices=2&nodone=1", price: {input: 1, output: 2}}
  down: {provider: fake, model: "down?status=503", price: {input: 1, output: 2}}
routes:
  - name: falling
    examples: ["plan a trip to Rome"]
    target: broken
    policy: {fallback: [hung]}
  - name: recovering
    examples: ["book a table for two"]
    target: broken
    policy: {fallback: [good]}
  - name: exhausted
    examples: ["reconcile the ledgers"]
    target: broken
    policy: {fallback: [down]}
  - name: escalating
    examples: ["summarise the quarterly report"]
    target: cutoff
    cascade: [cutoff, good]
  - name: masked
    examples: ["call my dentist"]
    target: slow
    policy: {safety: masking}
  - name: masked-undone
    examples: ["phone my plumber"]
    target: undone
    policy: {safety: masking}
  - name: masked-cut
    examples: ["ring my landlord"]
    target: cut-mid
    policy: {safety: masking}
default: {target: good}
safety:
  pii: {entities: [PHONE]}
  profiles:
    open: {injection: allow, pii: allow, unscanned: allow}
    masking: {injection: allow, pii: allow, unscanned: allow, answer_pii: {PHONE: redact}}
  profile: open
dispatch:
  retries: {attempts: 0}
  breaker: {enabled: false}
telemetry:
  prompts: full
  flush_seconds: 0.05
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as up:
        yield up


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def gateway(
    upstream: FakeUpstream,
    exporter: InMemorySpanExporter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[str, str]]:
    """(the gateway's URL, its decision log's URL), its spans to `exporter`."""
    with _serving(REGISTRY, upstream, exporter, tmp_path, monkeypatch) as served:
        yield served


@pytest.fixture
def cached_gateway(
    upstream: FakeUpstream,
    exporter: InMemorySpanExporter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[str, str]]:
    """`gateway`, with a response cache in its memory."""
    registry = REGISTRY + "cache: {ttl_s: 300}\n"
    with _serving(registry, upstream, exporter, tmp_path, monkeypatch) as served:
        yield served


@contextlib.contextmanager
def _serving(
    registry_text: str,
    upstream: FakeUpstream,
    exporter: InMemorySpanExporter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    wrap: Callable[[Any], Any] = lambda app: app,
) -> Iterator[tuple[str, str]]:
    """The gateway (its app as `wrap` makes it) and its log's URL, its spans to `exporter`."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(app_module, "tracing_from_env", lambda: Tracing(provider))
    store_url = f"sqlite:///{tmp_path / 'log.db'}"
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", store_url)
    registry = tmp_path / "registry.yaml"
    registry.write_text(registry_text % {"url": upstream.url})
    try:
        with serve_in_thread(wrap(app_module.create_app(str(registry)))) as url:
            yield url, store_url
    finally:
        provider.shutdown()


def _logged(store_url: str, prompt: str) -> LoggedDecision:
    store = open_store(store_url)
    found: list[LoggedDecision] = []

    def check() -> bool:
        try:
            found[:] = [d for d in store.decisions(0) if d.prompt == prompt]
        except TelemetryError:  # the writer has not created the tables yet
            return False
        return bool(found)

    try:
        wait_for(f"the row of {prompt!r}", check, 10)
    finally:
        store.close()
    return found[0]


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_cut_on_its_fallback_keeps_its_attempt_path(
    gateway: tuple[str, str],
    upstream: FakeUpstream,
    exporter: InMemorySpanExporter,
    stream: bool,
) -> None:
    """The decided model failed (500), its fallback was slow, and the client left: the
    499 row lists the failure and the fallback it was cut on, and is a fallback. It
    listed nothing, so the report, the dashboard and the span saw no fallback at all.
    The span counts one failed attempt: the cut is no failure (it counted two)."""
    url, store_url = gateway
    prompt = f"plan a trip to Rome, streamed {stream}"
    body: dict[str, Any] = {"model": "falling", "messages": [{"role": "user", "content": prompt}]}
    if stream:
        body["stream"] = True
    before = len(upstream.cut)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/chat/completions", json=body, timeout=1.0)
    wait_for("the fallback's call closed", lambda: len(upstream.cut) > before, 10)
    row = _logged(store_url, prompt)
    assert (row.status, row.error, row.served_model) == (499, "client_disconnected", None)
    failed, cut = row.attempts
    assert failed.startswith("broken via fake (") and "500" in failed
    assert cut == "hung via fake (cancelled)"
    assert is_fallback(row)
    assert row.tokens_in and row.model == "broken"  # its cut prompt, sent to the fallback
    wait_for("the request span", lambda: _server_spans(exporter), 10)
    (span,) = _server_spans(exporter)
    assert dict(span.attributes or {})["llmroute.failed_attempts"] == 1


def _server_spans(exporter: InMemorySpanExporter) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]


def _tokens(url: str) -> dict[tuple[str, str], float]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return {
        (sample.labels["model"], sample.labels["direction"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "llmroute_tokens_total"
    }


def test_a_bug_after_a_tier_answered_is_a_500_with_its_cost_and_status(
    gateway: tuple[str, str],
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both tiers answered (the first cut off, so escalated), then a bug (our cascade's
    `served`, made to raise): a 500 ``internal_error`` whose row holds what both tiers
    cost, counted under each tier's model, and whose request span says the 500 and that
    usage. The span had no status code and no usage: the bug's exception alone."""
    url, store_url = gateway

    def bug(self: Any, served: Any) -> Any:
        raise RuntimeError("a bug once both tiers answered")

    monkeypatch.setattr(cascade._Run, "served", bug)
    prompt = "summarise the quarterly report, please"
    body = {"model": "escalating", "messages": [{"role": "user", "content": prompt}]}
    before = _tokens(url)
    answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)
    assert answer.status_code == 500 and answer.json()["error"]["code"] == "internal_error"
    row = _logged(store_url, prompt)
    assert (row.status, row.error, row.model) == (500, "internal_error", "cutoff")
    assert row.tokens_in and row.tokens_out and row.cost_usd
    spent = {k: v - before.get(k, 0) for k, v in _tokens(url).items() if v != before.get(k, 0)}
    assert {model for model, _ in spent} == {"cutoff", "good"}  # each tier's under its own
    assert sum(v for (_, way), v in spent.items() if way == "in") == row.tokens_in
    (span,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    attributes = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert attributes["http.response.status_code"] == 500
    assert attributes["error.type"] == "RuntimeError"
    assert attributes["gen_ai.usage.input_tokens"] == row.tokens_in
    assert attributes["llmroute.cost_usd"] == pytest.approx(row.cost_usd)


def test_a_bug_after_the_row_was_written_is_a_500_of_its_own(
    gateway: tuple[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug once the model answered and the row was written (200), making the answer's
    headers (`served_headers`, made to raise): as for a bug converting the answer for
    its front, the 500 the client got is a request line naming the decision and an API
    error of its own. It was in neither: the row's 200 was the request's only trace."""
    caplog.set_level(logging.INFO)
    url, store_url = gateway

    def bug(*args: Any) -> dict[str, str]:
        raise RuntimeError("a bug after the row was written")

    monkeypatch.setattr(chat, "served_headers", bug)
    prompt = "hello there, after the row"
    body = {"model": "good", "messages": [{"role": "user", "content": prompt}]}
    answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)
    assert answer.status_code == 500 and answer.json()["error"]["code"] == "internal_error"
    row = _logged(store_url, prompt)
    assert row.status == 200 and row.id == answer.headers["x-request-id"]
    lines = [r.__dict__["request"] for r in caplog.records if r.name == "llmroute.requests"]
    (errored,) = [line for line in lines if line.get("request_id") == row.id]
    assert (errored["status"], errored["error"]) == (500, "internal_error")

    def counted() -> bool:
        text = httpx.get(f"{url}/metrics", timeout=5).text
        return 'llmroute_api_errors_total{api="chat",status="500"} 1.0' in text

    wait_for("the 500 counted", counted, 10)


def _fails_third(monkeypatch: pytest.MonkeyPatch, cls: Any, name: str, message: str) -> None:
    """`cls.name` (a stream step fed piece by piece) made to raise `message` on its third
    piece: a bug once the stream was handed on, after its first events went out."""
    real = getattr(cls, name)
    pieces = 0

    def bug(self: Any, piece: Any) -> Any:
        nonlocal pieces
        pieces += 1
        if pieces == 3:
            raise RuntimeError(message)
        return real(self, piece)

    monkeypatch.setattr(cls, name, bug)


def _server_span(exporter: InMemorySpanExporter) -> dict[str, Any]:
    """The attributes of the one request span, ended as failed."""
    (span,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert span.status.status_code is StatusCode.ERROR
    return dict(span.attributes or {})


def test_a_bug_between_the_answer_and_its_row_is_a_500_row_and_a_failed_span(
    gateway: tuple[str, str],
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The decided model failed, its fallback answered, then a bug before the row was
    written (the served cost split by model, `paid_by_model`, made to raise for a served
    model): a 500 ``internal_error`` row under the answer's id, with what the answer
    cost and the way it went (the fallback last, as the request ended on it), and a
    request span ended as failed with that 500. There was no row at all, and the span
    was never ended."""
    url, store_url = gateway
    real = chat.paid_by_model

    def bug(spend: Any, served: str | None, usage: Any) -> Any:
        if served is not None:
            raise RuntimeError("a bug between the answer and its row")
        return real(spend, served, usage)

    monkeypatch.setattr(chat, "paid_by_model", bug)
    prompt = "book a table for two, then a bug"
    body = {"model": "recovering", "messages": [{"role": "user", "content": prompt}]}
    answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)
    assert answer.status_code == 500 and answer.json()["error"]["code"] == "internal_error"
    row = _logged(store_url, prompt)
    assert row.id == answer.headers["x-request-id"]
    assert (row.status, row.error, row.served_model) == (500, "internal_error", None)
    failed, ended = row.attempts
    assert failed.startswith("broken via fake (") and "500" in failed
    assert ended == "good via fake (internal_error)"
    assert row.tokens_in and row.tokens_out and row.cost_usd  # the answer, paid for
    attributes = _server_span(exporter)
    assert attributes["http.response.status_code"] == 500
    assert attributes["error.type"] == "RuntimeError"
    assert attributes["llmroute.cost_usd"] == pytest.approx(row.cost_usd)


@pytest.mark.parametrize("model", ["recovering", "escalating"])
def test_a_bug_on_a_fallback_keeps_the_way_it_went(
    gateway: tuple[str, str],
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    model: str,
) -> None:
    """A bug while on the fallback (a chain's) or the next tier (a cascade's): our
    check of the answer for the content filter (`_filtered`) made to raise on the
    answer of ``good``. The 500 row lists the failed model (or the tier escalated
    from) and then the one the bug ended it on, as a cut request's does, so the report
    counts the fallback; it listed nothing."""
    url, store_url = gateway
    real = dispatcher_module._filtered

    def bug(data: dict[str, Any]) -> bool:
        if data.get("model") == "good-up":
            raise RuntimeError("a bug on the fallback")
        return real(data)

    monkeypatch.setattr(dispatcher_module, "_filtered", bug)
    prompt = f"a bug on the way down, by {model}"
    body = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)
    assert answer.status_code == 500 and answer.json()["error"]["code"] == "internal_error"
    row = _logged(store_url, prompt)
    assert (row.status, row.error, row.served_model) == (500, "internal_error", None)
    passed, ended = row.attempts
    assert passed.startswith("cutoff escalated" if model == "escalating" else "broken via fake")
    assert ended == "good via fake (internal_error)"
    assert is_fallback(row)
    assert _server_span(exporter)["http.response.status_code"] == 500


def test_a_bug_once_a_stream_opened_closes_it_and_counts_its_cost(
    gateway: tuple[str, str],
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stream opened (its first words read), then a bug making its answer's headers
    (`served_headers`, made to raise): the stream is closed at once (its upstream call,
    its slot and budget hold given back), and what it cost is in the 500 row and its
    span. It was left to the garbage collector, and the row had no cost."""
    url, store_url = gateway

    def bug(*args: Any) -> dict[str, str]:
        raise RuntimeError("a bug once the stream opened")

    monkeypatch.setattr(chat, "served_headers", bug)
    prompt = "a stream, then a bug"
    body = {"model": "good", "messages": [{"role": "user", "content": prompt}], "stream": True}
    answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)
    assert answer.status_code == 500 and answer.json()["error"]["code"] == "internal_error"
    row = _logged(store_url, prompt)
    assert (row.status, row.error) == (500, "internal_error")
    assert row.tokens_in and row.cost_usd
    attributes = _server_span(exporter)
    assert attributes["http.response.status_code"] == 500
    assert attributes["llmroute.cost_usd"] == pytest.approx(row.cost_usd)


@pytest.mark.parametrize("where", ["safety", "messages"])
def test_a_bug_once_a_stream_was_handed_on_ends_it_as_the_bugs(
    gateway: tuple[str, str],
    upstream: FakeUpstream,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    """A stream handed on (its 200 sent), then a bug on its third piece: in the safety
    step redacting the answer (`StreamEdit.feed`), or in the Messages front's
    conversion (behind that step). The upstream stream is closed at once (its slot free
    for the next request), and the row (the 200 the client got) and the span say the
    bug (``internal_error``). Both said the client had left (``client_disconnected``),
    the span no error."""
    url, store_url = gateway
    cls, name = (
        (StreamEdit, "feed") if where == "safety" else (messages_convert.StreamTranslator, "_chunk")
    )
    _fails_third(monkeypatch, cls, name, "a bug once the stream was handed on")
    prompt = f"call my dentist {' '.join(f'w{i}' for i in range(40))} ({where})"
    messages = [{"role": "user", "content": prompt}]
    body: dict[str, Any] = {"model": "masked", "messages": messages, "stream": True}
    path = "/v1/chat/completions"
    if where == "messages":
        path, body["max_tokens"] = "/v1/messages", 500
    before = len(upstream.cut)
    with (
        contextlib.suppress(httpx.RemoteProtocolError),
        httpx.stream("POST", f"{url}{path}", json=body, timeout=10) as answer,
    ):
        assert answer.status_code == 200
        for _ in answer.iter_bytes():
            pass
    wait_for("the upstream stream closed", lambda: len(upstream.cut) > before, 10)
    assert upstream.cut[-1][0] == "slow?gap=0.05" and upstream.cut[-1][1] < 40
    row = _logged(store_url, prompt)
    assert (row.status, row.error, row.served_model) == (200, "internal_error", "slow")
    assert row.tokens_in
    attributes = _server_span(exporter)
    assert attributes["error.type"] == "internal_error"
    body = {"model": "masked", "messages": [{"role": "user", "content": "call my dentist"}]}
    again = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)
    assert again.status_code == 200  # the model's one slot is free


@pytest.mark.parametrize("where", ["safety", "messages"])
def test_a_bug_as_a_stream_is_handed_on_closes_it_and_logs_its_500(
    gateway: tuple[str, str],
    upstream: FakeUpstream,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    """A stream opened and handed on, then a bug making it the client's answer, before
    it is sent: the safety step's redaction set up (`AnswerMask.stream`), or the Messages
    front's conversion (its `StreamTranslator`), made to raise. The client gets the 500,
    the upstream stream is closed at once (its slot free for the next request), and the
    500 ``internal_error`` row and its span hold what it cost. The stream was dropped
    unsent: no row, its span never ended, its slot and tpm hold kept until collected."""
    url, store_url = gateway
    cls, name = (
        (AnswerMask, "stream")
        if where == "safety"
        else (messages_convert.StreamTranslator, "__init__")
    )
    real, broken = getattr(cls, name), True

    def bug(*args: Any) -> Any:
        if broken:
            raise RuntimeError("a bug as the stream was handed on")
        return real(*args)

    monkeypatch.setattr(cls, name, bug)
    prompt = f"call my dentist {' '.join(f'w{i}' for i in range(40))} ({where}, unsent)"
    messages = [{"role": "user", "content": prompt}]
    body: dict[str, Any] = {"model": "masked", "messages": messages, "stream": True}
    path = "/v1/chat/completions"
    if where == "messages":
        path, body["max_tokens"] = "/v1/messages", 500
    before = len(upstream.cut)
    answer = httpx.post(f"{url}{path}", json=body, timeout=10)
    assert answer.status_code == 500
    wait_for("the upstream stream closed", lambda: len(upstream.cut) > before, 10)
    row = _logged(store_url, prompt)
    assert (row.status, row.error) == (500, "internal_error")
    assert row.tokens_in and row.cost_usd
    attributes = _server_span(exporter)
    assert attributes["http.response.status_code"] == 500
    assert attributes["error.type"] == "RuntimeError"
    assert attributes["llmroute.cost_usd"] == pytest.approx(row.cost_usd)
    broken = False
    body = {"model": "masked", "messages": [{"role": "user", "content": "call my dentist"}]}
    again = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)
    assert again.status_code == 200  # the model's one slot is free


def test_a_bug_in_a_served_requests_line_is_not_a_second_row(
    gateway: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug writing a served request's line (`log_request`, made to raise), once its
    row was offered: logged and swallowed, as a failure of its metrics is, so the
    request is served and has its one row. It failed the request with a 500, and the
    500's own row (a bug before the row was written) would have made it two."""
    url, store_url = gateway

    def bug(record: Any) -> None:
        raise RuntimeError("a bug in the request line")

    monkeypatch.setattr(recorder_module, "log_request", bug)
    prompt = "hello there, a bug in the line"
    body = {"model": "good", "messages": [{"role": "user", "content": prompt}]}
    answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)
    assert answer.status_code == 200
    row = _logged(store_url, prompt)
    assert (row.id, row.status) == (answer.headers["x-request-id"], 200)
    store = open_store(store_url)
    try:
        assert [d.status for d in store.decisions(0) if d.prompt == prompt] == [200]
    finally:
        store.close()


_ENDINGS = {
    "/v1/chat/completions": (
        b'data: {"error": {"message": "internal error", "type": "server_error", '
        b'"param": null, "code": "internal_error"}}\n\ndata: [DONE]\n\n'
    ),
    "/v1/messages": (
        b'event: error\ndata: {"type": "error", "error": {"type": "api_error", '
        b'"message": "internal error"}}\n\n'
    ),
}


@pytest.mark.parametrize(
    ("where", "path"),
    [
        ("safety", "/v1/chat/completions"),
        ("safety", "/v1/messages"),
        ("front", "/v1/messages"),
        ("front", "/v1/responses"),
    ],
)
def test_a_bug_once_a_stream_was_handed_on_ends_it_with_its_apis_error_event(
    gateway: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    where: str,
    path: str,
) -> None:
    """A stream handed on (its 200 sent), then a bug on its third piece (the safety
    step, `StreamEdit.feed`; the front's conversion, its translator's `_chunk`): the
    client's stream ends as one an upstream broke off ends, with its API's error event
    (saying "internal error", nothing of the bug) and its end, read whole; the bug is
    logged once. It was torn off unended (the client's "incomplete chunked read")."""
    url, store_url = gateway
    cls, name = (StreamEdit, "feed") if where == "safety" else (None, "_chunk")
    if cls is None:
        cls = messages_convert.StreamTranslator if path == "/v1/messages" else ResponsesStream
    _fails_third(monkeypatch, cls, name, "a secret bug")
    prompt = f"call my dentist {' '.join(f'w{i}' for i in range(40))} ({where}, {path})"
    raw = _stream(
        url, path, "masked", prompt
    )  # raised RemoteProtocolError: the stream was torn off
    assert b"secret" not in raw
    if path == "/v1/responses":
        *_, last = raw.rstrip(b"\n").split(b"\n\n")
        kind, data = last.split(b"\n", 1)
        assert kind == b"event: response.failed"
        failed = json.loads(data.removeprefix(b"data: "))["response"]
        assert (failed["status"], failed["error"]["message"]) == ("failed", "internal error")
    else:
        assert raw.endswith(_ENDINGS[path])
    row = _logged(store_url, prompt)
    assert (row.status, row.error) == (200, "internal_error")
    logged = [r for r in caplog.records if r.exc_info and "a secret bug" in str(r.exc_info[1])]
    assert len(logged) == 1  # once, with its traceback


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/v1/responses"])
def test_a_bug_reading_a_plain_chat_stream_ends_it_with_an_error_chunk(
    gateway: tuple[str, str],
    upstream: FakeUpstream,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    path: str,
) -> None:
    """A stream with no safety step, then a bug inside `relay` on its third piece (the
    dispatcher's metering, `StreamUsage.observe`, made to raise): the client's stream
    ends as a broken-off upstream's does, with the error chunk saying "internal error"
    and ``[DONE]`` (a front's: its API's error event); the upstream stream is closed at
    once (the model's one slot free), the row is the 200 the client got with
    ``internal_error`` and the bug is logged once. The connection was torn off (the
    client's "incomplete chunked read")."""
    url, store_url = gateway
    _fails_third(monkeypatch, StreamUsage, "observe", "a secret bug")
    prompt = f"a plain stream {' '.join(f'w{i}' for i in range(40))} ({path})"
    before = len(upstream.cut)
    raw = _stream(url, path, "slow", prompt)  # raised RemoteProtocolError: the stream was torn off
    assert b"secret" not in raw
    if path == "/v1/responses":
        *_, last = raw.rstrip(b"\n").split(b"\n\n")
        assert last.startswith(b"event: response.failed\n")
    else:
        assert raw.endswith(_ENDINGS[path])
    wait_for("the upstream stream closed", lambda: len(upstream.cut) > before, 10)
    row = _logged(store_url, prompt)
    assert (row.status, row.error, row.served_model) == (200, "internal_error", "slow")
    assert row.tokens_in and row.cost_usd
    assert _server_span(exporter)["error.type"] == "internal_error"
    logged = [r for r in caplog.records if r.exc_info and "a secret bug" in str(r.exc_info[1])]
    assert len(logged) == 1  # once, with its traceback
    again = {"model": "slow", "messages": [{"role": "user", "content": "hello again"}]}
    assert httpx.post(f"{url}/v1/chat/completions", json=again, timeout=10).status_code == 200


def _priced_wrong(real: Any) -> Any:
    """A pricer failing on what a model answered (a completion, a stream's usage chunk
    or streamed text), itself on a prompt alone (the estimate of an unpriced answer)."""

    def price(data: dict[str, Any], body: Any, price: Any, **options: Any) -> Any:
        if data or options.get("completion"):
            raise RuntimeError("a bug pricing the answer")
        return real(data, body, price, **options)

    return price


@pytest.mark.parametrize("stream", [False, True])
def test_a_bug_pricing_a_cascade_tier_charges_its_prompt(
    gateway: tuple[str, str], monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    """A cascade's first tier answered (whole, or its stream buffered), then a bug
    failed to price its answer: the 500 row holds its prompt, counted and marked
    estimated, and the tokens are counted under the tier's model. A stream's was lost:
    no cost in the row, nothing counted."""
    for module in (dispatcher_module, usage_module):
        monkeypatch.setattr(module, "priced", _priced_wrong(module.priced))
    url, store_url = gateway
    prompt = f"summarise the quarterly report, a pricing bug, streamed {stream}"
    body = {"model": "escalating", "messages": [{"role": "user", "content": prompt}]}
    if stream:
        body["stream"] = True
    before = _tokens(url)
    answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)
    assert answer.status_code == 500 and answer.json()["error"]["code"] == "internal_error"
    row = _logged(store_url, prompt)
    assert (row.status, row.error, row.model) == (500, "internal_error", "cutoff")
    assert row.tokens_in and row.cost_usd and row.usage_estimated
    spent = {k: v - before.get(k, 0) for k, v in _tokens(url).items() if v != before.get(k, 0)}
    assert spent == {("cutoff", "in"): row.tokens_in}


def _close_fails_once(monkeypatch: pytest.MonkeyPatch, cls: Any, message: str) -> None:
    """`cls.close` made to raise `message` as it is read the first time (a generator, as
    the real one: what the stream's piece made before it went out first)."""
    real = cls.close
    calls = 0

    def bug(self: Any) -> Iterator[bytes]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError(message)
        yield from real(self)

    monkeypatch.setattr(cls, "close", bug)


@pytest.mark.parametrize(
    ("cls", "path"),
    [
        (StreamEdit, "/v1/chat/completions"),
        (messages_convert.StreamTranslator, "/v1/messages"),
        (ResponsesStream, "/v1/responses"),
    ],
    ids=["safety", "messages", "responses"],
)
def test_a_bug_closing_a_stream_at_its_end_is_recorded_as_the_bugs(
    gateway: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    cls: Any,
    path: str,
) -> None:
    """A stream read whole, then a bug closing it at its end (the safety step's or the
    front's `close`, made to raise): the client's stream ends read whole, with nothing
    after chat's ``[DONE]`` (the front's: its error event, in place of its end), the row
    (the 200 the client got) says ``internal_error`` and the bug is logged once. The
    safety step's left the row ``200`` with no error and the connection torn off."""
    url, store_url = gateway
    _close_fails_once(monkeypatch, cls, "a secret bug")
    prompt = f"call my dentist, then a bug closing ({path})"
    raw = _stream(url, path, "masked", prompt)
    assert b"secret" not in raw
    if path == "/v1/chat/completions":
        assert raw.endswith(b"\n\ndata: [DONE]\n\n") and raw.count(b"[DONE]") == 1
        assert b'"error"' not in raw
    elif path == "/v1/messages":
        assert raw.endswith(_ENDINGS[path])
    else:
        *_, last = raw.rstrip(b"\n").split(b"\n\n")
        assert last.startswith(b"event: response.failed\n")
    row = _logged(store_url, prompt)
    assert (row.status, row.error) == (200, "internal_error")
    logged = [r for r in caplog.records if r.exc_info and "a secret bug" in str(r.exc_info[1])]
    assert len(logged) == 1  # once, with its traceback


def test_a_bug_converting_a_stream_for_its_front_is_one_500(
    gateway: tuple[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A stream handed on, then a bug making it the Messages front's answer before it is
    sent (its `StreamTranslator`, made to raise): the 500 is its row's alone, one request
    line and one count among the requests, not an API error besides. Its row said 500
    and the 500 was a request line and an ``api_errors_total`` of its own too, as one
    after a 200 row is."""
    caplog.set_level(logging.INFO)
    url, store_url = gateway

    def bug(*args: Any) -> None:
        raise RuntimeError("a bug as the stream was handed on")

    monkeypatch.setattr(messages_convert.StreamTranslator, "__init__", bug)
    prompt = "a stream for the Messages front, unsent"
    body = {
        "model": "good",
        "max_tokens": 500,
        "stream": True,
        "messages": [{"role": "user", "content": prompt}],
    }
    answer = httpx.post(f"{url}/v1/messages", json=body, timeout=10)
    assert answer.status_code == 500
    row = _logged(store_url, prompt)
    assert (row.id, row.status, row.error) == (
        answer.headers["x-request-id"],
        500,
        "internal_error",
    )
    lines = [r.__dict__["request"] for r in caplog.records if r.name == "llmroute.requests"]
    named = [line for line in lines if row.id in (line.get("request_id"), line.get("decision_id"))]
    assert [line["status"] for line in named] == [500]
    text = httpx.get(f"{url}/metrics", timeout=5).text
    assert 'llmroute_api_errors_total{api="messages",status="500"}' not in text


def _stream(url: str, path: str, model: str, prompt: str, **extra: Any) -> bytes:
    """The whole stream `model` answers `prompt` with, by `path` (200)."""
    body: dict[str, Any] = {"model": model, "stream": True, **extra}
    if path == "/v1/responses":
        body["input"] = prompt
    else:
        body["messages"] = [{"role": "user", "content": prompt}]
    if path == "/v1/messages":
        body["max_tokens"] = 500
    with httpx.stream("POST", f"{url}{path}", json=body, timeout=10) as answer:
        assert answer.status_code == 200
        return answer.read()


def _ends_whole(raw: bytes) -> None:
    """`raw`, a chat stream, ends on its one ``[DONE]``, with no error event."""
    assert raw.endswith(b"\n\ndata: [DONE]\n\n") and raw.count(b"[DONE]") == 1
    assert b'"error"' not in raw


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ("reset-after", "/v1/chat/completions"),
        ("garbage-after", "/v1/chat/completions"),
        ("reset-after", "/v1/messages"),
    ],
)
def test_an_upstream_breaking_after_its_end_leaves_a_whole_stream(
    gateway: tuple[str, str],
    exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
    model: str,
    path: str,
) -> None:
    """An upstream stream broken (its connection cut; an event that is not JSON) once its
    ``[DONE]`` had gone out to the client: nothing follows that ``[DONE]``, and the row
    and the span are a whole stream's (200, no error), the break a warning, which the
    request span says as its call's does (``llmroute.stream.broke_after_done``). relay
    sent its broke-off error chunk and a second ``[DONE]``, and the row said
    ``stream_interrupted`` for a whole answer; the request span said nothing of the
    break."""
    url, store_url = gateway
    prompt = f"a whole stream, then a break ({model}, {path})"
    raw = _stream(url, path, model, prompt)
    if path == "/v1/chat/completions":
        _ends_whole(raw)
    else:
        assert raw.endswith(b'event: message_stop\ndata: {"type": "message_stop"}\n\n')
    row = _logged(store_url, prompt)
    assert (row.status, row.error, row.served_model) == (200, None, model)
    assert row.tokens_in and row.tokens_out
    wait_for("the request span", lambda: _server_spans(exporter), 10)
    (span,) = _server_spans(exporter)
    assert span.status.status_code is StatusCode.UNSET
    (call,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert call.status.status_code is StatusCode.UNSET  # the call's span says the break
    assert dict(call.attributes or {})["llmroute.stream.broke_after_done"] is True
    # and so does the request's, its outcome ok
    assert dict(span.attributes or {})["llmroute.stream.broke_after_done"] is True
    (event,) = [e for e in span.events if e.name == "llmroute.stream.broke_after_done"]
    assert dict(event.attributes or {})["error.type"] == "ProviderError"
    said = [r for r in caplog.records if "broke off after its end" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_an_upstream_holding_its_body_open_after_its_done_ends_the_stream_there(
    gateway: tuple[str, str], upstream: FakeUpstream, path: str
) -> None:
    """An upstream that sends its whole answer and ``[DONE]``, then keeps its body open
    (a proxy's keep-alive bug): the client's stream ends (its body too, once the
    upstream's was read on for a moment, so a client reading to the end, as OpenAI's
    SDK does after ``[DONE]``, is not held), the row is a whole stream's and the
    upstream's connection is closed. The stream was read
    on until the upstream let go or its read timed out (here 120 s; the client's read
    timed out first, 10 s)."""
    url, store_url = gateway
    prompt = f"a whole stream, its body then held open ({path})"
    raw = _stream(url, path, "open-after", prompt)
    if path == "/v1/chat/completions":
        _ends_whole(raw)
    else:
        assert raw.endswith(b'event: message_stop\ndata: {"type": "message_stop"}\n\n')
    row = _logged(store_url, prompt)
    assert (row.status, row.error, row.served_model) == (200, None, "open-after")
    assert row.tokens_in and row.tokens_out
    wait_for("the upstream released", lambda: "whole?after=open" in upstream.released, 10)


def test_streams_through_the_gateway_reuse_the_upstreams_connection(
    gateway: tuple[str, str], upstream: FakeUpstream
) -> None:
    """Streams whose upstream ends its body a moment after its ``[DONE]`` (as a network
    delivers it) leave their connection to the next: five streams, at most two
    connections (one the pool held already). Closing each at its ``[DONE]`` dropped
    it: a new connection, a TCP and TLS handshake, for every stream."""
    url, _ = gateway
    prompts = [f"a stream on a kept connection ({i})" for i in range(5)]
    for prompt in prompts:
        _ends_whole(_stream(url, "/v1/chat/completions", "lag-after", prompt))
    ports = {
        r.port
        for r in upstream.requests
        if any(m.get("content") in prompts for m in r.body.get("messages", []))
    }
    assert 1 <= len(ports) <= 2


@pytest.mark.parametrize("model", ["reset-after", "garbage-after", "chunk-after", "hold-after"])
def test_a_stream_that_ended_after_its_done_went_out_is_cached(
    cached_gateway: tuple[str, str], exporter: InMemorySpanExporter, model: str
) -> None:
    """A stream whose ``[DONE]`` went out, and then whose upstream broke, sent more, or
    whose client left (``hold-after``: as soon as it read the ``[DONE]``), reached the
    client whole, so it is stored as any whole stream, up to that ``[DONE]``: the same
    request again is a cache hit, the very bytes the first client got. The break or the
    client's leaving kept it out of the cache (every such request a miss), and what an
    upstream sent after its ``[DONE]`` was stored and replayed (a second ``[DONE]``)."""
    url, _ = cached_gateway
    body = {
        "model": model,
        "stream": True,
        "messages": [{"role": "user", "content": f"a whole stream to keep ({model})"}],
    }
    read = []
    for _ in range(2):
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=10) as answer:
            assert answer.status_code == 200
            raw = b""
            for piece in answer.iter_raw():
                raw += piece
                if model == "hold-after" and raw.endswith(b"data: [DONE]\n\n"):
                    break  # leaving, its upstream's body not ended yet
            read.append((answer.headers["x-llmroute-cache"], raw))
        wait_for("the request span", lambda: len(_server_spans(exporter)) == len(read), 10)
    (first, raw), (second, again) = read
    _ends_whole(raw)
    assert (first, second) == ("miss", "hit")
    assert again == raw


def test_events_an_upstream_sends_after_its_done_are_not_relayed(
    gateway: tuple[str, str],
) -> None:
    """An upstream that goes on after its ``[DONE]`` (a content chunk, a second
    ``[DONE]``) and then ends its body properly: the client's stream ends on the first
    ``[DONE]``, nothing after it, and the row is a whole stream's. Both were relayed."""
    url, store_url = gateway
    prompt = "a stream that goes on after its end"
    raw = _stream(url, "/v1/chat/completions", "chunk-after", prompt)
    _ends_whole(raw)
    assert b" late" not in raw
    row = _logged(store_url, prompt)
    assert (row.status, row.error, row.served_model) == (200, None, "chunk-after")


@pytest.mark.parametrize("model", ["undone", "undone-bare"])
def test_a_stream_ending_on_its_finish_reason_gets_its_done(
    gateway: tuple[str, str], model: str
) -> None:
    """An upstream stream that ends on its finish reason (and its usage chunk, or none)
    with no ``[DONE]`` (as some OpenAI-compatible servers do), no bug at all: the
    client's stream ends with the usage chunk it asked for (the gateway's, when the
    upstream sent none) and ``[DONE]``, as OpenAI's clients expect. It ended on what
    the upstream sent last, with no ``[DONE]`` (and no usage chunk when it sent none)."""
    url, store_url = gateway
    prompt = f"a stream with no end of its own ({model})"
    raw = _stream(
        url, "/v1/chat/completions", model, prompt, stream_options={"include_usage": True}
    )
    _ends_whole(raw)
    *_, usage, _done, _end = raw.split(b"\n\n")
    chunk = json.loads(usage.removeprefix(b"data: "))
    assert chunk["choices"] == [] and chunk["usage"]["prompt_tokens"]
    row = _logged(store_url, prompt)
    assert (row.status, row.error) == (200, None)


def test_a_bug_closing_a_stream_with_no_done_is_recorded_as_the_bugs(
    gateway: tuple[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A stream with no ``[DONE]`` of its own, its answer edited by the safety step,
    then a bug closing that step at its end (`StreamEdit.close`, made to raise): the
    client's stream ends read whole on its one ``[DONE]``, the row (the 200 the client
    got) says ``internal_error`` and the bug is logged once. The row said 200 with no
    error and the connection was torn off."""
    url, store_url = gateway
    _close_fails_once(monkeypatch, StreamEdit, "a secret bug")
    prompt = "phone my plumber, a stream with no end of its own"
    raw = _stream(url, "/v1/chat/completions", "masked-undone", prompt)
    assert b"secret" not in raw
    _ends_whole(raw)
    row = _logged(store_url, prompt)
    assert (row.status, row.error) == (200, "internal_error")
    logged = [r for r in caplog.records if r.exc_info and "a secret bug" in str(r.exc_info[1])]
    assert len(logged) == 1  # once, with its traceback


def _counted_once(url: str, part: str) -> None:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    assert f'llmroute_telemetry_errors_total{{part="{part}"}} 1.0' in text


@pytest.mark.parametrize("cached", [False, True], ids=["served", "cached"])
def test_a_bug_tracing_an_answered_request_keeps_its_answer(
    cached_gateway: tuple[str, str],
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    cached: bool,
) -> None:
    """A request answered and its 200 row written (by the model, or from the cache),
    then a bug setting its span's outcome (`_outcome_attributes`, made to raise): the
    client gets its answer, the span ends all the same, and the bug is logged once and
    counted (``llmroute_telemetry_errors_total{part="span"}``). The client got a 500
    that no row or request line held."""
    url, store_url = cached_gateway
    prompt = f"hello there, a tracing bug (cached {cached})"
    body = {"model": "good", "messages": [{"role": "user", "content": prompt}]}
    if cached:
        assert httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10).status_code == 200
        wait_for("the first span", lambda: _server_spans(exporter), 10)

    def bug(record: Any) -> dict[str, Any]:
        raise RuntimeError("a secret bug")

    monkeypatch.setattr(tracing_module, "_outcome_attributes", bug)
    answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"]
    assert answer.headers["x-llmroute-cache"] == ("hit" if cached else "miss")
    wait_for("the span ended", lambda: len(_server_spans(exporter)) == 1 + cached, 10)
    logged = [r for r in caplog.records if r.exc_info and "a secret bug" in str(r.exc_info[1])]
    assert len(logged) == 1
    _counted_once(url, "span")
    row = _logged(store_url, prompt)
    assert row.status == 200


def test_a_bug_recording_a_stream_ends_its_span_and_is_counted(
    gateway: tuple[str, str],
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stream read whole, then a bug writing its record (`Recorder.finished`, made to
    raise for the stream's 200): the client has its whole answer, the request span
    ends, failed by the bug (its type), the bug is logged once and counted
    (``llmroute_telemetry_errors_total{part="record"}``), and the model's one slot is
    free. The span was never ended."""
    url, _ = gateway
    real = recorder_module.Recorder.finished

    def bug(self: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("stream") and kwargs.get("status") == 200:
            raise RuntimeError("a secret bug")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(recorder_module.Recorder, "finished", bug)
    raw = _stream(url, "/v1/chat/completions", "slow", "a stream, then a bug recording it")
    _ends_whole(raw)
    wait_for("the request span", lambda: _server_spans(exporter), 10)
    assert _server_span(exporter)["error.type"] == "RuntimeError"
    logged = [r for r in caplog.records if r.exc_info and "a secret bug" in str(r.exc_info[1])]
    assert len(logged) == 1
    _counted_once(url, "record")
    again = {"model": "slow", "messages": [{"role": "user", "content": "hello again"}]}
    assert httpx.post(f"{url}/v1/chat/completions", json=again, timeout=10).status_code == 200


def _samples(url: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples (labels, value) of the metric `name` on the gateway's ``/metrics``."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def test_an_upstream_always_breaking_after_its_end_keeps_its_breaker_closed(
    upstream: FakeUpstream,
    exporter: InMemorySpanExporter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An upstream (or a proxy before it) that cuts every stream once its ``[DONE]`` went
    out, its breaker opening after 2 failures: every answer is whole, so each stream
    ends a success for its deployment (its breaker stays closed, its streams count
    ``ok``, its call's span is no error), and the third request is answered too. Each
    break counted a failure: the breaker opened and the third request got a 503."""
    registry = REGISTRY.replace(
        "breaker: {enabled: false}", "breaker: {failures: 2, cooldown_s: 300}"
    )
    assert registry != REGISTRY
    with _serving(registry, upstream, exporter, tmp_path, monkeypatch) as (url, _):
        for n in range(3):
            _ends_whole(_stream(url, "/v1/chat/completions", "reset-after", f"whole, cut {n}"))
        ended = _samples(url, "llmroute_upstream_streams_total")
        assert ended == [({"model": "reset-after", "deployment": "fake", "outcome": "ok"}, 3.0)]
        breakers = _samples(url, "llmroute_breaker_open")
        assert [value for labels, value in breakers if labels["model"] == "reset-after"] == [0.0]
    calls = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert len(calls) == 3
    assert all(s.status.status_code is StatusCode.UNSET for s in calls)


def test_a_bug_reading_a_completions_stream_says_internal_error(
    gateway: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``/v1/completions`` stream, then a bug inside `relay` on its third piece (as
    above): the client's stream ends with an error event whose code is the bug's
    ``internal_error`` (no secret), then its one ``[DONE]``, as the chat stream says it.
    The completions front wrote every error chunk as ``upstream_error``, a gateway bug
    included."""
    url, store_url = gateway
    _fails_third(monkeypatch, StreamUsage, "observe", "a secret bug")
    prompt = f"a completions stream {' '.join(f'w{i}' for i in range(40))}"
    body = {"model": "slow", "prompt": prompt, "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=10) as answer:
        assert answer.status_code == 200
        raw = answer.read()
    assert b"secret" not in raw and raw.count(b"[DONE]") == 1
    *_, error, done, _end = raw.split(b"\n\n")
    assert done == b"data: [DONE]"
    said = json.loads(error.removeprefix(b"data: "))["error"]
    assert (said["code"], said["message"]) == ("internal_error", "internal error")
    row = _logged(store_url, prompt)
    assert (row.status, row.error) == (200, "internal_error")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_a_done_written_loosely_is_the_streams_one_end(gateway: tuple[str, str], path: str) -> None:
    """An upstream whose ``[DONE]`` has a second blank after ``data:`` (its data
    `` [DONE]``, which the provider takes for the end): the client's stream ends on one
    ``data: [DONE]``, the usage chunk it asked for before it. Read as no end, it got a
    ``[DONE]`` added after it: the upstream's, the gateway's usage chunk, a second."""
    url, store_url = gateway
    prompt = f"a stream whose end is written loosely ({path})"
    body: dict[str, Any] = {
        "model": "spaced-done",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if path == "/v1/completions":
        body["prompt"] = prompt
    else:
        body["messages"] = [{"role": "user", "content": prompt}]
    with httpx.stream("POST", f"{url}{path}", json=body, timeout=10) as answer:
        assert answer.status_code == 200
        raw = answer.read()
    _ends_whole(raw)
    *_, usage, _done, _end = raw.split(b"\n\n")
    assert json.loads(usage.removeprefix(b"data: "))["usage"]["prompt_tokens"]
    row = _logged(store_url, prompt)
    assert (row.status, row.error) == (200, None)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_client_leaving_once_its_done_came_leaves_a_whole_stream(
    gateway: tuple[str, str], exporter: InMemorySpanExporter, path: str
) -> None:
    """A client that hangs up once it read its stream's end (``[DONE]``; the Messages
    API's ``message_stop``), as SDKs may, while the upstream's body has not ended yet:
    the row and the span are a whole stream's (200, no error), its usage the reported
    one. The row said ``client_disconnected`` for an answer read whole."""
    url, store_url = gateway
    prompt = f"a whole stream, then its client leaves ({path})"
    body: dict[str, Any] = {
        "model": "hold-after",
        "stream": True,
        "messages": [{"role": "user", "content": prompt}],
    }
    end = b"data: [DONE]" if path == "/v1/chat/completions" else b"message_stop"
    if path == "/v1/messages":
        body["max_tokens"] = 500
    read = b""
    with httpx.stream("POST", f"{url}{path}", json=body, timeout=10) as answer:
        assert answer.status_code == 200
        for piece in answer.iter_raw():
            read += piece
            if end in read:
                break  # leaving: the connection is closed, the body unended
    row = _logged(store_url, prompt)
    assert (row.status, row.error, row.served_model) == (200, None, "hold-after")
    assert row.tokens_in and row.tokens_out
    wait_for("the request span", lambda: _server_spans(exporter), 10)
    (span,) = _server_spans(exporter)
    assert span.status.status_code is StatusCode.UNSET


def _done_held(app: Any, at_done: threading.Event) -> Any:
    """`app`, whose ``send`` of the body piece holding a stream's ``data: [DONE]`` waits
    for good (`at_done` set as it starts), as uvicorn's waits on a client that reads no
    more: the client leaving then cancels it there."""

    async def served(scope: Any, receive: Any, send: Any) -> None:
        async def held(message: Any) -> None:
            if b"data: [DONE]" in message.get("body", b""):
                at_done.set()
                await asyncio.Event().wait()
            await send(message)

        await app(scope, receive, held if scope["type"] == "http" else send)

    return served


def test_a_stream_whose_done_could_not_be_sent_is_cut_in_its_row_and_span(
    upstream: FakeUpstream,
    exporter: InMemorySpanExporter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client gone as its stream's ``[DONE]`` was being sent (the gateway's send of it
    cut) did not read its whole answer: its row says ``client_disconnected`` and so
    does its request span (``llmroute.error``, no span error), and the stream is not
    cached; for its deployment the stream ended whole all the same (its call's span
    ``ok``): the upstream sent all of it."""
    at_done = threading.Event()
    registry = REGISTRY + "cache: {ttl_s: 300}\n"
    prompt = "a stream whose end could not be sent"
    body = {"model": "good", "stream": True, "messages": [{"role": "user", "content": prompt}]}
    wrap = functools.partial(_done_held, at_done=at_done)
    with _serving(registry, upstream, exporter, tmp_path, monkeypatch, wrap) as (url, store_url):
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=10) as answer:
            assert answer.status_code == 200
            assert at_done.wait(10)
        row = _logged(store_url, prompt)
        assert (row.status, row.error) == (200, "client_disconnected")
        wait_for("the request span", lambda: _server_spans(exporter), 10)
        (span,) = _server_spans(exporter)
        assert span.status.status_code is StatusCode.UNSET
        assert dict(span.attributes or {})["llmroute.error"] == "client_disconnected"
        (call,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
        assert call.status.status_code is StatusCode.UNSET
        assert dict(call.attributes or {})["llmroute.stream.outcome"] == "ok"
        at_done.clear()
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=10) as again:
            assert again.headers["x-llmroute-cache"] == "miss"


def _traced_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug setting a request span's outcome: `_outcome_attributes` made to raise."""

    def bug(record: Any) -> dict[str, Any]:
        raise RuntimeError("a secret bug")

    monkeypatch.setattr(tracing_module, "_outcome_attributes", bug)


def _rows(store_url: str, prompt: str) -> list[LoggedDecision]:
    """The rows of `prompt`, once one was written (and the writer flushed again)."""
    _logged(store_url, prompt)
    store = open_store(store_url)
    try:
        return [d for d in store.decisions(0) if d.prompt == prompt]
    finally:
        store.close()


def _error_of(answer: httpx.Response) -> tuple[int, str, str | None]:
    """An error answer's status, its error's type and code (OpenAI's or Anthropic's)."""
    error = answer.json()["error"]
    return answer.status_code, error["type"], error.get("code")


@pytest.mark.parametrize(
    ("path", "model", "status"),
    [
        ("/v1/chat/completions", "refused", 400),
        ("/v1/chat/completions", "exhausted", 502),
        ("/v1/messages", "refused", 400),
    ],
    ids=["upstream-4xx", "fallbacks-failed", "messages-4xx"],
)
def test_a_bug_tracing_an_error_keeps_the_error(
    gateway: tuple[str, str],
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    path: str,
    model: str,
    status: int,
) -> None:
    """A request that ends in an error (the upstream's 4xx, a 502 once its fallback
    failed too, through chat or the Messages front), its row written, then a bug
    setting its span's outcome: the client gets the error it gets with no bug, one row
    holds it, the span ends, and the bug is logged once and counted
    (``llmroute_telemetry_errors_total{part="span"}``). The client got a 500."""
    url, store_url = gateway

    def ask(prompt: str) -> httpx.Response:
        body = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": prompt}]}
        return httpx.post(f"{url}{path}", json=body, timeout=10)

    expected = _error_of(ask(f"reconcile the ledgers, no bug ({path})"))
    assert expected[0] == status
    wait_for("the first span", lambda: len(_server_spans(exporter)) == 1, 10)
    _traced_wrong(monkeypatch)
    prompt = f"reconcile the ledgers, a tracing bug ({path})"
    assert _error_of(ask(prompt)) == expected
    wait_for("the span ended", lambda: len(_server_spans(exporter)) == 2, 10)
    logged = [r for r in caplog.records if r.exc_info and "a secret bug" in str(r.exc_info[1])]
    assert len(logged) == 1
    _counted_once(url, "span")
    assert [row.status for row in _rows(store_url, prompt)] == [status]


@pytest.mark.parametrize("stream", [False, True])
def test_a_bug_tracing_a_client_cut_keeps_its_row(
    gateway: tuple[str, str],
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    stream: bool,
) -> None:
    """A client that hung up before its answer, then a bug setting its span's outcome:
    its one 499 row is written, the span ends, and the bug is logged once and counted,
    not the request's (a 500 of its own, logged as a bug of the request)."""
    url, store_url = gateway
    _traced_wrong(monkeypatch)
    prompt = f"a client gone, then a tracing bug (streamed {stream})"
    body = {"model": "hung", "stream": stream, "messages": [{"role": "user", "content": prompt}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/chat/completions", json=body, timeout=1.0)
    wait_for("the span ended", lambda: _server_spans(exporter), 10)
    assert [(row.status, row.error) for row in _rows(store_url, prompt)] == [
        (499, "client_disconnected")
    ]
    logged = [r for r in caplog.records if r.exc_info and "a secret bug" in str(r.exc_info[1])]
    assert len(logged) == 1
    _counted_once(url, "span")
    assert not _samples(url, "llmroute_api_errors_total")  # no 500 of its own


def _fails_at_break(monkeypatch: pytest.MonkeyPatch, cls: Any, name: str) -> None:
    """`cls.name` (a stream step fed piece by piece) made to raise on the first piece
    holding relay's broke-off error chunk: a bug thrown into relay there."""
    real = getattr(cls, name)
    raised = False

    def bug(self: Any, piece: Any) -> Any:
        nonlocal raised
        if not raised and "broke off" in str(piece):
            raised = True
            raise RuntimeError("a secret bug at the break")
        return real(self, piece)

    monkeypatch.setattr(cls, name, bug)


@pytest.mark.parametrize(
    ("where", "path"), [("safety", "/v1/chat/completions"), ("front", "/v1/messages")]
)
def test_a_bug_at_relays_broke_off_chunk_is_recorded_as_the_bugs(
    gateway: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    where: str,
    path: str,
) -> None:
    """An upstream stream that broke after its first word, then a bug as relay's
    broke-off error chunk went on (the safety step, `StreamEdit.feed`; the Messages
    front's translator, made to raise on it): the row is the 200 the client got with
    ``internal_error``, as for every other bug thrown into relay, the client's stream
    ends with its API's error event, and the bug is logged once. The row said
    ``stream_interrupted``: the bug was recorded as the upstream's break."""
    url, store_url = gateway
    if where == "safety":
        _fails_at_break(monkeypatch, StreamEdit, "feed")
    else:
        _fails_at_break(monkeypatch, messages_convert.StreamTranslator, "_chunk")
    prompt = f"ring my landlord, then a break ({where}, {path})"
    raw = _stream(url, path, "masked-cut" if where == "safety" else "cut-mid", prompt)
    assert b"secret" not in raw and raw.endswith(_ENDINGS[path])
    row = _logged(store_url, prompt)
    assert (row.status, row.error) == (200, "internal_error")
    logged = [r for r in caplog.records if r.exc_info and "a secret bug" in str(r.exc_info[1])]
    assert len(logged) == 1  # once, with its traceback


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_a_stream_of_several_choices_cut_before_each_finished_is_interrupted(
    gateway: tuple[str, str], path: str
) -> None:
    """A stream asked for two choices (``n``: 2) whose upstream ended its body cleanly
    after choice 0's finish reason, choice 1 still streaming, with no ``[DONE]``: the
    client's stream ends as one broken off ends (the error chunk, then ``[DONE]``) and
    the row says ``stream_interrupted``, as a single choice cut before its finish reason
    is. It got a ``[DONE]`` and a whole stream's row: choice 1 taken for whole."""
    url, store_url = gateway
    prompt = f"two answers, the second cut ({path})"
    body: dict[str, Any] = {"model": "two-cut", "stream": True, "n": 2}
    if path == "/v1/completions":
        body["prompt"] = prompt
    else:
        body["messages"] = [{"role": "user", "content": prompt}]
    with httpx.stream("POST", f"{url}{path}", json=body, timeout=10) as answer:
        assert answer.status_code == 200
        raw = answer.read()
    assert b"the upstream stream broke off" in raw and raw.endswith(b"data: [DONE]\n\n")
    assert raw.count(b"[DONE]") == 1
    row = _logged(store_url, prompt)
    assert (row.status, row.error) == (200, "stream_interrupted")


def test_a_stream_of_several_choices_each_finished_with_no_done_is_whole(
    gateway: tuple[str, str],
) -> None:
    """Two choices, each with its finish reason (choice 0's last), no ``[DONE]``: whole,
    the gateway's ``[DONE]`` after the usage chunk asked for, a whole stream's row."""
    url, store_url = gateway
    prompt = "two answers, both whole"
    raw = _stream(
        url,
        "/v1/chat/completions",
        "two-undone",
        prompt,
        n=2,
        stream_options={"include_usage": True},
    )
    _ends_whole(raw)
    assert b'"index": 1' in raw and b'"usage"' in raw
    row = _logged(store_url, prompt)
    assert (row.status, row.error) == (200, None)


def _done_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The OpenAI-compatible provider's streams made to end with no ``[DONE]``: a provider
    breaking its protocol (each ends its stream with one)."""
    real = OpenAICompatProvider.stream

    def without_done(self: Any, model: str, body: dict[str, Any], **kwargs: Any) -> Any:
        async def events() -> Any:
            async with contextlib.aclosing(real(self, model, body, **kwargs)) as inner:
                async for event in inner:
                    if not event.startswith(b"data: [DONE]"):
                        yield event

        return events()

    monkeypatch.setattr(OpenAICompatProvider, "stream", without_done)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_stream_a_provider_ends_with_no_done_is_interrupted(
    gateway: tuple[str, str],
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
) -> None:
    """A provider whose stream ended with no ``[DONE]`` (its finish reason sent): nothing
    says the answer is whole, so the client's stream ends as a broken-off one ends (the
    error chunk and ``[DONE]``; a front's: its API's error event) and the row says
    ``stream_interrupted``; for its deployment too the stream broke (its call's span an
    error). The client's chat stream ended with no ``[DONE]``, a front's as a whole
    answer, and the row was a whole stream's (200, no error)."""
    url, store_url = gateway
    _done_dropped(monkeypatch)
    prompt = f"a provider with no end ({path})"
    raw = _stream(url, path, "good", prompt)
    if path == "/v1/chat/completions":
        assert raw.endswith(b'"code": "upstream_error"}}\n\ndata: [DONE]\n\n')
        assert raw.count(b"[DONE]") == 1
    else:
        assert raw.endswith(b'"message": "the upstream stream broke off"}}\n\n')
        assert b"message_stop" not in raw
    row = _logged(store_url, prompt)
    assert (row.status, row.error, row.served_model) == (200, "stream_interrupted", "good")
    wait_for("the request span", lambda: _server_spans(exporter), 10)
    (call,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert call.status.status_code is StatusCode.ERROR  # for its deployment too: broken
    assert dict(call.attributes or {})["llmroute.stream.outcome"] == "error"
