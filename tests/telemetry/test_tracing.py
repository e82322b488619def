"""OpenTelemetry traces: the request span and its decision-layer children, and a span per
upstream attempt from a real `Dispatcher` against a real fake upstream, with the GenAI
semantic-convention attributes, and the trace context read from a client and sent
upstream. Spans go to an in-memory exporter on a provider of the test's own (the global
provider is never touched); the gateway tests run `llmroute serve` as a subprocess, or
`create_app` in a thread when they read the in-memory exporter."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_upstream import FakeUpstream, fake_upstream
from gateway_proc import ECHO_ONLY, serve_in_thread, serve_text
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from stall_proxy import silent_server

from llmroute.decision import (
    Decision,
    LayerSignal,
    Outcome,
    ReasoningOutcome,
    Verdict,
    new_decision_id,
)
from llmroute.dispatch import Dispatcher, Plan
from llmroute.dispatch.dispatcher import Observers
from llmroute.errors import ProviderError
from llmroute.providers import build_providers
from llmroute.registry import parse_registry
from llmroute.registry.schema import Registry
from llmroute.server import app as app_module
from llmroute.telemetry import tracing as tracing_module
from llmroute.telemetry.metrics import GatewayMetrics
from llmroute.telemetry.record import DecisionRecord
from llmroute.telemetry.tracing import NO_TRACE, Tracing, tracing_from_env


def decision(model: str = "a", route: str = "r") -> Decision:
    verdict = Verdict(route, model, 0.875, "intent match", margin=0.25)
    return Decision(
        id=new_decision_id(),
        route=route,
        model=model,
        layer="intent",
        confidence=0.875,
        margin=0.25,
        reason="intent match",
        registry_version="v1",
        signals=(
            LayerSignal("rules", Outcome.PASSED, 20.0),
            LayerSignal("intent", Outcome.DECIDED, 300.0, verdict=verdict),
            LayerSignal("difficulty", Outcome.SKIPPED, 0.0),
        ),
        encode_us=500.0,
        total_us=850.0,
        reasoning=ReasoningOutcome(False, "short"),
    )


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracing(exporter: InMemorySpanExporter) -> Iterator[Tracing]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Tracing(provider)
    provider.shutdown()


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(span)
    return out


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_disabled_tracing_does_nothing() -> None:
    off = Tracing()
    assert not off.enabled and off.observer is None
    trace = off.start_request(decision())
    assert trace is NO_TRACE
    with trace.activate():
        pass
    trace.finish(None)
    with off.request_span(decision()) as again:
        assert again is NO_TRACE


@pytest.mark.parametrize(
    ("env", "enabled"),
    [
        ({}, False),
        ({"LLMROUTE_OTEL": "0", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, False),
        ({"OTEL_TRACES_EXPORTER": "none", "LLMROUTE_OTEL": "1"}, False),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, False),
        ({"LLMROUTE_OTEL": "true", "OTEL_TRACES_EXPORTER": "console"}, True),
        ({"LLMROUTE_OTEL": "1"}, True),  # OTLP/HTTP, the default exporter
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, True),
    ],
)
def test_enabled_from_the_environment(
    env: dict[str, str], enabled: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    tracing = tracing_from_env(env)
    try:
        assert tracing.enabled is enabled
        assert ("not supported" in caplog.text) is (env.get("OTEL_TRACES_EXPORTER") == "zipkin")
    finally:
        tracing.shutdown()  # nothing was recorded: nothing is exported


def test_a_shutdown_against_a_collector_that_never_answers_ends_within_its_bound_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The SDK's shutdown waited on the export of what was pending for as long as the
    exporter's timeout (here 5 s; 10 s by default, per batch, and 30 s in all), past the
    gateway's stop deadline and its supervisor's kill."""
    with silent_server() as collector:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "5")
        tracing = tracing_from_env()
        for _ in range(3):  # a request span and 3 layers' each
            tracing.start_request(decision()).finish()
        with caplog.at_level(logging.WARNING, logger="llmroute.telemetry"):
            assert tracing.shutdown(0.3) is False  # its exporter still waiting: left
            assert tracing.shutdown(0.3) is True  # once
    said = [r.getMessage() for r in caplog.records if "not exported within" in r.getMessage()]
    assert said == [
        "stopping: tracing: 12 span(s) not exported within 0.3 s (the collector is slow or "
        "not answering): lost as the process exits"
    ], caplog.text


def test_request_span_with_a_span_per_layer(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    d = decision()
    trace = tracing.start_request(d)
    trace.finish(
        DecisionRecord(
            d,
            ts=0.0,
            status=200,
            latency_ms=12.0,
            served_model="a",
            deployment="up",
            tokens_in=11,
            tokens_out=7,
            cost_usd=0.001,
        )
    )
    trace.finish(None)  # a second finish does nothing
    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {
        "chat a",
        "llmroute.encode",
        "llmroute.layer.rules",
        "llmroute.layer.intent",
    }
    request = spans["chat a"][0]
    assert request.kind is SpanKind.SERVER
    assert attrs(request) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "a",
        "gen_ai.response.model": "a",
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 7,
        "llmroute.route": "r",
        "llmroute.decision_id": d.id,
        "llmroute.layer": "intent",
        "llmroute.confidence": 0.875,
        "llmroute.margin": 0.25,
        "llmroute.registry_version": "v1",
        "llmroute.decision_us": 850.0,
        "llmroute.reasoning.needed": False,
        "llmroute.deployment": "up",
        "llmroute.cost_usd": 0.001,
        "http.response.status_code": 200,
    }
    assert request.status.status_code is StatusCode.UNSET
    encode = spans["llmroute.encode"][0]
    rules = spans["llmroute.layer.rules"][0]
    intent = spans["llmroute.layer.intent"][0]
    assert request.context is not None and request.start_time is not None
    for child in (encode, rules, intent):
        assert child.parent is not None and child.parent.span_id == request.context.span_id
        assert child.context is not None and child.context.trace_id == request.context.trace_id
    # rebuilt end to end: encode, rules, intent, with their measured lengths
    assert encode.end_time == rules.start_time and rules.end_time == intent.start_time
    assert (rules.end_time or 0) - (rules.start_time or 0) == 20_000
    assert (intent.end_time or 0) - (intent.start_time or 0) == 300_000
    assert request.start_time <= (encode.start_time or 0)
    assert (intent.end_time or 0) <= (request.end_time or 0)
    assert attrs(intent)["llmroute.layer.outcome"] == "decided"
    assert attrs(intent)["llmroute.model"] == "a"


def test_a_failed_request_span(tracing: Tracing, exporter: InMemorySpanExporter) -> None:
    d = decision()
    tracing.start_request(d).finish(
        DecisionRecord(d, ts=0.0, status=502, latency_ms=5.0, error="upstream_error")
    )
    with pytest.raises(RuntimeError), tracing.request_span(decision("b")):
        raise RuntimeError("boom")
    spans = by_name(exporter.get_finished_spans())
    failed = spans["chat a"][0]
    assert failed.status.status_code is StatusCode.ERROR
    assert attrs(failed)["error.type"] == "upstream_error"
    assert attrs(failed)["http.response.status_code"] == 502
    raised = spans["chat b"][0]
    assert raised.status.status_code is StatusCode.ERROR
    assert attrs(raised)["error.type"] == "RuntimeError"


def test_a_whole_streams_request_span_says_its_upstreams_break_after_its_done(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    """A stream whose upstream broke once its ``[DONE]`` had gone out is a whole answer:
    its request span is no error and says the break as its call's span does
    (``llmroute.stream.broke_after_done``, an event with the break's ``error.type``); a
    request ended with no break says nothing of one. Only the call's span said it."""
    for name, broke in (("a", ProviderError("up", "the upstream broke off")), ("b", None)):
        d = decision(name)
        record = DecisionRecord(d, ts=0.0, status=200, latency_ms=5.0, served_model=name)
        tracing.start_request(d).finish(record, broke)
    spans = by_name(exporter.get_finished_spans())
    (said,) = spans["chat a"]
    assert said.status.status_code is StatusCode.UNSET
    assert attrs(said)["llmroute.stream.broke_after_done"] is True
    (event,) = said.events
    assert (event.name, dict(event.attributes or {})) == (
        "llmroute.stream.broke_after_done",
        {"error.type": "ProviderError"},
    )
    (whole,) = spans["chat b"]
    assert "llmroute.stream.broke_after_done" not in attrs(whole) and not whole.events


def test_a_span_failed_by_a_bug_ends_failed_when_its_outcome_cannot_be_set(
    tracing: Tracing, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug setting the outcome of a span that a bug failed (`_outcome_attributes`, made
    to raise) is raised on, and the span ends all the same, failed, with the first bug's
    type. It was never ended."""

    def bug(record: DecisionRecord) -> dict[str, Any]:
        raise ValueError("a tracing bug")

    monkeypatch.setattr(tracing_module, "_outcome_attributes", bug)
    d = decision()
    record = DecisionRecord(d, ts=0.0, status=500, latency_ms=1.0, error="internal_error")
    with pytest.raises(ValueError, match="a tracing bug"):
        tracing.start_request(d).fail(RuntimeError("boom"), record)
    (span,) = by_name(exporter.get_finished_spans())["chat a"]
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["error.type"] == "RuntimeError"


SECRET_TEXT = (
    "postgresql://router:hunter2@db.internal/log failed; Authorization: Bearer sk-live-123; "
    "prompt: my card is 4111 1111 1111 1111"
)


def _said(span: ReadableSpan) -> str:
    """Everything a span sends a tracing backend, as text: its status, attributes, events."""
    events = [(e.name, dict(e.attributes or {})) for e in span.events]
    return f"{span.status.description} {attrs(span)} {events}"


def test_a_failed_spans_status_holds_no_exception_text(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    """A request span failed by a bug whose message holds a URL with its password, a
    header and a prompt, and one failed by an upstream's error whose message does too:
    the span's status says the exception's class (an upstream's: its provider, HTTP
    status and error code), nothing of its text. The status description was
    ``str(exc)``: the password, the key and the prompt went to the tracing backend."""
    tracing.start_request(decision("bug")).fail(RuntimeError(SECRET_TEXT))
    upstream = ProviderError("up", SECRET_TEXT, status=502, code="server_error")
    tracing.start_request(decision("upstream")).fail(upstream)
    odd = ProviderError("up", "x", code=f"{SECRET_TEXT} hunter2")  # a code that is text
    tracing.start_request(decision("odd")).fail(odd)
    spans = by_name(tuple(s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER))
    assert {name: spans[name][0].status.description for name in spans} == {
        "chat bug": "RuntimeError",
        "chat upstream": "ProviderError: provider 'up', status 502, code server_error",
        "chat odd": "ProviderError: provider 'up'",
    }
    for (span,) in spans.values():
        assert span.status.status_code is StatusCode.ERROR
        assert "hunter2" not in _said(span) and "sk-live" not in _said(span)
        assert "4111" not in _said(span)


@pytest.mark.parametrize("status", [400, 200, 501])
def test_a_requests_span_holds_no_error_code_that_is_text(
    tracing: Tracing, exporter: InMemorySpanExporter, status: int
) -> None:
    """A request's row holds the upstream's error code as it sent it (an upstream's 400
    passed on with its code; a stream's end): a code that is text, not a short
    identifier, is said ``error`` on its span (``llmroute.error``, or ``error.type`` and
    the status of a failed one), as `fail` says it. The row's code went there whole: an
    upstream's words, which can echo the request, sent to the tracing backend."""
    d = decision()
    text = f"{SECRET_TEXT} hunter2"
    record = DecisionRecord(d, ts=0.0, status=status, latency_ms=1.0, error=text)
    tracing.start_request(d).finish(record)
    (span,) = by_name(exporter.get_finished_spans())["chat a"]
    said = _said(span)
    assert "hunter2" not in said and "sk-live" not in said and "4111" not in said
    if status == 400:
        assert attrs(span)["llmroute.error"] == "error"
    else:
        assert attrs(span)["error.type"] == "error" and span.status.description == "error"


def test_a_failed_calls_span_holds_no_upstream_message(
    registry: Registry, tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    """A call that failed (a 503 whose body says "Provider returned error"; its
    fallback answered) and a stream that broke: their spans' status names the failure's
    class, provider and status, not the upstream's message, which can echo the request."""
    _run(registry, tracing, ("bad", "b"), stream=False)
    _run(registry, tracing, ("broken",), stream=True)
    spans = by_name(exporter.get_finished_spans())
    failed = spans["chat bad?status=503"][0]
    assert failed.status.description == "ProviderError: provider 'up', status 503"
    (broke,) = spans["chat broken?mid=1"]
    assert broke.status.status_code is StatusCode.ERROR
    assert broke.status.description == "ProviderError: provider 'up'"
    assert "Provider returned error" not in _said(failed)


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, "content_policy_violation"), (429, "rate_limit_exceeded"), (499, "client_disconnected")],
)
def test_a_refused_or_abandoned_request_is_no_span_error(
    tracing: Tracing, exporter: InMemorySpanExporter, status: int, error: str
) -> None:
    """OpenTelemetry's HTTP server convention: a 4xx leaves the span status unset (the
    client's request, not the server, was at fault); the code is still on the span."""
    d = decision()
    record = DecisionRecord(d, ts=0.0, status=status, latency_ms=1.0, error=error)
    tracing.start_request(d).finish(record)
    (span,) = by_name(exporter.get_finished_spans())["chat a"]
    assert span.status.status_code is StatusCode.UNSET
    assert "error.type" not in attrs(span) and attrs(span)["llmroute.error"] == error
    assert attrs(span)["http.response.status_code"] == status


def test_a_stream_that_failed_after_its_200_is_a_span_error(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    """A stream broken off upstream keeps the 200 its start sent, but the request failed
    (the report counts it an error): as a request reset before its status, a span error.
    One its client left is not."""
    cases = {"stream_interrupted": True, "server_shutdown": True, "client_disconnected": False}
    for error in cases:
        d = decision(route=error)
        record = DecisionRecord(d, ts=0.0, status=200, latency_ms=1.0, error=error, stream=True)
        tracing.start_request(d).finish(record)
    for span in exporter.get_finished_spans():
        if span.kind is SpanKind.SERVER:
            error = attrs(span)["llmroute.route"]
            assert (span.status.status_code is StatusCode.ERROR) is cases[error], error
            assert attrs(span).get("error.type") == (error if cases[error] else None)


# -- attempts, from a real dispatcher -----------------------------------------------------------

REGISTRY = """
encoder: builtin:static
providers:
  up: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  a: {provider: up, model: 'a?status=500&times=1'}
  bad: {provider: up, model: 'bad?status=503'}
  b: {provider: up, model: b-up}
  slow: {provider: up, model: 'slow?gap=0.05'}
  broken: {provider: up, model: 'broken?mid=1'}
  cutafter: {provider: up, model: 'whole?after=reset'}
  holdafter: {provider: up, model: 'whole?after=hold'}
  mute: {provider: up, model: 'mute?ttft=0.4'}
  dead: {provider: up, model: 'dead?ttft=30', first_token_timeout_s: 0.3}
  late: {provider: up, model: 'late?delay=2'}
routes:
  - {name: r, examples: [hello], target: a}
default: {target: a}
dispatch:
  retries: {attempts: 1, backoff_s: 0.01, max_backoff_s: 0.01}
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as up:
        yield up


@pytest.fixture
def registry(upstream: FakeUpstream) -> Registry:
    return parse_registry(REGISTRY % {"url": upstream.url}).registry


async def _no_sleep(_: float) -> None:
    return None


def _run(registry: Registry, tracing: Tracing, chain: tuple[str, ...], stream: bool) -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "stream": stream}
    metrics = GatewayMetrics()

    async def main() -> None:
        dispatcher = Dispatcher(
            registry,
            build_providers(registry),
            rng=random.Random(3),
            sleep=_no_sleep,
            observer=Observers.of(metrics, tracing.observer),
        )
        plan = Plan(decision(chain[0]), chain)
        try:
            with tracing.request_span(plan.decision) as trace:
                if stream:
                    opened = await dispatcher.open_stream(plan, body)
                    with contextlib.suppress(ProviderError):  # a stream that breaks
                        async for _ in opened.events:
                            pass
                else:
                    await dispatcher.complete(plan, body)
                trace.finish(None)
        finally:
            await dispatcher.aclose()

    asyncio.run(main())


def test_a_span_per_attempt_with_genai_attributes(
    registry: Registry, upstream: FakeUpstream, tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    _run(registry, tracing, ("a",), stream=False)
    spans = by_name(exporter.get_finished_spans())
    request = spans["chat a"][0]
    assert request.context is not None
    attempts = sorted(spans["chat a?status=500&times=1"], key=lambda s: s.start_time or 0)
    assert len(attempts) == 2
    port = int(upstream.url.split(":")[2].split("/")[0])
    for retry, span in enumerate(attempts):
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None and span.parent.span_id == request.context.span_id
        a = attrs(span)
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.request.model"] == "a?status=500&times=1"
        assert a["gen_ai.provider.name"] == a["gen_ai.system"] == "openai"
        assert a["server.address"] == "127.0.0.1" and a["server.port"] == port
        assert a["llmroute.model"] == "a" and a["llmroute.deployment"] == "up"
        assert a["llmroute.retry"] == retry
    failed, ok = attempts
    assert attrs(failed)["error.type"] == "500"
    assert attrs(failed)["http.response.status_code"] == 500
    assert attrs(failed)["llmroute.attempt.outcome"] == "error"
    assert failed.status.status_code is StatusCode.ERROR
    assert "error.type" not in attrs(ok) and attrs(ok)["llmroute.attempt.outcome"] == "ok"
    assert (failed.end_time or 0) <= (ok.start_time or 0) + 1_000_000  # 1 ms of clock slack
    events = [e.name for e in request.events]
    assert events == ["llmroute.retry"]


def _traceparent(span: ReadableSpan) -> str:
    assert span.context is not None
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_calls_carry_the_request_spans_trace(
    registry: Registry,
    upstream: FakeUpstream,
    tracing: Tracing,
    exporter: InMemorySpanExporter,
    stream: bool,
) -> None:
    """A model server that traces puts its spans under the gateway's span for that very
    call: every call, retries and fallbacks included, carries its own attempt span's
    ``traceparent``, and each attempt span is a child of the request span."""
    before = len(upstream.requests)
    _run(registry, tracing, ("bad", "b"), stream=stream)
    spans = by_name(exporter.get_finished_spans())
    (request,) = spans["chat bad"]
    assert request.context is not None
    attempts = sorted(
        [*spans["chat bad?status=503"], *spans["chat b-up"]], key=lambda s: s.start_time or 0
    )
    sent = [r.headers.get("traceparent") for r in upstream.requests[before:]]
    assert len(sent) == len(attempts) == 3  # bad, its retry, then b
    assert sent == [_traceparent(span) for span in attempts]
    for span in attempts:
        assert span.parent is not None and span.parent.span_id == request.context.span_id


def test_without_tracing_no_trace_header_is_sent(
    registry: Registry, upstream: FakeUpstream
) -> None:
    before = len(upstream.requests)
    _run(registry, Tracing(), ("b",), stream=False)
    assert [r.headers.get("traceparent") for r in upstream.requests[before:]] == [None]


def test_the_request_span_continues_the_callers_trace(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    """A client's ``traceparent`` makes the request span its child, in its trace; a
    malformed one starts a new trace."""
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    caller = {"traceparent": f"00-{trace_id}-{parent_id}-01", "content-type": "x"}
    tracing.start_request(decision("a"), headers=caller).finish()
    tracing.start_request(decision("b"), headers={"traceparent": "00-nonsense-01"}).finish()
    tracing.start_request(decision("c"), headers=None).finish()
    spans = by_name(exporter.get_finished_spans())
    (joined,) = spans["chat a"]
    assert joined.context is not None and joined.parent is not None
    assert f"{joined.context.trace_id:032x}" == trace_id
    assert f"{joined.parent.span_id:016x}" == parent_id and joined.parent.is_remote
    for name in ("chat b", "chat c"):
        (fresh,) = spans[name]
        assert fresh.parent is None and fresh.context is not None
        assert f"{fresh.context.trace_id:032x}" != trace_id


def test_the_gateway_carries_a_clients_trace_to_the_upstream(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """End to end: a client's ``traceparent`` reaches the model server in the same
    trace, with the gateway's span for that call as its parent (spans exported to
    stdout)."""
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    text = REGISTRY % {"url": upstream.url}
    env = {"LLMROUTE_OTEL": "1", "OTEL_TRACES_EXPORTER": "console"}
    with serve_text(text, tmp_path, env=env) as served:
        before = len(upstream.requests)
        reply = httpx.post(
            f"{served.url}/v1/chat/completions",
            json={"model": "b", "messages": [{"role": "user", "content": "hello"}]},
            headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
        (call,) = upstream.requests[before:]
    version, sent_trace, sent_parent, _flags = call.headers["traceparent"].split("-")
    assert (version, sent_trace) == ("00", trace_id)
    assert sent_parent != parent_id  # the gateway's attempt span, not the client's
    assert f'"span_id": "0x{sent_parent}"' in served.log_text()  # that span, exported


def test_a_silent_streams_call_span_says_its_time_to_its_first_event_not_the_hold(
    registry: Registry, tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    """A stream handed over silent (``stream_hold_s``, 0.05 s here): its call's
    ``llmroute.ttft_s`` is the time to its first event (0.4 s), not the hold; one whose
    first-token limit ran out after the hand-over is a failed call (``timeout``), its
    span ended at the failure, as one failing within the hold."""
    held = registry.dispatch.model_copy(update={"stream_hold_s": 0.05})
    registry = registry.model_copy(update={"dispatch": held})
    _run(registry, tracing, ("mute",), stream=True)
    _run(registry, tracing, ("dead", "b"), stream=True)
    spans = by_name(exporter.get_finished_spans())
    (mute,) = spans["chat mute?ttft=0.4"]
    a = attrs(mute)
    assert a["llmroute.ttft_s"] >= 0.4 and a["llmroute.stream.outcome"] == "ok"
    (dead,) = spans["chat dead?ttft=30"]
    d = attrs(dead)
    assert d["llmroute.attempt.outcome"] == "timeout" and "llmroute.ttft_s" not in d
    assert dead.status.status_code is StatusCode.ERROR
    assert ((dead.end_time or 0) - (dead.start_time or 0)) / 1e9 >= 0.3
    (answered,) = spans["chat b-up"]
    assert attrs(answered)["llmroute.stream.outcome"] == "ok"
    assert tracing._streams == {}  # nothing left open


def test_stream_attempts_and_a_fallback(
    registry: Registry, tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    _run(registry, tracing, ("bad", "b"), stream=True)
    spans = by_name(exporter.get_finished_spans())
    request = spans["chat bad"][0]
    bad = spans["chat bad?status=503"]
    assert [attrs(s)["llmroute.retry"] for s in bad] == [0, 1]
    assert all(attrs(s)["error.type"] == "503" for s in bad)
    (served,) = spans["chat b-up"]
    assert attrs(served)["llmroute.stream"] is True
    assert attrs(served)["llmroute.attempt.outcome"] == "ok"
    fallback = [e for e in request.events if e.name == "llmroute.fallback"]
    assert len(fallback) == 1
    assert dict(fallback[0].attributes or {}) == {
        "llmroute.route": "r",
        "llmroute.model": "bad",
        "llmroute.next_model": "b",
    }


def test_a_stream_calls_span_lasts_until_the_stream_ends(
    registry: Registry, tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    """A stream's call span ends when the stream does (not at its first event), saying
    how it ended and when its first event came; one that broke is a span error."""
    _run(registry, tracing, ("slow",), stream=True)
    _run(registry, tracing, ("broken",), stream=True)
    spans = by_name(exporter.get_finished_spans())
    (whole,) = spans["chat slow?gap=0.05"]
    a = attrs(whole)
    assert a["llmroute.stream.outcome"] == "ok" and a["llmroute.attempt.outcome"] == "ok"
    lasted_s = ((whole.end_time or 0) - (whole.start_time or 0)) / 1e9
    assert lasted_s > a["llmroute.ttft_s"]  # words come 50 ms apart after the first event
    assert lasted_s >= 0.1 and whole.status.status_code is StatusCode.UNSET
    (request,) = spans["chat slow"]
    assert (whole.end_time or 0) <= (request.end_time or 0)  # within its request
    (broke,) = spans["chat broken?mid=1"]
    assert attrs(broke)["llmroute.stream.outcome"] == "error"
    assert broke.status.status_code is StatusCode.ERROR
    assert tracing._streams == {}  # nothing left open


def test_a_stream_broken_after_its_done_says_so_on_its_whole_calls_span(
    registry: Registry, tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    """An upstream that cut its connection once its ``[DONE]`` was read: the stream is
    whole, its call span no error (``ok``), and it says the break
    (``llmroute.stream.broke_after_done``, an event of that name with the break's
    ``error.type``); a stream that ended properly says nothing of one. The span showed
    nothing of the break (a warning in the log alone)."""
    _run(registry, tracing, ("cutafter",), stream=True)
    _run(registry, tracing, ("slow",), stream=True)
    spans = by_name(exporter.get_finished_spans())
    (broke,) = spans["chat whole?after=reset"]
    assert broke.status.status_code is StatusCode.UNSET
    assert attrs(broke)["llmroute.stream.outcome"] == "ok"
    assert attrs(broke)["llmroute.stream.broke_after_done"] is True
    (event,) = [e for e in broke.events if e.name == "llmroute.stream.broke_after_done"]
    assert dict(event.attributes or {}) == {"error.type": "ProviderError"}
    (whole,) = spans["chat slow?gap=0.05"]
    assert "llmroute.stream.broke_after_done" not in attrs(whole) and not whole.events


def test_a_stream_its_reader_left_once_its_done_was_read_is_whole_on_its_calls_span(
    registry: Registry, tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    """A reader that left once it read the stream's ``[DONE]`` (a client that closed as
    its answer ended, the upstream's body still open) had its whole answer, as its row
    says: the call's span says ``ok``, as a success for the deployment's breaker. It
    said ``cancelled``, the breaker told nothing, as for a client that left midway."""
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "stream": True}

    async def main() -> None:
        dispatcher = Dispatcher(registry, build_providers(registry), observer=tracing.observer)
        try:
            opened = await dispatcher.open_stream(Plan(decision("holdafter"), ("holdafter",)), body)
            async for event in opened.events:
                if event.startswith(b"data: [DONE]"):
                    break  # the reader leaves, the upstream's body still open
            await opened.aclose()
        finally:
            await dispatcher.aclose()

    asyncio.run(main())
    (span,) = by_name(exporter.get_finished_spans())["chat whole?after=hold"]
    assert attrs(span)["llmroute.stream.outcome"] == "ok"
    assert span.status.status_code is StatusCode.UNSET


def test_an_embedding_attempt_is_named_after_its_operation(
    upstream: FakeUpstream, tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    registry = parse_registry(
        (REGISTRY % {"url": upstream.url}).replace(
            "  b: {provider: up, model: b-up}",
            "  b: {provider: up, model: b-up}\n  e: {provider: up, model: emb, kind: embedding}",
        )
    ).registry

    async def main() -> None:
        dispatcher = Dispatcher(registry, build_providers(registry), observer=tracing.observer)
        try:
            await dispatcher.embed("e", {"input": ["x"]})
        finally:
            await dispatcher.aclose()

    asyncio.run(main())
    (span,) = exporter.get_finished_spans()
    assert span.name == "embeddings emb"
    assert attrs(span)["gen_ai.operation.name"] == "embeddings"
    assert span.parent is None  # no request span was current


def test_a_call_its_client_left_is_no_span_error(
    registry: Registry, tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    """A call cancelled because its request's client hung up did not fail: its span says
    ``cancelled`` without an error status, as a stream its client left does, so a
    trace's error rate per upstream is not the clients' impatience."""
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}

    async def main() -> None:
        dispatcher = Dispatcher(registry, build_providers(registry), observer=tracing.observer)
        try:
            with tracing.request_span(decision("late")) as trace:
                call = asyncio.ensure_future(
                    dispatcher.complete(Plan(decision("late"), ("late",)), body)
                )
                await asyncio.sleep(0.1)
                call.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await call
                trace.finish(None)
        finally:
            await dispatcher.aclose()

    asyncio.run(main())
    (span,) = by_name(exporter.get_finished_spans())["chat late?delay=2"]
    assert attrs(span)["llmroute.attempt.outcome"] == "cancelled"
    assert span.status.status_code is StatusCode.UNSET
    assert "error.type" not in attrs(span)


def test_the_request_span_is_named_after_the_operation_its_api_asked_for(
    tracing: Tracing,
    exporter: InMemorySpanExporter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The GenAI conventions name a ``/v1/completions`` request's operation
    ``text_completion``; every request span said ``chat``."""
    monkeypatch.setattr(app_module, "tracing_from_env", lambda: tracing)
    registry = tmp_path / "registry.yaml"
    registry.write_text(ECHO_ONLY)
    with serve_in_thread(app_module.create_app(str(registry))) as url:
        for path, body in (
            ("/v1/completions", {"prompt": "hello there"}),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hello"}]}),
        ):
            reply = httpx.post(f"{url}{path}", json={"model": "auto", **body}, timeout=10)
            assert reply.status_code == 200, reply.text
    served = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert [(s.name, attrs(s)["gen_ai.operation.name"]) for s in served] == [
        ("text_completion small", "text_completion"),
        ("chat small", "chat"),
    ]


SERVED_REGISTRY = """
encoder: builtin:static
providers:
  up: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  c: {provider: up, model: c-up}
  coder: {provider: up, model: coder-up, text_completions: true}
  emb: {provider: up, model: emb-up, kind: embedding}
  rr: {provider: up, model: rr-up, kind: rerank}
  emb-down: {provider: up, model: 'emb-down?status=503', kind: embedding}
routes:
  - {name: r, examples: [hello], target: c}
default: {target: c}
dispatch:
  retries: {attempts: 1, backoff_s: 0.01, max_backoff_s: 0.01}
"""


def _served_spans(
    tracing: Tracing,
    exporter: InMemorySpanExporter,
    upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *requests: tuple[str, dict[str, Any], int],
) -> list[ReadableSpan]:
    """The spans of `requests` (path, body, status expected) to a gateway in a thread."""
    monkeypatch.setattr(app_module, "tracing_from_env", lambda: tracing)
    registry = tmp_path / "registry.yaml"
    registry.write_text(SERVED_REGISTRY % {"url": upstream.url})
    with serve_in_thread(app_module.create_app(str(registry))) as url:
        for path, body, status in requests:
            reply = httpx.post(f"{url}{path}", json=body, timeout=10)
            assert reply.status_code == status, reply.text
    return list(exporter.get_finished_spans())


def _children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def test_a_raw_completions_upstream_span_is_a_text_completion(
    tracing: Tracing,
    exporter: InMemorySpanExporter,
    upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A completion sent raw to a model continuing text (its ``/completions``) is the
    conventions' ``text_completion``, as its request span says; its call's span said
    ``chat``. One converted to chat for a chat model is a ``chat`` call."""
    spans = _served_spans(
        tracing,
        exporter,
        upstream,
        tmp_path,
        monkeypatch,
        ("/v1/completions", {"model": "coder", "prompt": "def f("}, 200),
        ("/v1/completions", {"model": "c", "prompt": "hello"}, 200),
    )
    calls = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert [(s.name, attrs(s)["gen_ai.operation.name"]) for s in calls] == [
        ("text_completion coder-up", "text_completion"),
        ("chat c-up", "chat"),
    ]
    served = [s for s in spans if s.kind is SpanKind.SERVER]
    assert [s.name for s in served] == ["text_completion coder", "text_completion c"]


def test_embeddings_and_rerank_requests_have_a_request_span(
    tracing: Tracing,
    exporter: InMemorySpanExporter,
    upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``/v1/embeddings`` and ``/v1/rerank`` had no request span: their calls' spans were
    roots of traces of their own. Each now has its SERVER span, named after its
    operation and the model it asked, its call's span its child, ended with its outcome;
    a failed call's is a span error, and a request refused before the call has none."""
    spans = _served_spans(
        tracing,
        exporter,
        upstream,
        tmp_path,
        monkeypatch,
        ("/v1/embeddings", {"model": "emb", "input": ["a b c"]}, 200),
        ("/v1/rerank", {"model": "rr", "query": "q", "documents": ["x", "y"]}, 200),
        ("/v1/embeddings", {"model": "c", "input": "refused before the call"}, 404),
        ("/v1/embeddings", {"model": "emb-down", "input": "x"}, 502),
    )
    served = {s.name: s for s in spans if s.kind is SpanKind.SERVER}
    assert set(served) == {"embeddings emb", "rerank rr", "embeddings emb-down"}
    failed = served.pop("embeddings emb-down")
    assert failed.status.status_code is StatusCode.ERROR
    assert attrs(failed)["http.response.status_code"] == 502
    assert [s.name for s in _children(spans, failed)] == ["embeddings emb-down?status=503"] * 2
    for name, route in (("embeddings emb", "(embeddings)"), ("rerank rr", "(rerank)")):
        span = served[name]
        operation, model = name.split()
        assert attrs(span)["gen_ai.operation.name"] == operation
        assert attrs(span)["gen_ai.request.model"] == model
        assert attrs(span)["gen_ai.response.model"] == model
        assert attrs(span)["llmroute.route"] == route
        assert attrs(span)["http.response.status_code"] == 200
        assert attrs(span)["gen_ai.usage.input_tokens"] > 0
        assert span.status.status_code is StatusCode.UNSET
        (call,) = _children(spans, span)
        assert call.name == f"{operation} {model}-up"
        assert call.context.trace_id == span.context.trace_id


def test_request_spans_carry_their_outcome_with_the_decision_log_off(
    tracing: Tracing,
    exporter: InMemorySpanExporter,
    upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the decision log off the gateway still makes each request's record (the
    metrics count it), so its span ends with the outcome as with the log on: status,
    served model, usage; a failed one a span error with its code."""
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", "off")
    chat = {"model": "c", "messages": [{"role": "user", "content": "hello"}]}
    spans = _served_spans(
        tracing,
        exporter,
        upstream,
        tmp_path,
        monkeypatch,
        ("/v1/chat/completions", chat, 200),
        ("/v1/embeddings", {"model": "emb", "input": ["a b c"]}, 200),
        ("/v1/rerank", {"model": "rr", "query": "q", "documents": ["x", "y"]}, 200),
        ("/v1/embeddings", {"model": "emb-down", "input": "x"}, 502),
    )
    served = {s.name: s for s in spans if s.kind is SpanKind.SERVER}
    assert set(served) == {"chat c", "embeddings emb", "rerank rr", "embeddings emb-down"}
    failed = served.pop("embeddings emb-down")
    assert failed.status.status_code is StatusCode.ERROR
    assert attrs(failed)["http.response.status_code"] == 502
    assert attrs(failed)["error.type"] == "upstream_error"
    for span in served.values():
        assert attrs(span)["http.response.status_code"] == 200
        assert attrs(span)["gen_ai.response.model"] == attrs(span)["gen_ai.request.model"]
        assert attrs(span)["gen_ai.usage.input_tokens"] > 0


@pytest.mark.parametrize(
    ("attempts", "failed"),
    [
        (("small escalated: heuristic (refusal)",), None),
        (("small escalated: heuristic (refusal)", "medium escalated: verifier (p=0.2)"), None),
        (("small escalated: heuristic (refusal)", "large via fake (HTTP 500)"), 1),
        (("small via fake (HTTP 500)", "small-b escalated: verifier (p=0.2)"), 1),
        (("small escalated: heuristic (refusal)", "large via fake (cancelled)"), None),
        # a model whose name says "escalated" failed: a failure, not a tier passed over
        (("cascade-escalated via fake (HTTP 500)",), 1),
    ],
)
def test_failed_attempts_counts_no_cascade_escalation(
    tracing: Tracing,
    exporter: InMemorySpanExporter,
    attempts: tuple[str, ...],
    failed: int | None,
) -> None:
    """A tier a cascade escalated from answered (paid for, its answer passed over): no
    failure, as ``llmroute_escalations_total`` and the report count it; the span's
    ``llmroute.failed_attempts`` counts only the calls that failed."""
    d = decision()
    record = DecisionRecord(
        d, ts=0.0, status=200, latency_ms=3.0, served_model="large", attempts=attempts
    )
    tracing.start_request(d).finish(record)
    (span,) = by_name(exporter.get_finished_spans())["chat a"]
    assert attrs(span).get("llmroute.failed_attempts") == failed
