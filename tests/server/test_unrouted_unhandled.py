"""A bug (an exception no handler expected) inside an ``/v1/embeddings`` or
``/v1/rerank`` request is answered, logged and counted as a chat request's is: one
OpenAI-style 500 ``internal_error`` (never a traceback) carrying the id of the request's
decision log row, that row (500 ``internal_error``), the request counted in
``llmroute_requests_total`` and timed in ``llmroute_request_seconds{outcome="error"}``,
and its request span ended as an error. The converted fronts (``/v1/completions``,
Messages, Responses) already went through chat's handling: checked alongside.

A gateway in a thread (`serve_in_thread`), the echo provider behind it, a SQLite decision
log, an in-memory span exporter; the bug is one of our pure functions made to raise
(the pricing of an answer, the dispatcher's chat call)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from batch_runs import one_failed_line
from gateway_proc import serve_in_thread, wait_for
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from llmroute.dispatch import Dispatcher, Plan, Served
from llmroute.dispatch import dispatcher as dispatcher_module
from llmroute.dispatch import usage as usage_module
from llmroute.dispatch.rerank import priced_rerank
from llmroute.dispatch.usage import StreamUsage, priced_embedding
from llmroute.errors import TelemetryError
from llmroute.registry import parse_registry
from llmroute.server import app as app_module
from llmroute.server import embeddings as embeddings_module
from llmroute.telemetry import recorder as recorder_module
from llmroute.telemetry import tracing as tracing_module
from llmroute.telemetry.record import LoggedDecision
from llmroute.telemetry.store import open_store
from llmroute.telemetry.tracing import Tracing

REGISTRY = """
encoder: builtin:static
providers:
  echo: {kind: echo}
models:
  small: {provider: echo, model: echo-small}
  emb: {provider: echo, model: echo-emb, kind: embedding}
  rr: {provider: echo, model: echo-rr, kind: rerank}
routes:
  - {name: chat, examples: [hello there], target: small}
default: {target: small}
batches: {concurrency: 1}
telemetry: {flush_seconds: 0.05}
"""
INTERNAL = {
    "error": {
        "message": "internal server error",
        "type": "server_error",
        "param": None,
        "code": "internal_error",
    }
}
EMBED = {"model": "emb", "input": ["hello there"]}
RERANK = {"model": "rr", "query": "which one?", "documents": ["this one", "that one"]}


def _priced_wrong(*args: Any) -> Any:
    raise RuntimeError("a bug pricing the answer")


async def _fails_to_dispatch(self: Dispatcher, plan: Plan, body: dict[str, Any]) -> Served:
    raise RuntimeError("a bug once the request is routed")


@dataclass(frozen=True)
class Gateway:
    url: str
    log_url: str
    exporter: InMemorySpanExporter


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    """A gateway whose embeddings and rerank answers fail to be priced (after the echo
    model answered), and whose chat calls fail once routed: bugs, not upstream errors."""
    monkeypatch.setattr(dispatcher_module, "priced_embedding", _priced_wrong)
    monkeypatch.setattr(dispatcher_module, "priced_rerank", _priced_wrong)
    monkeypatch.setattr(Dispatcher, "complete", _fails_to_dispatch)
    yield from _serving(tmp_path, monkeypatch)


async def _fails_to_write(data: Any) -> bytes:
    raise RuntimeError("a bug writing the answer")


@pytest.fixture
def writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    """A gateway whose embeddings and rerank answers are priced and logged, and whose
    writing them out for the client is a bug."""
    monkeypatch.setattr(embeddings_module, "answer_json", _fails_to_write)
    yield from _serving(tmp_path, monkeypatch)


def _serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    log_url = f"sqlite:///{tmp_path / 'log.db'}"
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", log_url)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(app_module, "tracing_from_env", lambda: Tracing(provider))
    registry = tmp_path / "registry.yaml"
    registry.write_text(REGISTRY)
    try:
        with serve_in_thread(app_module.create_app(str(registry))) as url:
            yield Gateway(url, log_url, exporter)
    finally:
        provider.shutdown()


def _rows(gateway: Gateway, n: int) -> dict[str, LoggedDecision]:
    """The decision log's rows by id, once `n` are written."""
    store = open_store(gateway.log_url)
    try:

        def written() -> bool:
            try:
                return store.count_decisions() >= n
            except TelemetryError:  # the writer has not created the tables yet
                return False

        wait_for(f"{n} rows in the decision log", written, 10)
        return {row.id: row for row in store.decisions(0)}
    finally:
        store.close()


def _samples(gateway: Gateway) -> list[tuple[str, Mapping[str, str], float]]:
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def _value(samples: list[tuple[str, Mapping[str, str], float]], name: str, **labels: str) -> float:
    return sum(v for n, ls, v in samples if n == name and labels.items() <= ls.items())


@pytest.mark.parametrize(
    ("path", "body", "api", "route", "model"),
    [
        ("/v1/embeddings", EMBED, "embeddings", "(embeddings)", "emb"),
        ("/v1/rerank", RERANK, "rerank", "(rerank)", "rr"),
    ],
)
def test_a_bug_in_an_unrouted_request_is_logged_counted_and_traced_as_a_chats(
    gateway: Gateway,
    caplog: pytest.LogCaptureFixture,
    path: str,
    body: dict[str, Any],
    api: str,
    route: str,
    model: str,
) -> None:
    """The 500 is OpenAI's error JSON and carries the id of the request's row (500
    ``internal_error``), which the error's log record names too, the request's only
    request line; the request is counted (``requests_total``, ``request_seconds`` by
    outcome ``error``, not again as an ``api_errors_total``) and its span is an error
    with its row's 500 (it had the exception alone). It was in no row, counted only as
    an API error with no latency, and its answer carried an id of its own."""
    caplog.set_level(logging.INFO)
    answer = httpx.post(f"{gateway.url}{path}", json=body, timeout=10)
    assert answer.status_code == 500 and answer.json() == INTERNAL
    request_id = answer.headers["x-request-id"]

    row = _rows(gateway, 1)[request_id]
    assert (row.api, row.route, row.model) == (api, route, model)
    assert (row.status, row.error, row.served_model) == (500, "internal_error", None)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"unhandled error on POST {path} (request {request_id})"]
    lines = [r.__dict__["request"] for r in caplog.records if r.name == "llmroute.requests"]
    assert [line.get("decision_id", line.get("request_id")) for line in lines] == [request_id]

    samples = _samples(gateway)
    assert _value(samples, "llmroute_requests_total", route=route, model=model, status="500") == 1
    seconds = "llmroute_request_seconds_count"
    assert _value(samples, seconds, model=model, outcome="error") == 1
    assert _value(samples, "llmroute_api_errors_total", api=api) == 0  # counted once

    (span,) = [s for s in gateway.exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert span.name == f"{api} {model}"
    assert (span.attributes or {})["llmroute.decision_id"] == request_id
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "RuntimeError"
    assert (span.attributes or {})["http.response.status_code"] == 500  # as chat's


def test_a_bug_after_its_row_was_written_is_a_line_and_an_error_of_its_own(
    writing: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug once the row was written (200: the model answered), writing the answer
    out: the 500 carries the row's id, and is a request line naming it with the status
    the client got, and an ``api_errors_total`` (the row counted the 200), as chat's is.
    Its id was one of its own, which named no row."""
    caplog.set_level(logging.INFO)
    answer = httpx.post(f"{writing.url}/v1/embeddings", json=EMBED, timeout=10)
    assert answer.status_code == 500 and answer.json() == INTERNAL
    request_id = answer.headers["x-request-id"]
    row = _rows(writing, 1)[request_id]
    assert (row.status, row.error, row.served_model) == (200, None, "emb")
    lines = [r.__dict__["request"] for r in caplog.records if r.name == "llmroute.requests"]
    (errored,) = [line for line in lines if line.get("request_id") == request_id]
    assert (errored["status"], errored["error"]) == (500, "internal_error")
    samples = _samples(writing)
    assert _value(samples, "llmroute_requests_total", route="(embeddings)", status="200") == 1
    assert _value(samples, "llmroute_api_errors_total", api="embeddings", status="500") == 1


def test_a_batch_embeddings_lines_bug_names_its_row(gateway: Gateway) -> None:
    """A batch's embeddings line that a bug fails: its answer's ``request_id`` is its
    row's (500 ``internal_error``); it was a fresh id, and the line had no row."""
    line = {"custom_id": "one", "method": "POST", "url": "/v1/embeddings", "body": EMBED}
    answer = one_failed_line(gateway.url, line, "/v1/embeddings")
    assert answer["response"]["status_code"] == 500
    row = _rows(gateway, 1)[answer["response"]["request_id"]]
    assert (row.api, row.status, row.error) == ("embeddings", 500, "internal_error")


FRONTS = [
    (
        "/v1/chat/completions",
        {"model": "auto", "messages": [{"role": "user", "content": "hello there"}]},
        "chat",
    ),
    ("/v1/completions", {"model": "auto", "prompt": "hello there"}, "completions"),
    (
        "/v1/messages",
        {"model": "auto", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
        "messages",
    ),
    ("/v1/responses", {"model": "auto", "input": "hello there", "store": False}, "responses"),
]


@pytest.mark.parametrize(("path", "body", "api"), FRONTS, ids=[f[2] for f in FRONTS])
def test_a_bug_once_a_fronts_request_is_routed_is_logged_and_counted(
    gateway: Gateway, path: str, body: dict[str, Any], api: str
) -> None:
    """Chat and the fronts converted to it (completions, Messages, Responses): a bug
    once routed is a 500 in the front's error shape with the decision's id, the
    decision's row (500 ``internal_error``), counted and timed as an error, its span an
    error. (Already so: a guard for the same handling as embeddings and rerank.)"""
    answer = httpx.post(f"{gateway.url}{path}", json=body, timeout=10)
    assert answer.status_code == 500
    error = answer.json()["error"]
    assert error.get("code", error["type"]) in ("internal_error", "api_error")
    assert "Traceback" not in answer.text
    request_id = answer.headers["x-request-id"]
    row = _rows(gateway, 1)[request_id]
    assert (row.api, row.status, row.error) == (api, 500, "internal_error")
    samples = _samples(gateway)
    assert _value(samples, "llmroute_requests_total", model="small", status="500") == 1
    seconds = "llmroute_request_seconds_count"
    assert _value(samples, seconds, model="small", outcome="error") == 1
    (span,) = [s for s in gateway.exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert span.status.status_code is StatusCode.ERROR


PRICED = """
encoder: builtin:static
providers:
  echo: {kind: echo}
models:
  small:
    provider: echo
    model: echo-small
    price: {input: 1000000, output: 1000000}
    budget: {usd: 1000, period: day, hard: true}
  emb:
    provider: echo
    model: echo-emb
    kind: embedding
    price: {input: 1000000}
    budget: {usd: 1000, period: day, hard: true}
  rr:
    provider: echo
    model: echo-rr
    kind: rerank
    price: {input: 1000000}
    budget: {usd: 1000, period: day, hard: true}
routes:
  - {name: chat, examples: [hello there], target: small}
default: {target: small}
auth:
  keys:
    - {name: team, key_env: LLMROUTE_TEST_BUG_SPEND_KEY, budget: {usd: 1000, period: day}}
  public_metrics: true
telemetry: {flush_seconds: 0.05}
"""
SPEND_KEY = "sk-unrouted-bug-spend-0123456789"
PRICERS = {"priced_embedding": priced_embedding, "priced_rerank": priced_rerank}


def _priced_once_answered(pricer: Any) -> Any:
    """`pricer` failing on an answer (a bug reading its usage), itself on no answer (the
    estimate of a call whose answer was not priced)."""

    def price(data: dict[str, Any], body: Any, price: Any, **options: Any) -> Any:
        if data:
            raise RuntimeError("a bug pricing the answer")
        return pricer(data, body, price, **options)

    return price


@pytest.fixture
def charged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    """A gateway with priced chat, embedding and rerank models (hard budgets), a key
    with a budget, and answers whose usage a bug fails to read."""
    for name in ("priced", "priced_embedding", "priced_rerank"):
        real = getattr(dispatcher_module, name)
        monkeypatch.setattr(dispatcher_module, name, _priced_once_answered(real))
    monkeypatch.setenv("LLMROUTE_TEST_BUG_SPEND_KEY", SPEND_KEY)
    log_url = f"sqlite:///{tmp_path / 'log.db'}"
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", log_url)
    registry = tmp_path / "registry.yaml"
    registry.write_text(PRICED)
    with serve_in_thread(app_module.create_app(str(registry))) as url:
        yield Gateway(url, log_url, InMemorySpanExporter())


@pytest.mark.parametrize(
    ("path", "body", "model", "pricer"),
    [
        ("/v1/embeddings", EMBED, "emb", "priced_embedding"),
        ("/v1/rerank", RERANK, "rr", "priced_rerank"),
    ],
)
def test_a_bug_pricing_an_answer_still_charges_the_call(
    charged: Gateway, path: str, body: dict[str, Any], model: str, pricer: str
) -> None:
    """The upstream answered, then a bug failed to price its answer: the call is
    charged its input, counted and marked estimated (as a cut call is), to the model's
    hard budget (its hold settled by it), the key's budget and the request's row. It
    was charged to neither budget (the hold given back) and its row had no cost."""
    price = parse_registry(PRICED).registry.models[model].price
    sent = {k: v for k, v in body.items() if k != "model"}
    estimate = PRICERS[pricer]({}, sent, price)
    assert estimate.cost_usd > 0 and estimate.estimated

    headers = {"authorization": f"Bearer {SPEND_KEY}"}
    before = _key_spent(charged, headers)
    spent = _model_spent(charged, model)
    answer = httpx.post(f"{charged.url}{path}", json=body, headers=headers, timeout=10)
    assert answer.status_code == 500 and answer.json() == INTERNAL

    row = _rows(charged, 1)[answer.headers["x-request-id"]]
    assert (row.status, row.error) == (500, "internal_error")
    assert row.cost_usd == pytest.approx(estimate.cost_usd)
    assert (row.tokens_in, row.usage_estimated) == (estimate.prompt_tokens, True)
    assert _key_spent(charged, headers) - before == pytest.approx(estimate.cost_usd)
    settled = _model_spent(charged, model) - spent
    assert settled == pytest.approx(estimate.cost_usd)  # the hold settled by it


def _key_spent(gateway: Gateway, headers: dict[str, str]) -> float:
    """What the key has spent this period (the in-process store outlives a gateway)."""
    budget = httpx.get(f"{gateway.url}/v1/key", headers=headers, timeout=10).json()["budget"]
    return float(budget["spent_usd"])


def test_a_bug_pricing_a_chat_answer_still_charges_its_prompt(charged: Gateway) -> None:
    """A chat completion the model answered, then a bug failed to price: its prompt is
    charged, counted and marked estimated, to the model's hard budget (its hold settled
    by it), the key's budget and the decision's 500 row, as an embeddings call's is. It
    was charged to neither budget and its row had no cost."""
    headers = {"authorization": f"Bearer {SPEND_KEY}"}
    before = _key_spent(charged, headers)
    spent = _model_spent(charged, "small")
    body = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}]}
    answer = httpx.post(
        f"{charged.url}/v1/chat/completions", json=body, headers=headers, timeout=10
    )
    assert answer.status_code == 500
    row = _rows(charged, 1)[answer.headers["x-request-id"]]
    assert (row.status, row.error, row.model) == (500, "internal_error", "small")
    assert row.cost_usd is not None and row.cost_usd > 0 and row.usage_estimated
    assert _key_spent(charged, headers) - before == pytest.approx(row.cost_usd)
    settled = _model_spent(charged, "small") - spent
    assert settled == pytest.approx(row.cost_usd)  # the hold settled by it


def _stream_priced_wrong(real: Any) -> Any:
    """`usage.priced` failing on what a stream answered (its usage chunk, its streamed
    text), itself on its prompt alone (the estimate of a call whose answer was not
    priced)."""

    def price(data: dict[str, Any], body: Any, price: Any, **options: Any) -> Any:
        if data or options.get("completion"):
            raise RuntimeError("a bug pricing the stream")
        return real(data, body, price, **options)

    return price


def _finish_wrong(self: StreamUsage) -> Any:
    raise RuntimeError("a bug pricing the stream")


@pytest.mark.parametrize("where", ["chunk", "end"])
def test_a_bug_pricing_a_stream_still_charges_its_prompt(
    charged: Gateway, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A chat stream the model answered, then a bug failed to price it (`StreamUsage`):
    its usage chunk, before ``[DONE]`` (the stream ends with the error chunk), or its
    usage at its end, after ``[DONE]`` went out (nothing more is sent). Its prompt is
    charged, counted and marked estimated, to the model's hard budget (its hold settled
    by it), the key's budget and the row (the 200 the client got, ``internal_error``),
    as a completion's is. It was charged to neither budget and its row had no cost."""
    if where == "chunk":
        monkeypatch.setattr(usage_module, "priced", _stream_priced_wrong(usage_module.priced))
    else:
        monkeypatch.setattr(StreamUsage, "finish", _finish_wrong)
    headers = {"authorization": f"Bearer {SPEND_KEY}"}
    before = _key_spent(charged, headers)
    spent = _model_spent(charged, "small")
    body = {
        "model": "auto",
        "messages": [{"role": "user", "content": "hello there"}],
        "stream": True,
    }
    with httpx.stream(
        "POST", f"{charged.url}/v1/chat/completions", json=body, headers=headers, timeout=10
    ) as answer:
        assert answer.status_code == 200
        raw = answer.read()
    assert raw.endswith(b"data: [DONE]\n\n") and b"pricing" not in raw
    assert (b'"code": "internal_error"' in raw) is (where == "chunk")
    assert raw.count(b"[DONE]") == 1
    row = _rows(charged, 1)[answer.headers["x-request-id"]]
    assert (row.status, row.error, row.model) == (200, "internal_error", "small")
    assert row.cost_usd is not None and row.cost_usd > 0 and row.usage_estimated
    assert _key_spent(charged, headers) - before == pytest.approx(row.cost_usd)
    settled = _model_spent(charged, "small") - spent
    assert settled == pytest.approx(row.cost_usd)  # the hold settled by it


def _model_spent(gateway: Gateway, model: str) -> float:
    """What `model` has spent this period, with the holds of calls in flight (the
    in-process store outlives a gateway: 0 before its first charge)."""
    return sum(
        value
        for name, labels, value in _samples(gateway)
        if name == "llmroute_budget_spent_usd"
        and labels.get("name") == model
        and labels.get("kind") == "model"
    )


def _fails_to_log(scope: Any) -> None:
    raise RuntimeError("a bug logging the answer")


@pytest.fixture
def logging_bug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    """A gateway whose embeddings answers are priced, and whose making of their rows
    is a bug."""
    monkeypatch.setattr(embeddings_module, "api_key_of", _fails_to_log)
    yield from _serving(tmp_path, monkeypatch)


def test_a_bug_while_its_row_is_written_is_a_line_and_a_failed_span(
    logging_bug: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug once the model answered, as its row is made (the key it charges,
    `api_key_of`, made to raise there): the 500 is a request line naming the answer's
    id and an ``api_errors_total``, and its request span ends as failed. The span was
    never ended, and the 500 was in no line (its id named a row never written)."""
    caplog.set_level(logging.INFO)
    gateway = logging_bug
    answer = httpx.post(f"{gateway.url}/v1/embeddings", json=EMBED, timeout=10)
    assert answer.status_code == 500 and answer.json() == INTERNAL
    request_id = answer.headers["x-request-id"]
    lines = [r.__dict__["request"] for r in caplog.records if r.name == "llmroute.requests"]
    (errored,) = [line for line in lines if line.get("request_id") == request_id]
    assert (errored["status"], errored["error"]) == (500, "internal_error")
    samples = _samples(gateway)
    assert _value(samples, "llmroute_api_errors_total", api="embeddings", status="500") == 1
    (span,) = [s for s in gateway.exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "RuntimeError"


def _fails_to_line(record: Any) -> None:
    raise RuntimeError("a bug in the request line")


@pytest.fixture
def line_bug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    """A gateway whose writing of request lines is a bug."""
    monkeypatch.setattr(recorder_module, "log_request", _fails_to_line)
    yield from _serving(tmp_path, monkeypatch)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/embeddings", EMBED),
        ("/v1/rerank", RERANK),
        ("/v1/route", {"messages": [{"role": "user", "content": "hello there"}]}),
    ],
)
def test_a_bug_in_a_request_line_keeps_the_answer_and_its_one_row(
    line_bug: Gateway, path: str, body: dict[str, Any]
) -> None:
    """A bug writing the request line (`log_request`, made to raise) of an embeddings or
    rerank request, or of a decision that dispatched nothing (``/v1/route``), once its
    row was offered: logged and swallowed, as a chat's is, so the client gets its answer
    and the request its one row. It was a 500, though its 200 row was written."""
    answer = httpx.post(f"{line_bug.url}{path}", json=body, timeout=10)
    assert answer.status_code == 200
    rows = _rows(line_bug, 1)
    assert [row.status for row in rows.values()] == [200]


def _fails_to_trace(record: Any) -> dict[str, Any]:
    raise RuntimeError("a secret bug tracing the answer")


@pytest.fixture
def tracing_bug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    """A gateway whose setting of a request span's outcome from its row is a bug."""
    monkeypatch.setattr(tracing_module, "_outcome_attributes", _fails_to_trace)
    yield from _serving(tmp_path, monkeypatch)


@pytest.mark.parametrize(("path", "body"), [("/v1/embeddings", EMBED), ("/v1/rerank", RERANK)])
def test_a_bug_tracing_an_answered_unrouted_request_keeps_its_answer(
    tracing_bug: Gateway, caplog: pytest.LogCaptureFixture, path: str, body: dict[str, Any]
) -> None:
    """An embeddings or rerank request answered and its 200 row written, then a bug
    setting its span's outcome (`_outcome_attributes`, made to raise), as a chat's is:
    the client gets its answer, the span ends, and the bug is logged once and counted
    (``llmroute_telemetry_errors_total{part="span"}``), not an API error. The client got
    a 500 for an answer its 200 row held."""
    gateway = tracing_bug
    answer = httpx.post(f"{gateway.url}{path}", json=body, timeout=10)
    assert answer.status_code == 200 and answer.json()["model"]
    rows = _rows(gateway, 1)
    assert [row.status for row in rows.values()] == [200]
    logged = [r for r in caplog.records if r.exc_info and "a secret bug" in str(r.exc_info[1])]
    assert len(logged) == 1
    samples = _samples(gateway)
    assert _value(samples, "llmroute_telemetry_errors_total", part="span") == 1
    assert _value(samples, "llmroute_api_errors_total") == 0
    wait_for("the span ended", lambda: _server_spans(gateway), 10)


def _server_spans(gateway: Gateway) -> list[Any]:
    return [s for s in gateway.exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
