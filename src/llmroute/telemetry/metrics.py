"""`GatewayMetrics`: the gateway's Prometheus metrics, on their own registry.

One `GatewayMetrics` per process (``app.state.metrics``). The gateway tells it of
every chat request once it is over (`observe`, from the request's `DecisionRecord`),
of every ``/v1/route`` decision (`observe_decision`), of the decision log's drops
(`on_drop`) and of shadow requests (`shadow`). Passed to the `Dispatcher` as its
``observer``, it also counts upstream attempts, retries and fallbacks. `render` is the
``/metrics`` body; circuit-breaker gauges are read from the current dispatcher then.

Metrics (all prefixed ``llmroute_``):

- ``requests_total{route, model, status}``: chat requests, and embeddings and rerank
  requests under route ``(embeddings)``, ``(rerank)`` (`observe_unrouted`); `model` is
  the pool model that served, else the decided one; `status` the HTTP status the client
  got;
- ``decisions_total{route, layer}``: every routing decision (chat and ``/v1/route``);
- ``decision_seconds{layer}``: each layer's time (skipped layers left out), plus
  ``layer="encode"`` (when the request was encoded) and ``layer="total"``;
- ``request_seconds{model, outcome}``: arrival to last byte of every chat, embeddings
  and rerank request (the decision, failed attempts and a stream's whole length in it),
  by `request_outcome`: ``ok``, ``error`` (a 429 every upstream gave too),
  ``timeout`` (504), ``rejected`` (another 4xx), ``cancelled`` (its client left) or
  ``shutdown`` (cut by the gateway's stop), so failed requests are timed too;
  ``upstream_seconds{model}``: deprecated, the same for the requests a model served
  (``ok``, a stream that broke after its 200 and one its client stopped reading; not
  one the gateway's stop cut, ``shutdown``), kept for the dashboards built on it;
  ``ttft_seconds{model}``: arrival to first streamed event;
- ``tokens_total{model, direction="in|out"}``, ``cost_usd_total{route, model}``: each
  model's own (a cascade's tiers passed over and its gates' calls under theirs, not
  the served model's: `DecisionRecord.usage_by_model`);
- ``upstream_attempts_total{model, deployment, outcome}``,
  ``upstream_streams_total{model, deployment, outcome}`` (how a stream whose attempt was
  ``ok`` ended), ``retries_total{model}``,
  ``fallbacks_total{route}``,
  ``escalations_total{route}`` (a cascade's tiers passed over, from the record),
  ``limited_total{model, limit="rpm|in_flight|budget|key_budget"}``: from the dispatcher
  (zero unless it is observed);
- ``breaker_open{model, deployment, upstream}``: 1 while a deployment's breaker is open
  or half-open, 0 closed;
- ``state_errors_total{feature="limits|breakers|affinity"}``: Redis calls of the shared
  limits and budgets, the shared breakers or conversation affinity that failed (requests
  went on without them);
- ``safety_actions_total{action}``, ``reasoning_total{needed="true|false"}``;
- ``answer_pii_total{type}``: PII spans redacted from answers on their way to the
  client (a safety profile's ``answer_pii``; llmroute.safety.answer_pii);
- ``telemetry_dropped_total{reason}``, ``telemetry_queue_depth``, ``shadow_total{outcome}``;
- ``telemetry_errors_total{part="span|record"}``: bugs recording a request (``span``:
  any request's; ``record``: an answered stream's), logged, its answer served all the same;
- ``llm_router_total{outcome}``: LLM router calls (llmroute.layers.llm_router);
- ``affinity_total{outcome}``: requests conversation affinity applied to
  (llmroute.dispatch.affinity);
- ``stored_responses_total{outcome}``: the Responses front's kept responses
  (llmroute.state.stored_responses): ``kept``, ``too_large``, ``continued``,
  ``not_found``, ``broken``, ``error``;
- ``conversations_total{outcome}``: the Conversations API and Responses turns added to
  a conversation (llmroute.server.conversations): ``created``, ``items_added``,
  ``turn_added``, ``deleted``, ``not_found``, ``error``;
- ``background_responses_total{outcome}``: ``background: true`` Responses requests
  (llmroute.server.responses_background): ``started``, ``completed``, ``failed``,
  ``cancelled``, ``refused`` (over ``stored_responses.max_background``), ``abandoned``
  (found by a read with its lease lapsed: the process making it died);
- ``batches_total{outcome}``: Batch API batches (llmroute.server.batch_run): ``created``,
  then ``completed``, ``failed``, ``expired``, ``cancelled``, ``abandoned`` (found by a
  read with its lease lapsed, in memory), ``handed_over`` (left by a stopping process),
  ``taken_over`` (run on by the process that read or swept it), ``reloaded`` (drained
  to go on under a reloaded registry) or ``lost`` (its run stalled past its lease and
  found another process running it); ``batches_running`` (this process's, now);
  ``batch_requests_total{outcome}``
  their requests, ``completed`` or ``failed`` (answered with an error status);
- ``cache_total{result}``: response cache lookups and writes (llmroute.state):
  ``hit``, ``miss``, ``bypass``, ``semantic_hit``, ``semantic_miss``, ``stored``,
  ``too_large``, ``evicted``, ``error``;
- ``auth_rejected_total{reason}``: requests the client-key check turned away:
  ``missing``, ``invalid``, ``forbidden``, ``rate_limited`` (llmroute.server.auth);
- ``browser_refused_total{reason}``: requests the browser checks refused
  (llmroute.server.browsers), the reason their error's code: ``cross_origin_forbidden``
  (a page of another origin), ``invalid_host`` (on loopback, a Host of another name);
- ``invalid_http_total``: connections whose bytes were not an HTTP/1.1 request, answered
  400 ``invalid_http_request`` before any app saw them (llmroute.server.invalid_http);
- ``api_errors_total{api, status}``: API requests answered with an error that no
  decision record counts (`api_error`): refused before routing or before the call (a
  malformed body, an unknown model, a bad tags header; embeddings and rerank too), and
  the errors of the APIs that are not logged (batches, files, stored responses), and an
  error after a routed request's record was written with another status (``late``); a
  failed embeddings or rerank call is logged, and counted in ``requests_total``;
  ``api`` is the path's first
  segment after ``/v1/`` (``chat``, ``messages``, ``responses``, ``completions``,
  ``embeddings``, ...; ``other`` for any other path);
- per gateway client key (``auth``; the keys are the registry's, so the label is
  bounded): ``client_requests_total{client, status}``, chat, embeddings and rerank
  requests of the key (those refused before routing included) and those the key check
  turned away (403, 429);
  ``client_tokens_total{client, direction}`` and ``client_cost_usd_total{client}``,
  what its requests used and cost (embeddings and rerank included: what its budget is
  charged).

Multi-process mode: when ``$PROMETHEUS_MULTIPROC_DIR`` is set before prometheus_client
is first imported (``llmroute serve --workers N`` does so), every worker writes its
values to files there and `render` merges them with prometheus_client's
`MultiProcessCollector`, whichever worker is scraped. Breaker gauges are then per
worker, merged by max (an open breaker in any live worker reads 1), and refreshed when
a worker makes an attempt or is scraped.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from llmroute.decision import Decision, Outcome
from llmroute.dispatch.breaker import BreakerState
from llmroute.telemetry.record import (
    CLIENT_CLOSED,
    CLIENT_DISCONNECTED,
    SERVER_SHUTDOWN,
    DecisionRecord,
    escalations,
)

if TYPE_CHECKING:
    from llmroute.dispatch.deployments import Deployment
    from llmroute.dispatch.dispatcher import Attempt, Dispatcher
    from llmroute.dispatch.usage import Usage

__all__ = [
    "DECISION_BUCKETS",
    "EMBEDDINGS_ROUTE",
    "RERANK_ROUTE",
    "TTFT_BUCKETS",
    "UPSTREAM_BUCKETS",
    "BudgetReading",
    "GatewayMetrics",
    "api_label",
    "metrics_for",
    "multiprocess_dir",
    "request_outcome",
    "watch_request",
]

log = logging.getLogger("llmroute.telemetry")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
EMBEDDINGS_ROUTE = "(embeddings)"  # the route label of embeddings' cost: no route name has "("
RERANK_ROUTE = "(rerank)"  # ... and of reranking's

# 10 µs .. 2.5 s: the router's layers and its whole decision. The local layers take
# microseconds; a model call in the decision (the LLM router: 0.1-0.3 s, its default
# `timeout_s` 0.3; an embeddings endpoint as the encoder) takes tenths of a second,
# which needs buckets of its own to be told from a hang.
DECISION_BUCKETS: tuple[float, ...] = (
    1e-5,
    2.5e-5,
    5e-5,
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    1e-2,
    2.5e-2,
    5e-2,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
# 50 ms .. 10 min: a long reasoning answer (or its stream) takes minutes, and its
# thinking time passes a minute before the first token
UPSTREAM_BUCKETS: tuple[float, ...] = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    4.0,
    8.0,
    15.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)
TTFT_BUCKETS: tuple[float, ...] = (
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    4.0,
    8.0,
    15.0,
    30.0,
    60.0,
    120.0,
)

_BREAKER_DOC = "1 while a deployment's circuit breaker is open or half-open, 0 when closed"
_BREAKER_LABELS = ("model", "deployment", "upstream")

# whether the request in this context has been counted (a box a child task's copy of the
# context shares): set by `watch_request`, marked by `observe` and `api_error`
_COUNTED: ContextVar[list[bool] | None] = ContextVar("llmroute_request_counted", default=None)
# the chat requests' own paths (not /v1/responses/{id}, /v1/messages/count_tokens ...)
_CHAT_PATHS = ("/v1/chat/completions", "/v1/messages", "/v1/responses", "/v1/completions")
# ... and every request path a client key's requests count by (the chat paths, and the
# APIs answered without routing: embeddings and rerank)
_REQUEST_PATHS = (*_CHAT_PATHS, "/v1/embeddings", "/v1/rerank", "/v2/rerank")
_APIS = frozenset(
    {
        *("chat", "messages", "responses", "completions"),
        *("embeddings", "rerank", "batches", "files", "route", "feedback", "conversations"),
        *("models", "key"),
    }
)


def watch_request() -> None:
    """Begin an HTTP request whose error answer `GatewayMetrics.api_error` counts once."""
    _COUNTED.set([False])


def _counted() -> None:
    box = _COUNTED.get()
    if box is not None:
        box[0] = True


def api_label(path: str) -> str | None:
    """The ``api`` label of a path: its first segment after ``/v1/`` (or ``/v2/``), one
    of a fixed set (``other`` for the rest, so a client's paths make no new series);
    None outside the API (probes, the dashboard, ``/metrics``)."""
    for version in ("/v1/", "/v2/"):
        at = path.find(version)
        if at >= 0:
            segment = path[at + 4 :].partition("/")[0]
            return segment if segment in _APIS else "other"
    return None


# the code of a 429 whose every upstream was rate limited (`server.errors`)
UPSTREAM_RATE_LIMITED = "upstream_rate_limited"


def request_outcome(status: int, error: str | None = None) -> str:
    """The ``outcome`` label of a request that ended with `status` and `error` (its
    code), in the words of the upstream attempts': ``cancelled`` (its client left),
    ``shutdown`` (cut by the gateway's own stop after the graceful timeout: its 503
    ``server_shutdown``, or a stream it cut after its 200; a deploy, neither a model's
    failure nor the request's, which an alert on ``error`` would page for),
    ``timeout`` (504), ``rejected`` (another 4xx: the request's own fault), ``error``
    (another 5xx, the 429 of a chain every upstream rate limited, which the attempts
    call ``error`` too: an outage that may pass, not the request's fault, or a stream
    that failed after its 200) or ``ok``."""
    if status == CLIENT_CLOSED or error == CLIENT_DISCONNECTED:
        return "cancelled"
    if error == SERVER_SHUTDOWN:
        return "shutdown"
    if status == 504:
        return "timeout"
    if 400 <= status < 500 and error != UPSTREAM_RATE_LIMITED:
        return "rejected"
    if status >= 500 or error is not None:
        return "error"
    return "ok"


M = TypeVar("M", Counter, Gauge, Histogram)


def multiprocess_dir() -> str | None:
    """The multi-process directory when this process writes its metrics there: the
    environment names one and prometheus_client was imported after it was set."""
    path = os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower())
    if not path:
        return None
    if values.ValueClass is values.MutexValue:
        log.warning(
            "%s is set but prometheus_client was imported before it: metrics stay per process",
            MULTIPROC_ENV,
        )
        return None
    return path


class _Children(Generic[M]):
    """A metric's labelled children, cached by label values: a dict lookup instead of
    `labels`' validation and lock on every observation."""

    __slots__ = ("_cache", "_metric")

    def __init__(self, metric: M) -> None:
        self._metric: M = metric
        self._cache: dict[tuple[str, ...], M] = {}

    def __call__(self, *labels: str) -> M:
        child = self._cache.get(labels)
        if child is None:
            child = self._cache[labels] = self._metric.labels(*labels)
        return child


class _BreakerCollector:
    """``llmroute_breaker_open`` read from `dispatcher` at scrape time."""

    def __init__(self) -> None:
        self.dispatcher: Dispatcher | None = None

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("llmroute_breaker_open", _BREAKER_DOC, labels=_BREAKER_LABELS)
        if self.dispatcher is not None:
            for labels, value in _breaker_states(self.dispatcher):
                family.add_metric(labels, value)
        return [family]


@dataclass(frozen=True, slots=True)
class BudgetReading:
    """A budget as read at scrape time: a pool model's or a client key's (`kind`), its
    cap, and what is spent this period (with the worst cases held by calls in flight,
    for a hard one); `spent_usd` None when the store did not answer."""

    kind: str
    name: str
    period: str
    hard: bool
    usd: float
    spent_usd: float | None


class _BudgetCollector:
    """``llmroute_budget_usd`` and ``llmroute_budget_spent_usd`` from the readings the
    scrape made (the counts may be in Redis: read before rendering)."""

    def __init__(self, readings: Sequence[BudgetReading] = ()) -> None:
        self.readings = readings

    def collect(self) -> Iterable[Metric]:
        cap = GaugeMetricFamily(
            "llmroute_budget_usd",
            "A pool model's or client key's budget per period, in USD",
            labels=("kind", "name", "period", "hard"),
        )
        spent = GaugeMetricFamily(
            "llmroute_budget_spent_usd",
            "Spent this period (UTC), in USD, with the worst cases calls in flight hold "
            "in a hard budget",
            labels=("kind", "name", "period"),
        )
        for reading in self.readings:
            labels = [reading.kind, reading.name, reading.period]
            cap.add_metric([*labels, str(reading.hard).lower()], reading.usd)
            if reading.spent_usd is not None:
                spent.add_metric(labels, reading.spent_usd)
        return [cap, spent]


def _breaker_states(dispatcher: Dispatcher) -> Iterable[tuple[Sequence[str], float]]:
    for model, pool in dispatcher.deployments.pools().items():
        for deployment in pool.deployments:
            is_open = deployment.breaker.state is not BreakerState.CLOSED
            yield (model, deployment.provider_name, deployment.upstream), float(is_open)


_atexit_registered = False


def _mark_dead_at_exit(path: str) -> None:
    """Remove this process's live gauges from `path` when it exits cleanly."""
    global _atexit_registered
    if not _atexit_registered:
        _atexit_registered = True
        atexit.register(multiprocess.mark_process_dead, os.getpid(), path)


_SHARED: weakref.WeakKeyDictionary[CollectorRegistry, GatewayMetrics] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def metrics_for(registry: CollectorRegistry) -> GatewayMetrics:
    """The one `GatewayMetrics` registered in `registry` (created on first use), so two
    SDK routers given the same registry count into the same metrics instead of
    registering them twice."""
    with _SHARED_LOCK:
        metrics = _SHARED.get(registry)
        if metrics is None:
            metrics = _SHARED[registry] = GatewayMetrics(registry)
        return metrics


class GatewayMetrics:
    """The gateway's metrics. `registry` is its own (single-process mode); in
    multi-process mode (`multiprocess_dir`) the metrics are registered nowhere and
    `render` merges every worker's files."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir()
        mp = self.multiprocess_dir is not None
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = None if mp else self.registry

        def counter(name: str, doc: str, labels: Sequence[str]) -> Counter:
            return Counter(name, doc, labels, registry=reg)

        def histogram(
            name: str, doc: str, labels: Sequence[str], buckets: Sequence[float]
        ) -> Histogram:
            return Histogram(name, doc, labels, registry=reg, buckets=buckets)

        self._requests = _Children(
            counter(
                "llmroute_requests",
                "Requests: chat, and embeddings and rerank under route (embeddings), (rerank)",
                ("route", "model", "status"),
            )
        )
        self._decisions = _Children(
            counter("llmroute_decisions", "Routing decisions", ("route", "layer"))
        )
        self._decision_seconds = _Children(
            histogram(
                "llmroute_decision_seconds",
                "Routing time per layer, encoding and in total",
                ("layer",),
                DECISION_BUCKETS,
            )
        )
        self._request_seconds = _Children(
            histogram(
                "llmroute_request_seconds",
                "Request latency, arrival to last byte, by outcome: ok, error, timeout, "
                "rejected, cancelled, shutdown",
                ("model", "outcome"),
                UPSTREAM_BUCKETS,
            )
        )
        self._upstream_seconds = _Children(
            histogram(
                "llmroute_upstream_seconds",
                "Deprecated (llmroute_request_seconds): request latency, arrival to last "
                "byte, of requests a model served",
                ("model",),
                UPSTREAM_BUCKETS,
            )
        )
        self._ttft_seconds = _Children(
            histogram(
                "llmroute_ttft_seconds",
                "Streams: arrival to the first event",
                ("model",),
                TTFT_BUCKETS,
            )
        )
        self._tokens = _Children(
            counter("llmroute_tokens", "Tokens in and out", ("model", "direction"))
        )
        self._cost = _Children(counter("llmroute_cost_usd", "Cost in USD", ("route", "model")))
        self._attempts = _Children(
            counter(
                "llmroute_upstream_attempts",
                "Upstream calls by outcome: ok, error, timeout, rejected, cancelled",
                ("model", "deployment", "outcome"),
            )
        )
        self._streams = _Children(
            counter(
                "llmroute_upstream_streams",
                "Upstream streams that opened, by how they ended: ok, error, timeout, "
                "rejected, cancelled",
                ("model", "deployment", "outcome"),
            )
        )
        self._retries = _Children(counter("llmroute_retries", "Retries of a model", ("model",)))
        self._fallbacks = _Children(
            counter("llmroute_fallbacks", "Falls back to the next model of a chain", ("route",))
        )
        self._escalations = _Children(
            counter(
                "llmroute_escalations",
                "Cascade tiers whose answer a quality gate passed over for the next tier",
                ("route",),
            )
        )
        self._limited = _Children(
            counter(
                "llmroute_limited",
                "Models skipped at their request limit or over their budget",
                ("model", "limit"),
            )
        )
        self._state_errors = _Children(
            counter(
                "llmroute_state_errors",
                "Redis calls of the shared request limits and budgets, the shared breakers "
                "or conversation affinity that failed (requests went on without them)",
                ("feature",),
            )
        )
        self._safety = _Children(
            counter("llmroute_safety_actions", "Safety layer actions", ("action",))
        )
        self._reasoning = _Children(
            counter("llmroute_reasoning", "Reasoning gate calls", ("needed",))
        )
        self._dropped = _Children(
            counter("llmroute_telemetry_dropped", "Decision-log records dropped", ("reason",))
        )
        self._telemetry_errors = _Children(
            counter(
                "llmroute_telemetry_errors",
                "Bugs recording a request (its span, an answered stream's record): logged, "
                "the answer served all the same",
                ("part",),
            )
        )
        self._shadow = _Children(
            counter("llmroute_shadow", "Shadow requests by outcome", ("outcome",))
        )
        self._llm_router = _Children(
            counter("llmroute_llm_router", "LLM router calls by outcome", ("outcome",))
        )
        self._affinity = _Children(
            counter("llmroute_affinity", "Conversation affinity by outcome", ("outcome",))
        )
        self._conversations = _Children(
            counter("llmroute_conversations", "Conversations by outcome", ("outcome",))
        )
        self._stored_responses = _Children(
            counter("llmroute_stored_responses", "Kept Responses-API responses", ("outcome",))
        )
        self._background = _Children(
            counter(
                "llmroute_background_responses",
                "Background Responses-API requests by outcome",
                ("outcome",),
            )
        )
        self._batches = _Children(
            counter("llmroute_batches", "Batch API batches by outcome", ("outcome",))
        )
        self._batch_requests = _Children(
            counter("llmroute_batch_requests", "Requests of Batch API batches", ("outcome",))
        )
        self._answer_pii = _Children(
            counter("llmroute_answer_pii", "PII spans redacted from answers by type", ("type",))
        )
        self._cache = _Children(
            counter("llmroute_cache", "Response cache lookups and writes by result", ("result",))
        )
        self._auth = _Children(
            counter("llmroute_auth_rejected", "Requests turned away by the key check", ("reason",))
        )
        self._browser_refused = _Children(
            counter(
                "llmroute_browser_refused",
                "Requests the browser checks refused: pages of other origins, other Host names",
                ("reason",),
            )
        )
        self._invalid_http = counter(
            "llmroute_invalid_http",
            "Connections whose bytes were not an HTTP/1.1 request (answered 400, closed)",
            (),
        )
        self._client_requests = _Children(
            counter(
                "llmroute_client_requests",
                "Requests of a client key (chat, embeddings, rerank), and those its key "
                "check refused",
                ("client", "status"),
            )
        )
        self._api_errors = _Children(
            counter(
                "llmroute_api_errors",
                "API requests answered with an error no decision record counts",
                ("api", "status"),
            )
        )
        self._client_tokens = _Children(
            counter(
                "llmroute_client_tokens",
                "Tokens of a client key's requests",
                ("client", "direction"),
            )
        )
        self._client_cost = _Children(
            counter(
                "llmroute_client_cost_usd", "Cost in USD of a client key's requests", ("client",)
            )
        )
        self.in_flight = Gauge(
            "llmroute_requests_in_flight",
            "API requests (/v1/...) being served now",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.batches_running = Gauge(
            "llmroute_batches_running",
            "Batch API batches this process runs now (those waiting for a slot included)",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self._queue_depth = Gauge(
            "llmroute_telemetry_queue_depth",
            "Decision-log records waiting to be written",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self._depths: dict[object, int] = {}  # each live writer's queue (`depth_reporter`)
        self._depths_lock = threading.Lock()
        self._breakers = _BreakerCollector()
        self._breaker_gauge: _Children[Gauge] | None = None
        self._breaker_set: set[tuple[str, ...]] = set()
        if self.multiprocess_dir is not None:
            self._breaker_gauge = _Children(
                Gauge(
                    "llmroute_breaker_open",
                    _BREAKER_DOC,
                    _BREAKER_LABELS,
                    registry=None,
                    multiprocess_mode="livemax",
                )
            )
            _mark_dead_at_exit(self.multiprocess_dir)
        else:
            self.registry.register(self._breakers)
        self._budgets = _BudgetCollector()
        if self.multiprocess_dir is None:
            self.registry.register(self._budgets)

    # -- the request path -------------------------------------------------------------------

    def observe(self, record: DecisionRecord) -> None:
        """One chat request, once it is over."""
        _counted()
        decision = record.decision
        served = record.served_model
        model = served or decision.model
        self._requests(decision.route, model, str(record.status)).inc()
        self._observe_decision(decision)
        seconds = record.latency_ms * 1e-3
        self._request_seconds(model, request_outcome(record.status, record.error)).observe(seconds)
        if served is not None and record.error != SERVER_SHUTDOWN:  # not one the stop cut
            self._upstream_seconds(model).observe(seconds)
        if record.ttft_ms is not None:
            self._ttft_seconds(model).observe(record.ttft_ms * 1e-3)
        if record.usage_by_model:  # several models paid for: each under its own
            for spender, usage in record.usage_by_model:
                self._spent(
                    decision.route,
                    spender,
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    usage.cost_usd,
                )
        else:
            self._spent(decision.route, model, record.tokens_in, record.tokens_out, record.cost_usd)
        escalated = escalations(record.attempts)
        if escalated:
            self._escalations(decision.route).inc(escalated)
        client = record.client
        if client is not None:
            self._client_requests(client, str(record.status)).inc()
            if record.tokens_in:
                self._client_tokens(client, "in").inc(record.tokens_in)
            if record.tokens_out:
                self._client_tokens(client, "out").inc(record.tokens_out)
            if record.cost_usd:
                self._client_cost(client).inc(record.cost_usd)

    def _spent(
        self,
        route: str,
        model: str,
        tokens_in: int | None,
        tokens_out: int | None,
        cost_usd: float | None,
    ) -> None:
        if tokens_in:
            self._tokens(model, "in").inc(tokens_in)
        if tokens_out:
            self._tokens(model, "out").inc(tokens_out)
        if cost_usd:
            self._cost(route, model).inc(cost_usd)

    def observe_unrouted(
        self,
        route: str,
        model: str,
        usage: Usage | None,
        client: str | None = None,
        *,
        status: int = 200,
        error: str | None = None,
        latency_ms: float | None = None,
    ) -> None:
        """One request of an API that is not routed, ``/v1/embeddings`` or
        ``/v1/rerank``, once it is over: counted as a request under `route`
        (``(embeddings)``, ``(rerank)``: no route name has a parenthesis) and `status`,
        its latency (`latency_ms`: by the outcome of `status` and `error`, its code, and
        in the deprecated histogram when `model` answered it), its tokens and cost, and
        the client key's (what its budget is charged)."""
        _counted()
        self._requests(route, model, str(status)).inc()
        if latency_ms is not None:
            seconds = latency_ms * 1e-3
            self._request_seconds(model, request_outcome(status, error)).observe(seconds)
            if status < 400:
                self._upstream_seconds(model).observe(seconds)
        tokens = 0 if usage is None else usage.prompt_tokens
        cost = 0.0 if usage is None else usage.cost_usd
        if tokens:
            self._tokens(model, "in").inc(tokens)
        if cost:
            self._cost(route, model).inc(cost)
        if client is not None:
            self._client_requests(client, str(status)).inc()
            if tokens:
                self._client_tokens(client, "in").inc(tokens)
            if cost:
                self._client_cost(client).inc(cost)

    def observe_decision(self, decision: Decision) -> None:
        """A decision made without a request upstream (``/v1/route``)."""
        self._observe_decision(decision)

    def _observe_decision(self, decision: Decision) -> None:
        self._decisions(decision.route, decision.layer).inc()
        seconds = self._decision_seconds
        for signal in decision.signals:
            if signal.outcome is not Outcome.SKIPPED:
                seconds(signal.layer).observe(signal.elapsed_us * 1e-6)
        if decision.encode_us > 0:
            seconds("encode").observe(decision.encode_us * 1e-6)
        seconds("total").observe(decision.total_us * 1e-6)
        if decision.safety is not None:
            self._safety(decision.safety.action).inc()
        if decision.reasoning is not None:
            self._reasoning("true" if decision.reasoning.needed else "false").inc()

    # -- the dispatcher's observer (`llmroute.dispatch.dispatcher.DispatchObserver`) --------

    def on_attempt(self, attempt: Attempt) -> None:
        deployment = attempt.deployment
        self._attempts(attempt.model, deployment.provider_name, attempt.outcome).inc()
        self._breaker_now(attempt.model, deployment)

    def on_stream_end(self, attempt: Attempt, outcome: str, error: BaseException | None) -> None:
        """The stream `attempt` opened (counted ``ok``) ended: ``ok`` whole, else broken
        (``error``, ``timeout``), ``rejected`` or ``cancelled`` (its client left); its end
        may have opened the breaker."""
        deployment = attempt.deployment
        self._streams(attempt.model, deployment.provider_name, outcome).inc()
        self._breaker_now(attempt.model, deployment)

    def _breaker_now(self, model: str, deployment: Deployment) -> None:
        if self._breaker_gauge is not None:
            is_open = deployment.breaker.state is not BreakerState.CLOSED
            labels = (model, deployment.provider_name, deployment.upstream)
            self._breaker_gauge(*labels).set(float(is_open))
            self._breaker_set.add(labels)

    def on_retry(self, model: str, delay_s: float) -> None:
        self._retries(model).inc()

    def on_fallback(self, route: str, model: str, next_model: str) -> None:
        self._fallbacks(route).inc()

    def on_limited(self, model: str, limit: str) -> None:
        """`model` was skipped: every deployment at its ``rpm``, or over its ``budget``."""
        self._limited(model, limit).inc()

    def on_state_error(self, feature: str) -> None:
        """A Redis call of the shared `feature` (``limits``, ``breakers``, ``affinity``)
        failed: requests went on without it (limits and budgets not counted, each
        process's own breakers, turns routed on their own)."""
        self._state_errors(feature).inc()

    def state_error(self, feature: str) -> Callable[[], None]:
        """`on_state_error` of `feature`, as a callback."""
        return functools.partial(self.on_state_error, feature)

    # -- telemetry and shadow ---------------------------------------------------------------

    def on_drop(self, n: int, reason: str) -> None:
        """The decision-log writer dropped `n` records (a full queue, a failed write, a
        row that could not be built)."""
        self._dropped(reason).inc(n)

    telemetry_dropped = on_drop  # the name `llmroute.telemetry.service` passes to the writer

    def telemetry_error(self, part: str) -> None:
        """A bug recording a request, logged and swallowed: ``span`` (any request's span
        outcome, its answer's or its error's: the span ended without it) or ``record``
        (an answered stream's decision record: no row, no request line, not in these
        metrics)."""
        self._telemetry_errors(part).inc()

    def depth_reporter(self) -> Callable[[int], None]:
        """One decision-log writer's ``on_depth``: the gauge is the sum of the queues of
        the writers alive, so a writer draining after a reload (the old log's, beside the
        new one's) neither hides the other's queue nor sets it back to its own."""
        key = object()

        def report(depth: int) -> None:
            with self._depths_lock:
                if depth:
                    self._depths[key] = depth
                else:  # drained (a closed writer's last word): no longer counted
                    self._depths.pop(key, None)
                self._queue_depth.set(sum(self._depths.values()))

        return report

    def shadow(self, outcome: str) -> None:
        """A shadow request: ``sent``, ``dropped_saturated``, ``error`` or
        ``not_stored``."""
        self._shadow(outcome).inc()

    def llm_router(self, outcome: str) -> None:
        """An LLM router call: ``chosen``, ``kept``, ``timeout``, ``error`` or ``saturated``."""
        self._llm_router(outcome).inc()

    def affinity(self, outcome: str) -> None:
        """A request conversation affinity applied to: ``first``, ``unknown``, ``same``,
        ``kept`` or ``upgraded`` (llmroute.dispatch.affinity)."""
        self._affinity(outcome).inc()

    def conversations(self, outcome: str) -> None:
        """A conversation request: ``created``, ``items_added``, ``turn_added`` (a
        response's), ``deleted``, ``not_found`` or ``error`` (llmroute.server.conversations)."""
        self._conversations(outcome).inc()

    def stored_responses(self, outcome: str) -> None:
        """A kept response: ``kept``, ``too_large`` (not kept), ``continued`` (a
        ``previous_response_id`` found), ``not_found``, ``broken`` (an earlier turn gone)
        or ``error`` (the store did not answer) (llmroute.state.stored_responses)."""
        self._stored_responses(outcome).inc()

    def background_responses(self, outcome: str) -> None:
        """A background response ``started``, ``completed``, ``failed``, ``cancelled``,
        ``refused`` or ``abandoned`` (llmroute.server.responses_background)."""
        self._background(outcome).inc()

    def batches(self, outcome: str) -> None:
        """A batch ``created``, ``completed``, ``failed``, ``expired``, ``cancelled``,
        ``abandoned``, ``handed_over``, ``taken_over``, ``reloaded`` or ``lost``
        (llmroute.server.batch_run)."""
        self._batches(outcome).inc()

    def batch_requests(self, outcome: str, n: int = 1) -> None:
        """`n` requests of a batch ``completed`` or ``failed``."""
        self._batch_requests(outcome).inc(n)

    def answer_pii(self, pii_type: str) -> None:
        """A PII span of `pii_type` redacted from an answer (a profile's ``answer_pii``)."""
        self._answer_pii(pii_type).inc()

    def cache(self, result: str) -> None:
        """A response cache result: ``hit``, ``miss``, ``bypass``, ``semantic_hit``,
        ``semantic_miss``, ``stored``, ``too_large``, ``evicted`` or ``error``."""
        self._cache(result).inc()

    def auth_rejected(self, reason: str, client: str | None = None, status: int = 0) -> None:
        """A request the client-key check turned away: ``missing``, ``invalid``,
        ``forbidden`` or ``rate_limited``; `client` the key's name when it was a known
        key (refused for its path or its limits) and `status` the answer's."""
        self._auth(reason).inc()
        if client is not None:
            self._client_requests(client, str(status)).inc()

    def browser_refused(self, reason: str) -> None:
        """A request the browser checks refused (llmroute.server.browsers):
        ``cross_origin_forbidden`` or ``invalid_host``, its error's code."""
        self._browser_refused(reason).inc()

    def invalid_http(self) -> None:
        """Bytes that were not an HTTP/1.1 request, answered 400 before the app saw
        them (llmroute.server.invalid_http)."""
        self._invalid_http.inc()

    def api_error(self, path: str, status: int, client: str | None, *, late: bool = False) -> None:
        """An API request (`watch_request`) answered with an error `status`, unless its
        answer was counted already by its record (`observe`): so a client broken by a
        model rename shows as 404s, not as no traffic at all. `late`: an error after its
        record was written with another status (a bug converting the model's answer for
        its front), counted here though the record counted the request, since the
        record's status is not the one the client got (a 5xx alert must see the 500);
        not again by its client key, whose request the record counted."""
        box = _COUNTED.get()
        if box is None or (box[0] and not late):
            return
        box[0] = True
        api = api_label(path)
        if api is None:
            return
        self._api_errors(api, str(status)).inc()
        if client is not None and not late and path.endswith(_REQUEST_PATHS):
            self._client_requests(client, str(status)).inc()

    # -- scraping ---------------------------------------------------------------------------

    def render(
        self, dispatcher: Dispatcher | None = None, budgets: Sequence[BudgetReading] = ()
    ) -> tuple[bytes, str]:
        """The ``/metrics`` body and its content type; breaker gauges from `dispatcher`
        (the current gateway's), none when it is None; budget gauges from `budgets`
        (read by the scraped process: shared by every worker when counted in Redis)."""
        if self.multiprocess_dir is not None:
            if dispatcher is not None:
                self._refresh_breakers(dispatcher)
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
            merged.register(_BudgetCollector(budgets))
            return generate_latest(merged), CONTENT_TYPE_LATEST
        self._breakers.dispatcher = dispatcher
        self._budgets.readings = budgets
        try:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        finally:
            self._breakers.dispatcher = None
            self._budgets.readings = ()

    def _refresh_breakers(self, dispatcher: Dispatcher) -> None:
        """This worker's breaker gauges from `dispatcher`; ones it no longer has read 0."""
        gauge = self._breaker_gauge
        assert gauge is not None
        current: set[tuple[str, ...]] = set()
        for labels, value in _breaker_states(dispatcher):
            key = tuple(labels)
            gauge(*key).set(value)
            current.add(key)
        for key in self._breaker_set - current:
            gauge(*key).set(0.0)
        self._breaker_set = current
