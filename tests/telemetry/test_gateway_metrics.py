"""`GatewayMetrics`: what one request's record counts, the dispatcher's retries,
fallbacks and breakers (against a real fake upstream), ``/metrics`` and the
multi-process mode (in subprocesses, since prometheus_client picks its mode at import)."""

from __future__ import annotations

import asyncio
import contextvars
import os
import random
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fake_upstream import FakeUpstream, fake_upstream
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from llmroute.decision import (
    Decision,
    LayerSignal,
    Outcome,
    ReasoningOutcome,
    SafetyOutcome,
    Verdict,
    new_decision_id,
)
from llmroute.dispatch import Dispatcher, Plan
from llmroute.dispatch.breaker import BreakerState
from llmroute.dispatch.usage import Usage
from llmroute.errors import AllFallbacksFailed
from llmroute.providers import build_providers
from llmroute.registry import parse_registry
from llmroute.registry.schema import Registry
from llmroute.server.metrics import metrics_endpoint
from llmroute.telemetry.metrics import GatewayMetrics, api_label, multiprocess_dir, watch_request
from llmroute.telemetry.record import DecisionRecord

ROOT = Path(__file__).resolve().parents[2]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def decision(
    route: str = "code",
    model: str = "large",
    *,
    safety: str | None = "allow",
    reasoning: bool | None = True,
) -> Decision:
    verdict = Verdict(route, model, 0.9, "intent match", margin=0.3)
    return Decision(
        id=new_decision_id(),
        route=route,
        model=model,
        layer="intent",
        confidence=0.9,
        margin=0.3,
        reason="intent match",
        registry_version="v1",
        signals=(
            LayerSignal("rules", Outcome.PASSED, 4.0),
            LayerSignal("intent", Outcome.DECIDED, 60.0, verdict=verdict),
            LayerSignal("difficulty", Outcome.SKIPPED, 0.0),
        ),
        encode_us=900.0,
        total_us=1_000.0,
        safety=None if safety is None else SafetyOutcome("default", safety),
        reasoning=None if reasoning is None else ReasoningOutcome(reasoning, "long"),
    )


def record(d: Decision | None = None, **over: Any) -> DecisionRecord:
    fields: dict[str, Any] = {
        "decision": d or decision(),
        "ts": 1_700_000_000.0,
        "status": 200,
        "latency_ms": 1500.0,
        "served_model": "large",
        "deployment": "up",
        "ttft_ms": 300.0,
        "tokens_in": 100,
        "tokens_out": 40,
        "cost_usd": 0.002,
    }
    fields.update(over)
    return DecisionRecord(**fields)


def samples(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(metrics: GatewayMetrics, dispatcher: Dispatcher | None = None) -> Samples:
    body, content_type = metrics.render(dispatcher)
    assert content_type == CONTENT_TYPE_LATEST
    return samples(body.decode())


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def test_a_served_request_counts_everywhere() -> None:
    metrics = GatewayMetrics()
    metrics.observe(record())
    metrics.observe(record(stream=True))
    s = scrape(metrics)
    assert value(s, "llmroute_requests_total", route="code", model="large", status="200") == 2
    assert value(s, "llmroute_decisions_total", route="code", layer="intent") == 2
    for layer in ("rules", "intent", "encode", "total"):
        assert value(s, "llmroute_decision_seconds_count", layer=layer) == 2
    assert value(s, "llmroute_decision_seconds_count", layer="difficulty") is None  # skipped
    assert value(s, "llmroute_decision_seconds_sum", layer="intent") == pytest.approx(120e-6)
    assert value(s, "llmroute_decision_seconds_bucket", layer="rules", le="1e-05") == 2
    assert value(s, "llmroute_decision_seconds_bucket", layer="total", le="0.001") == 2
    assert value(s, "llmroute_upstream_seconds_sum", model="large") == pytest.approx(3.0)
    assert value(s, "llmroute_upstream_seconds_bucket", model="large", le="2.0") == 2
    assert value(s, "llmroute_ttft_seconds_sum", model="large") == pytest.approx(0.6)
    assert value(s, "llmroute_tokens_total", model="large", direction="in") == 200
    assert value(s, "llmroute_tokens_total", model="large", direction="out") == 80
    assert value(s, "llmroute_cost_usd_total", route="code", model="large") == pytest.approx(0.004)
    assert value(s, "llmroute_safety_actions_total", action="allow") == 2
    assert value(s, "llmroute_reasoning_total", needed="true") == 2


def test_embeddings_count_toward_the_client_keys_cost_as_its_budget_does() -> None:
    metrics = GatewayMetrics()
    metrics.observe_unrouted("(embeddings)", "embed", Usage(100, 0, 0.002, False), "team-a")
    s = scrape(metrics)
    assert value(s, "llmroute_cost_usd_total", route="(embeddings)", model="embed") == 0.002
    assert value(s, "llmroute_client_cost_usd_total", client="team-a") == 0.002
    assert value(s, "llmroute_client_tokens_total", client="team-a", direction="in") == 100


@pytest.mark.parametrize(
    ("path", "api"),
    [
        ("/v1/chat/completions", "chat"),
        ("/prefix/v1/messages/count_tokens", "messages"),
        ("/v1/responses/resp_1/input_items", "responses"),
        ("/v2/rerank", "rerank"),
        ("/v1/" + "x" * 50, "other"),
        ("/metrics", None),
    ],
)
def test_api_labels_are_a_fixed_set(path: str, api: str | None) -> None:
    assert api_label(path) == api


def test_an_error_is_counted_once_a_request() -> None:
    contextvars.copy_context().run(_count_errors)  # the requests' context, not the tests'


def _count_errors() -> None:
    metrics = GatewayMetrics()
    metrics.api_error("/v1/chat/completions", 404, "team-a")  # outside a request: not
    watch_request()
    metrics.api_error("/v1/chat/completions", 404, "team-a")
    metrics.api_error("/v1/chat/completions", 404, "team-a")  # once
    watch_request()
    metrics.observe(record(status=502))  # its record counted it
    metrics.api_error("/v1/chat/completions", 502, None)
    for path in ("/v1/responses/resp_1", "/v1/messages/count_tokens", "/v1/batches"):
        watch_request()  # not requests to a model: api errors, not the key's requests
        metrics.api_error(path, 404, "team-a")
    for path in ("/v1/embeddings", "/v2/rerank"):
        watch_request()  # requests to a model, refused before their call: the key's too
        metrics.api_error(path, 404, "team-a")
    s = scrape(metrics)
    assert value(s, "llmroute_api_errors_total", api="responses", status="404") == 1
    assert value(s, "llmroute_api_errors_total", api="chat", status="502") is None
    assert value(s, "llmroute_api_errors_total", api="embeddings", status="404") == 1
    assert value(s, "llmroute_client_requests_total", client="team-a", status="404") == 3


def test_an_error_after_its_record_is_counted_as_an_api_error() -> None:
    """A 500 after the request's record counted it as 200 (`late`): the client got a
    500 that no record holds, so it is an api error (a 5xx alert sees it); the key's
    request was counted by the record, once."""
    contextvars.copy_context().run(_count_late_error)


def _count_late_error() -> None:
    metrics = GatewayMetrics()
    watch_request()
    metrics.observe(record(status=200, client="team-a"))
    metrics.api_error("/v1/messages", 500, "team-a", late=True)
    s = scrape(metrics)
    assert value(s, "llmroute_api_errors_total", api="messages", status="500") == 1
    assert value(s, "llmroute_client_requests_total", client="team-a", status="200") == 1
    assert value(s, "llmroute_client_requests_total", client="team-a", status="500") is None


def test_embeddings_and_rerank_are_counted_as_requests() -> None:
    """As their decision-log rows are: under their route, with the key's requests, an
    answer's latency; an error their record counts is not an api error too."""
    contextvars.copy_context().run(_count_unrouted)


def _count_unrouted() -> None:
    metrics = GatewayMetrics()
    watch_request()
    usage = Usage(100, 0, 0.002, False)
    metrics.observe_unrouted("(embeddings)", "embed", usage, "team-a", latency_ms=250)
    watch_request()
    metrics.observe_unrouted("(rerank)", "rr", None, "team-a", status=502)
    metrics.api_error("/v1/rerank", 502, "team-a")  # counted by its record already
    s = scrape(metrics)
    requests = "llmroute_requests_total"
    assert value(s, requests, route="(embeddings)", model="embed", status="200") == 1
    assert value(s, requests, route="(rerank)", model="rr", status="502") == 1
    assert value(s, "llmroute_upstream_seconds_sum", model="embed") == pytest.approx(0.25)
    assert value(s, "llmroute_upstream_seconds_count", model="rr") is None  # no answer
    assert value(s, "llmroute_client_requests_total", client="team-a", status="502") == 1
    assert value(s, "llmroute_api_errors_total", api="rerank", status="502") is None


def test_a_failed_request_is_counted_under_the_decided_model() -> None:
    metrics = GatewayMetrics()
    metrics.observe(
        record(
            decision(safety="block", reasoning=False),
            status=403,
            error="content_policy_violation",
            served_model=None,
            deployment=None,
            ttft_ms=None,
            tokens_in=None,
            tokens_out=None,
            cost_usd=None,
        )
    )
    s = scrape(metrics)
    assert value(s, "llmroute_requests_total", route="code", model="large", status="403") == 1
    assert value(s, "llmroute_upstream_seconds_count", model="large") is None
    assert value(s, "llmroute_tokens_total", model="large", direction="in") is None
    assert value(s, "llmroute_safety_actions_total", action="block") == 1
    assert value(s, "llmroute_reasoning_total", needed="false") == 1


def test_failed_requests_are_timed_by_outcome() -> None:
    """A request that timed out (504) or failed was in no latency histogram: its time is
    now in ``llmroute_request_seconds`` under an outcome from a fixed set, while the
    deprecated ``llmroute_upstream_seconds`` keeps its served requests alone."""
    contextvars.copy_context().run(_time_failures)


def _time_failures() -> None:
    metrics = GatewayMetrics()
    failed = {"served_model": None, "ttft_ms": None, "tokens_in": None, "cost_usd": None}
    metrics.observe(record())
    metrics.observe(record(status=504, error="upstream_error", latency_ms=30_000.0, **failed))
    metrics.observe(record(status=502, error="upstream_error", **failed))
    metrics.observe(record(status=400, error="content_policy_violation", **failed))
    metrics.observe(record(status=499, error="client_disconnected", **failed))
    metrics.observe(record(status=200, error="stream_interrupted", stream=True))  # broke
    watch_request()
    metrics.observe_unrouted("(rerank)", "rr", None, status=502, latency_ms=40.0)
    s = scrape(metrics)
    timed = "llmroute_request_seconds_count"
    assert {
        outcome: value(s, timed, model="large", outcome=outcome)
        for outcome in ("ok", "timeout", "error", "rejected", "cancelled")
    } == {"ok": 1, "timeout": 1, "error": 2, "rejected": 1, "cancelled": 1}
    assert value(s, "llmroute_request_seconds_sum", model="large", outcome="timeout") == 30.0
    assert value(s, timed, model="rr", outcome="error") == 1
    assert value(s, "llmroute_upstream_seconds_count", model="large") == 2  # served
    assert value(s, "llmroute_upstream_seconds_count", model="rr") is None


def test_a_chain_every_upstream_rate_limited_is_timed_as_an_error() -> None:
    """Its 429 (``upstream_rate_limited``) is an outage that may pass, as its attempts
    count it (``error``), not the request's own fault: under ``rejected`` an alert on
    ``outcome="error"`` missed every upstream rate limiting, chat and embeddings alike."""
    contextvars.copy_context().run(_time_rate_limited)


def _time_rate_limited() -> None:
    metrics = GatewayMetrics()
    failed = {"served_model": None, "ttft_ms": None, "tokens_in": None, "cost_usd": None}
    metrics.observe(record(status=429, error="upstream_rate_limited", **failed))
    metrics.observe(record(status=429, error="insufficient_quota", **failed))  # its key's
    watch_request()
    metrics.observe_unrouted(
        "(embeddings)", "embed", None, status=429, error="upstream_rate_limited", latency_ms=5.0
    )
    s = scrape(metrics)
    timed = "llmroute_request_seconds_count"
    assert value(s, timed, model="large", outcome="error") == 1
    assert value(s, timed, model="large", outcome="rejected") == 1
    assert value(s, timed, model="embed", outcome="error") == 1


def test_requests_cut_by_the_shutdown_are_timed_apart_from_errors() -> None:
    """A request the gateway's stop cut (503 ``server_shutdown``, chat or embeddings, or
    a stream cut after its 200) was timed as ``error``: every deploy with requests past
    the graceful timeout paged an alert on failing models. They have their own outcome."""
    contextvars.copy_context().run(_time_shutdown)


def _time_shutdown() -> None:
    metrics = GatewayMetrics()
    failed = {"served_model": None, "ttft_ms": None, "tokens_in": None, "cost_usd": None}
    metrics.observe(record(status=503, error="server_shutdown", **failed))
    metrics.observe(record(status=200, error="server_shutdown", stream=True))  # cut stream
    metrics.observe(record(status=503, error="upstream_error", **failed))  # an outage
    watch_request()
    metrics.observe_unrouted(
        "(embeddings)", "embed", None, status=503, error="server_shutdown", latency_ms=5.0
    )
    s = scrape(metrics)
    timed = "llmroute_request_seconds_count"
    assert value(s, timed, model="large", outcome="shutdown") == 2
    assert value(s, timed, model="large", outcome="error") == 1
    assert value(s, timed, model="embed", outcome="shutdown") == 1
    assert value(s, timed, model="embed", outcome="error") is None
    # nor does the deprecated histogram count the stream the stop cut as served (one
    # its client stopped reading it does, as it always has)
    metrics.observe(record(status=200, error="client_disconnected", stream=True))
    s = scrape(metrics)
    assert value(s, "llmroute_upstream_seconds_count", model="large") == 1
    assert value(s, "llmroute_upstream_seconds_count", model="embed") is None


def test_long_answers_and_long_thinking_fall_in_buckets_of_their_own() -> None:
    """A reasoning answer of minutes (the buckets stopped at 120 s) and a first token
    after a minute and a half of thinking (at 30 s) landed in ``+Inf``."""
    metrics = GatewayMetrics()
    metrics.observe(record(latency_ms=200_000.0, ttft_ms=90_000.0, stream=True))
    s = scrape(metrics)
    for name in ("llmroute_upstream_seconds_bucket", "llmroute_request_seconds_bucket"):
        labels = {"outcome": "ok"} if "request" in name else {}
        assert value(s, name, model="large", le="120.0", **labels) == 0
        assert value(s, name, model="large", le="300.0", **labels) == 1
    assert value(s, "llmroute_ttft_seconds_bucket", model="large", le="60.0") == 0
    assert value(s, "llmroute_ttft_seconds_bucket", model="large", le="120.0") == 1


def test_a_decision_that_calls_a_model_falls_in_a_bucket_of_its_own() -> None:
    """The LLM router's call (0.1-0.3 s, its timeout 0.3 s) is told apart from a hang."""
    slow = replace(decision(), total_us=180_000.0)
    metrics = GatewayMetrics()
    metrics.observe_decision(slow)
    s = scrape(metrics)
    assert value(s, "llmroute_decision_seconds_bucket", layer="total", le="0.1") == 0
    assert value(s, "llmroute_decision_seconds_bucket", layer="total", le="0.25") == 1


def test_a_cascades_escalations_are_counted_per_route() -> None:
    """The dispatcher counts fallbacks; a cascade's escalations (each a tier paid for and
    passed over) are counted from the record, so their rate can be alerted on."""
    metrics = GatewayMetrics()
    tiers = ("small escalated: heuristic (refusal)", "medium escalated: verifier (p_yes=0.20)")
    metrics.observe(record(decision("maths", "small"), attempts=tiers))
    metrics.observe(record(decision("ops", "broken"), attempts=("broken via up (HTTP 503)",)))
    s = scrape(metrics)
    assert value(s, "llmroute_escalations_total", route="maths") == 2
    assert value(s, "llmroute_escalations_total", route="ops") is None  # a failure: none


def test_route_only_decisions_count_no_request() -> None:
    metrics = GatewayMetrics()
    metrics.observe_decision(decision("chat", "small", safety=None, reasoning=None))
    s = scrape(metrics)
    assert value(s, "llmroute_decisions_total", route="chat", layer="intent") == 1
    assert value(s, "llmroute_decision_seconds_count", layer="total") == 1
    assert not any(name == "llmroute_requests_total" for name, _ in s)


def test_drops_shadow_and_queue_depth() -> None:
    metrics = GatewayMetrics()
    metrics.on_drop(3, "queue_full")
    metrics.telemetry_dropped(2, "queue_full")
    metrics.shadow("sent")
    metrics.shadow("dropped_saturated")
    metrics.depth_reporter()(7)
    s = scrape(metrics)
    assert value(s, "llmroute_telemetry_dropped_total", reason="queue_full") == 5
    assert value(s, "llmroute_shadow_total", outcome="sent") == 1
    assert value(s, "llmroute_shadow_total", outcome="dropped_saturated") == 1
    assert value(s, "llmroute_telemetry_queue_depth") == 7


def test_the_queue_depth_is_the_sum_of_the_live_writers_queues() -> None:
    """After a reload the old log's writer drains beside the new one's: each reports its
    own queue, the gauge says both, and a drained writer drops out (each set the gauge
    to its own count, so the last to speak hid the other)."""
    metrics = GatewayMetrics()
    old, new = metrics.depth_reporter(), metrics.depth_reporter()
    old(5)
    new(3)
    assert value(scrape(metrics), "llmroute_telemetry_queue_depth") == 8
    old(0)
    assert value(scrape(metrics), "llmroute_telemetry_queue_depth") == 3
    new(0)
    assert value(scrape(metrics), "llmroute_telemetry_queue_depth") == 0


def test_the_decision_logs_writer_sets_the_queue_depth(tmp_path: Path) -> None:
    """The gauge follows the gateway's writer (it read 0 whatever the queue held):
    records offered before the thread's first wake are seen waiting, then drained."""
    from llmroute.registry.schema import TelemetrySettings
    from llmroute.telemetry.service import Telemetry

    depths: list[int] = []

    class Seen(GatewayMetrics):
        def depth_reporter(self) -> Callable[[int], None]:
            report = super().depth_reporter()

            def seen(depth: int) -> None:
                depths.append(depth)
                report(depth)

            return seen

    metrics = Seen()
    url = f"sqlite:///{tmp_path / 'log.db'}"
    settings = TelemetrySettings(url=url, flush_seconds=0.5)
    telemetry = Telemetry.open(settings, metrics, {})
    assert telemetry.writer is not None
    for _ in range(3):  # the thread first wakes after flush_seconds
        assert telemetry.writer.offer(record())
    asyncio.run(telemetry.aclose(5))
    assert depths[0] == 3 and depths[-1] == 0
    assert value(scrape(metrics), "llmroute_telemetry_queue_depth") == 0


def test_each_instance_has_its_own_registry() -> None:
    one, two = GatewayMetrics(), GatewayMetrics()
    one.observe(record())
    assert (
        value(scrape(two), "llmroute_requests_total", route="code", model="large", status="200")
        is None
    )
    text = generate_latest(one.registry).decode()
    assert 'llmroute_requests_total{model="large",route="code",status="200"} 1.0' in text
    assert one.multiprocess_dir is None and multiprocess_dir() is None


# -- the dispatcher, against a real fake upstream --------------------------------------------

REGISTRY = """
encoder: builtin:static
providers:
  up: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  a: {provider: up, model: 'a?status=500&times=1'}
  bad: {provider: up, model: fail-500}
  b: {provider: up, model: b}
routes:
  - {name: r, examples: [hello], target: a}
default: {target: a}
dispatch:
  retries: {attempts: 2, backoff_s: 0.01, max_backoff_s: 0.01}
  breaker: {failures: 3, cooldown_s: 300, window_s: 60, min_requests: 100}
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as up:
        yield up


@pytest.fixture
def registry(upstream: FakeUpstream) -> Registry:
    return parse_registry(REGISTRY % {"url": upstream.url}).registry


def plan(*chain: str) -> Plan:
    return Plan(decision("r", chain[0], safety=None, reasoning=None), chain)


async def _no_sleep(_: float) -> None:
    return None


def dispatcher(registry: Registry, metrics: GatewayMetrics) -> Dispatcher:
    return Dispatcher(
        registry,
        build_providers(registry),
        rng=random.Random(1),
        sleep=_no_sleep,
        observer=metrics,
    )


def test_attempts_retries_fallbacks_and_breakers_from_the_dispatcher(registry: Registry) -> None:
    metrics = GatewayMetrics()
    body = {"messages": [{"role": "user", "content": "hi"}]}

    async def main() -> Samples:
        d = dispatcher(registry, metrics)
        try:
            served = await d.complete(plan("a"), dict(body))  # one 500, one retry, ok
            assert served.model == "a"
            served = await d.complete(plan("bad", "b"), dict(body))  # 3 x 500, then b
            assert served.model == "b" and len(served.attempts) == 1
            with pytest.raises(AllFallbacksFailed):  # bad's breaker is open now
                await d.complete(plan("bad"), dict(body))
            breaker = d.deployments.pool("bad").deployments[0].breaker
            assert breaker.state is BreakerState.OPEN
            return scrape(metrics, d)
        finally:
            await d.aclose()

    s = asyncio.run(main())
    attempts = "llmroute_upstream_attempts_total"
    assert value(s, attempts, model="a", deployment="up", outcome="error") == 1
    assert value(s, attempts, model="a", deployment="up", outcome="ok") == 1
    assert value(s, attempts, model="bad", deployment="up", outcome="error") == 3
    assert value(s, attempts, model="b", deployment="up", outcome="ok") == 1
    assert value(s, "llmroute_retries_total", model="a") == 1
    assert value(s, "llmroute_retries_total", model="bad") == 2
    assert value(s, "llmroute_fallbacks_total", route="r") == 1
    gauge = "llmroute_breaker_open"
    assert value(s, gauge, model="bad", deployment="up", upstream="fail-500") == 1
    assert value(s, gauge, model="b", deployment="up", upstream="b") == 0
    assert value(s, gauge, model="a", deployment="up", upstream="a?status=500&times=1") == 0
    # no dispatcher at scrape time (before the first registry loads): no breaker samples
    assert not any(name == gauge for name, _ in scrape(metrics))


def test_a_breaker_forced_open_reads_1_until_a_probe_closes_it(registry: Registry) -> None:
    now = [1000.0]
    metrics = GatewayMetrics()
    d = Dispatcher(registry, build_providers(registry), clock=lambda: now[0], observer=metrics)
    breaker = d.deployments.pool("b").deployments[0].breaker
    for _ in range(breaker.settings.failures):
        assert breaker.allow()
        breaker.record_failure()
    gauge = "llmroute_breaker_open"
    labels = {"model": "b", "deployment": "up", "upstream": "b"}
    assert value(scrape(metrics, d), gauge, **labels) == 1
    now[0] += breaker.settings.cooldown_s
    assert breaker.state is BreakerState.HALF_OPEN
    assert value(scrape(metrics, d), gauge, **labels) == 1
    assert breaker.allow()
    breaker.record_success()
    assert value(scrape(metrics, d), gauge, **labels) == 0
    asyncio.run(d.aclose())


def test_the_metrics_endpoint() -> None:
    metrics = GatewayMetrics()
    metrics.observe(record())
    app = Starlette(routes=[Route("/metrics", metrics_endpoint, methods=["GET"])])
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 503  # no app.state.metrics yet
        app.state.metrics = metrics
        app.state.gateway = None
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    s = samples(response.text)
    assert value(s, "llmroute_requests_total", route="code", model="large", status="200") == 1


# -- multi-process mode ------------------------------------------------------------------------

WORKER = """
import json, sys
from tests.telemetry.test_gateway_metrics import decision, record
from llmroute.telemetry.metrics import BudgetReading, GatewayMetrics, multiprocess_dir

metrics = GatewayMetrics()
assert metrics.multiprocess_dir == multiprocess_dir() is not None
for _ in range(int(sys.argv[1])):
    metrics.observe(record())
metrics.on_drop(1, "queue_full")
metrics.depth_reporter()(int(sys.argv[1]))
if sys.argv[2] == "render":
    budgets = [
        BudgetReading("key", "team", "day", True, 5.0, 1.25),
        BudgetReading("model", "large", "hour", False, 2.0, None),  # the store did not answer
    ]
    body, _ = metrics.render(budgets=budgets)
    sys.stdout.write(body.decode())
"""


def _worker(env: dict[str, str], n: int, render: bool) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(WORKER), str(n), "render" if render else "-"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_multiprocess_mode_merges_the_workers(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests" / "support")]),
    }
    _worker(env, 2, render=False)
    _worker(env, 3, render=False)
    assert any(p.name.startswith("counter_") for p in tmp_path.iterdir())
    s = samples(_worker(env, 1, render=True))
    assert value(s, "llmroute_requests_total", route="code", model="large", status="200") == 6
    assert value(s, "llmroute_upstream_seconds_count", model="large") == 6
    assert value(s, "llmroute_decision_seconds_count", layer="intent") == 6
    assert value(s, "llmroute_telemetry_dropped_total", reason="queue_full") == 3
    # a live gauge: the workers that exited took their queue depth with them
    assert value(s, "llmroute_telemetry_queue_depth") == 1

    # budgets as the scraped worker read them (the same for all when counted in Redis)
    def budget(metric: str, **labels: str) -> float | None:  # a label is called "name"
        return s.get((metric, tuple(sorted(labels.items()))))

    team = {"kind": "key", "name": "team", "period": "day"}
    assert budget("llmroute_budget_usd", **team, hard="true") == 5.0
    assert budget("llmroute_budget_spent_usd", **team) == 1.25
    large = {"kind": "model", "name": "large", "period": "hour"}
    assert budget("llmroute_budget_usd", **large, hard="false") == 2.0
    assert budget("llmroute_budget_spent_usd", **large) is None


def test_single_process_mode_ignores_a_multiproc_dir_set_too_late(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert multiprocess_dir() is None  # prometheus_client was imported without it
    metrics = GatewayMetrics()
    metrics.observe(record())
    assert metrics.multiprocess_dir is None
    assert list(tmp_path.iterdir()) == []
    assert "imported before" in caplog.text
    s = scrape(metrics)  # as usual
    assert value(s, "llmroute_requests_total", route="code", model="large", status="200") == 1
