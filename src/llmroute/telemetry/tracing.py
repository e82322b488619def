"""Optional OpenTelemetry traces, after the GenAI semantic conventions.

`Tracing` is a no-op (one attribute check per call) unless it was given a
``TracerProvider`` or `tracing_from_env` enabled it: ``$LLMROUTE_OTEL`` is ``1``/``true``,
or the standard ``OTEL_TRACES_EXPORTER`` / ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, and opentelemetry-sdk is installed (the
``otel`` extra). ``LLMROUTE_OTEL=0`` turns it off whatever else is set. Enabled, it
builds its own ``TracerProvider`` (``service.name`` from ``$OTEL_SERVICE_NAME``, else
``llmroute``; the global provider is left alone) with a ``BatchSpanProcessor`` and the
OTLP/HTTP exporter (configured by the standard ``OTEL_EXPORTER_OTLP_*`` variables), or the
console exporter when ``OTEL_TRACES_EXPORTER=console``.

Each chat request gets a span ``chat {model}`` (kind SERVER; ``text_completion {model}``
for ``/v1/completions``) with one child per decision layer that ran
(``llmroute.layer.<name>``, and ``llmroute.encode``), rebuilt after the fact from the
decision's timings: the layers are laid end to end, ending when the request span is
started (their order and lengths are exact, their placement approximate). An embeddings
or rerank request, not routed, gets ``embeddings {model}`` / ``rerank {model}``
(`Tracing.start_unrouted`), with no layer children. Given to the `Dispatcher` as its
observer, `Tracing` adds a child span per upstream call (``chat {upstream model}``;
``text_completion``, ``embeddings`` or ``rerank`` for those calls; kind CLIENT; begun as
the call starts, so the call carries its context; a stream's ends when the stream does,
with ``llmroute.ttft_s`` and ``llmroute.stream.outcome``) and an event per retry and
fallback, under the request span that is current then (`RequestTrace.activate`).

In the gateway::

    trace = tracing.start_request(plan.decision)
    with trace.activate():                      # attempts become its children
        served = await dispatcher.complete(plan, body)
    ...
    trace.finish(record)                        # once the request is over, streams too
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from llmroute.decision import Decision, Outcome
from llmroute.dispatch.spend import failed_attempts
from llmroute.errors import ProviderError, identifier_code
from llmroute.telemetry.propagation import caller_context, carry, upstream_trace
from llmroute.telemetry.record import CLIENT_DISCONNECTED, DecisionRecord, escalations

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from opentelemetry.trace import Span, Tracer

    from llmroute.dispatch.deployments import Deployment
    from llmroute.dispatch.dispatcher import Attempt

__all__ = ["NO_TRACE", "OTEL_ENV", "RequestTrace", "Tracing", "tracing_from_env"]

log = logging.getLogger("llmroute.telemetry")

OTEL_ENV = "LLMROUTE_OTEL"
_ON = frozenset({"1", "true", "yes", "on"})
_OFF = frozenset({"0", "false", "no", "off"})
_NULL_CONTEXT: AbstractContextManager[None] = contextlib.nullcontext()
_INSTRUMENTATION = "llmroute"
# The upstream call in flight in this task: its span, begun by `attempt_starting`, and
# the deployment it went to (so that `on_attempt` ends that span and no other).
_LIVE: ContextVar[tuple[Span, object] | None] = ContextVar("llmroute_live_attempt", default=None)
_CANCELLED = "cancelled"  # the outcome of a call its request's client left (no failure)
# said on a whole stream's call span whose upstream broke once its [DONE] was read,
# and on its request span when that [DONE] had gone out to the client
_BROKE_AFTER_DONE = "llmroute.stream.broke_after_done"
_MAX_OPEN_STREAMS = 10_000  # stream spans kept open at once (a stream never ended: bounded)
# The GenAI conventions' `gen_ai.operation.name` of a request by the API it came by (the
# decision log's `api`); the rest (chat, messages, responses) are ``chat``. (``rerank`` is
# not one of the conventions' names: it is the dispatcher's for the call, too.)
_OPERATIONS = {"completions": "text_completion", "embeddings": "embeddings", "rerank": "rerank"}


class RequestTrace:
    """One request's span. This base class is the no-op one (`NO_TRACE`)."""

    __slots__ = ()

    def activate(self) -> AbstractContextManager[Any]:
        """Make the request span current, so the dispatcher's attempt spans are its
        children; it stays open on exit."""
        return _NULL_CONTEXT

    def finish(
        self, record: DecisionRecord | None = None, broke_after_done: BaseException | None = None
    ) -> None:
        """End the span, with the request's outcome from `record` (usage, served model,
        status) and `broke_after_done`, the break of a stream's upstream once its
        ``[DONE]`` had gone out to the client; the first call ends it, later ones do
        nothing."""

    def fail(self, error: BaseException, record: DecisionRecord | None = None) -> None:
        """End the span as failed by `error`: a request that ends without a record, or
        one a bug ended, whose `record` (its 500, what it had cost) gives the outcome
        while ``error.type`` names the exception."""


NO_TRACE = RequestTrace()


class _SpanTrace(RequestTrace):
    __slots__ = ("_ended", "span")

    def __init__(self, span: Span) -> None:
        self.span = span
        self._ended = False

    @contextlib.contextmanager
    def activate(self) -> Iterator[Any]:
        """The span current, and carried on the upstream calls made meanwhile."""
        from opentelemetry import trace

        with (
            trace.use_span(
                self.span, end_on_exit=False, record_exception=False, set_status_on_exception=False
            ),
            upstream_trace(self.span),
        ):
            yield self.span

    def finish(
        self, record: DecisionRecord | None = None, broke_after_done: BaseException | None = None
    ) -> None:
        """End the request's span with its outcome. A 5xx is a span error, and so is a
        stream that failed after its 200 was sent (broken off upstream, cut by a
        shutdown: the request failed, as one reset before its status would); a 4xx (the
        client's request refused: a bad body, a key over its limit, a blocked prompt) or
        a client that hung up (499, or a stream it left) leaves the status unset, as
        OpenTelemetry's HTTP server convention says, and its code goes to
        ``llmroute.error``. A whole stream whose upstream broke once its ``[DONE]`` had
        gone out (`broke_after_done`) is no error: it says the break as its call's span
        does (``llmroute.stream.broke_after_done``, and an event of that name with the
        break's ``error.type``). The span ends even when setting its outcome fails (a
        bug, raised on)."""
        if self._ended:
            return
        self._ended = True
        span = self.span
        try:
            if broke_after_done is not None:
                _said_broke_after_done(span, broke_after_done)
            if record is not None:
                span.set_attributes(_outcome_attributes(record))
                error = _code_said(record.error)
                if _failed(record):
                    from opentelemetry.trace import Status, StatusCode

                    span.set_attribute("error.type", error or str(record.status))
                    span.set_status(Status(StatusCode.ERROR, error))
                elif error is not None:
                    span.set_attribute("llmroute.error", error)
        finally:
            span.end()

    def fail(self, error: BaseException, record: DecisionRecord | None = None) -> None:
        """End the request's span as failed by `error` (its type), with `record`'s
        outcome when given. The span ends, failed, even when setting that outcome fails
        (a bug, raised on)."""
        if self._ended:
            return
        from opentelemetry.trace import Status, StatusCode

        try:
            self.span.set_attribute("error.type", _error_type(error))
            self.span.set_status(Status(StatusCode.ERROR, _described(error)))
            if record is not None:
                self.span.set_attributes(_outcome_attributes(record))
        finally:
            self.finish()


def _said_broke_after_done(span: Span, error: BaseException) -> None:
    """`span`, of a whole stream, says its upstream broke (`error`) after its ``[DONE]``."""
    span.set_attribute(_BROKE_AFTER_DONE, True)
    span.add_event(_BROKE_AFTER_DONE, {"error.type": _error_type(error)})


def _failed(record: DecisionRecord) -> bool:
    """Whether the request failed on the gateway's or its models' side: a 5xx, or an
    error after a 2xx was sent (a stream that broke) other than its client leaving."""
    if record.status >= 500:
        return True
    return record.status < 400 and record.error not in (None, CLIENT_DISCONNECTED)


class Tracing:
    """The gateway's tracer: disabled (every call a no-op) without a `tracer_provider`.
    `shutdown` flushes and closes a provider that `tracing_from_env` built."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        *,
        owned: bool = False,
        counted: _Counted | None = None,
    ):
        self._provider = tracer_provider
        self._owned = owned
        self._counted = counted  # the spans ended and exported, when `tracing_from_env` built it
        self._tracer: Tracer | None = (
            None if tracer_provider is None else tracer_provider.get_tracer(_INSTRUMENTATION)
        )
        self.enabled = self._tracer is not None
        # the spans of calls whose streams are still going, by id of their `Attempt`
        self._streams: dict[int, tuple[Attempt, Span]] = {}

    @property
    def observer(self) -> Tracing | None:
        """This, for the dispatcher's ``observer``, when enabled; else None (zero cost)."""
        return self if self.enabled else None

    # -- the request span ---------------------------------------------------------------

    def start_request(
        self,
        decision: Decision,
        *,
        start_ns: int | None = None,
        headers: Mapping[str, str] | None = None,
        api: str | None = None,
    ) -> RequestTrace:
        """Start the request's span (at `start_ns`, wall-clock nanoseconds, the request's
        arrival, when given) with a child span per decision layer, in the trace the
        client's request `headers` carry (``traceparent``), if any; named after the
        operation of the `api` it came by (``text_completion`` for ``/v1/completions``,
        else ``chat``). Call it right after the decision: the layers are placed to end
        now."""
        tracer = self._tracer
        if tracer is None:
            return NO_TRACE
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind

        now = time.time_ns()
        decided_at = now - int(decision.total_us * 1000)
        start = decided_at if start_ns is None else min(start_ns, decided_at)
        operation = _OPERATIONS.get(api or "", "chat")
        span = tracer.start_span(
            f"{operation} {decision.model}",
            context=caller_context(headers),
            kind=SpanKind.SERVER,
            start_time=start,
            attributes=_decision_attributes(decision, operation),
        )
        _layer_spans(tracer, trace.set_span_in_context(span), decision, decided_at)
        return _SpanTrace(span)

    def start_unrouted(
        self,
        api: str,
        model: str,
        route: str,
        request_id: str,
        *,
        start_ns: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> RequestTrace:
        """Start the span of a request answered without routing (`api` ``embeddings`` or
        ``rerank``) by the pool `model` it named: ``embeddings {model}`` (kind SERVER),
        with the metrics' `route` label and its decision log row's id (`request_id`, its
        ``x-request-id``), in the trace the client's `headers` carry, at `start_ns` (its
        arrival) when given. No layer children: nothing was decided."""
        tracer = self._tracer
        if tracer is None:
            return NO_TRACE
        from opentelemetry.trace import SpanKind

        operation = _OPERATIONS.get(api, api)
        span = tracer.start_span(
            f"{operation} {model}",
            context=caller_context(headers),
            kind=SpanKind.SERVER,
            start_time=start_ns,
            attributes={
                "gen_ai.operation.name": operation,
                "gen_ai.request.model": model,
                "llmroute.route": route,
                "llmroute.decision_id": request_id,
            },
        )
        return _SpanTrace(span)

    @contextlib.contextmanager
    def request_span(
        self, decision: Decision, *, start_ns: int | None = None
    ) -> Iterator[RequestTrace]:
        """`start_request` and `RequestTrace.activate` in one; the span ends on exit (as
        failed when an exception escapes) unless `RequestTrace.finish` ended it first."""
        request = self.start_request(decision, start_ns=start_ns)
        if request is NO_TRACE:
            yield request
            return
        try:
            with request.activate():
                yield request
        except BaseException as exc:
            request.fail(exc)
            raise
        request.finish()

    # -- the dispatcher's observer (`llmroute.dispatch.dispatcher.DispatchObserver`) ----

    def attempt_starting(self, operation: str, deployment: Deployment) -> None:
        """Start the call's span now, under the request span, and make the call carry
        its context, so that a model server that traces nests its spans under this
        attempt (a retry's, a fallback's), not under the request as a whole."""
        tracer = self._tracer
        if tracer is None:
            return
        from opentelemetry.trace import SpanKind

        span = tracer.start_span(f"{operation} {deployment.upstream}", kind=SpanKind.CLIENT)
        carry(span)
        _LIVE.set((span, deployment))

    def on_attempt(self, attempt: Attempt) -> None:
        """End the call's span (the one `attempt_starting` began, else one made now from
        the attempt's times) with what became of it."""
        tracer = self._tracer
        if tracer is None:
            return
        from opentelemetry.trace import SpanKind, Status, StatusCode

        live = _LIVE.get()
        end_ns = attempt.start_ns + int(attempt.elapsed_s * 1e9)
        if live is not None and live[1] is attempt.deployment and live[0].is_recording():
            _LIVE.set(None)
            span = live[0]
            span.set_attributes(_attempt_attributes(attempt))
            end_ns = time.time_ns()
        else:
            span = tracer.start_span(
                f"{attempt.operation} {attempt.upstream}",
                kind=SpanKind.CLIENT,
                start_time=attempt.start_ns,
                attributes=_attempt_attributes(attempt),
            )
        if attempt.error is not None:
            if attempt.outcome != _CANCELLED:  # its client left: the call did not fail
                span.set_status(Status(StatusCode.ERROR, _described(attempt.error)))
        elif attempt.stream:  # open until the stream ends (`on_stream_end`)
            span.set_attribute("llmroute.ttft_s", attempt.elapsed_s)
            self._keep_open(attempt, span)
            return
        span.end(end_time=end_ns)

    def _keep_open(self, attempt: Attempt, span: Span) -> None:
        streams = self._streams
        if len(streams) >= _MAX_OPEN_STREAMS:  # never told their end: end the oldest
            key = next(iter(streams))
            oldest = streams.pop(key)[1]
            oldest.set_attribute("llmroute.stream.outcome", "unknown")
            oldest.end()
        streams[id(attempt)] = (attempt, span)

    def on_stream_end(self, attempt: Attempt, outcome: str, error: BaseException | None) -> None:
        """End the span of the call that opened the stream, now that the stream has
        ended: a broken one (``error``, ``timeout``) or one the request's fault ended
        (``rejected``) is a span error; one its client left (``cancelled``) is not, nor
        a whole one (``ok``) whose upstream broke once its ``[DONE]`` was read (`error`:
        that break), which says so (``llmroute.stream.broke_after_done``, and an event
        of that name with the break's ``error.type``)."""
        kept = self._streams.pop(id(attempt), None)
        if kept is None:
            return
        span = kept[1]
        span.set_attribute("llmroute.stream.outcome", outcome)
        if error is not None and outcome == "ok":
            _said_broke_after_done(span, error)
        elif error is not None and outcome != _CANCELLED:
            from opentelemetry.trace import Status, StatusCode

            span.set_attribute("error.type", _error_type(error))
            span.set_status(Status(StatusCode.ERROR, _described(error)))
        span.end()

    def on_retry(self, model: str, delay_s: float) -> None:
        if self._tracer is None:
            return
        from opentelemetry import trace

        trace.get_current_span().add_event(
            "llmroute.retry", {"llmroute.model": model, "llmroute.retry.delay_s": delay_s}
        )

    def on_fallback(self, route: str, model: str, next_model: str) -> None:
        if self._tracer is None:
            return
        from opentelemetry import trace

        trace.get_current_span().add_event(
            "llmroute.fallback",
            {"llmroute.route": route, "llmroute.model": model, "llmroute.next_model": next_model},
        )

    def shutdown(self, within_s: float | None = None) -> bool:
        """Export the spans still pending and close the exporter, when this built the
        provider (once: again, it does nothing), for `within_s` at most (None: as long
        as the SDK takes); True when it ended in time. The SDK's own wait is long (30 s;
        older SDKs wait without a bound) and an export to a collector that accepts and
        never answers lasts ``OTEL_EXPORTER_OTLP_TIMEOUT`` (10 s by default) a batch, so
        the shutdown runs on a daemon thread of its own, left behind when `within_s`
        runs out: the spans not exported then are said, and lost as the process exits."""
        provider = self._provider if self._owned else None
        self._owned = False
        if provider is None:
            return True
        done = threading.Event()

        def shut() -> None:
            try:
                provider.shutdown()
            except Exception:  # an exporter's failure: said, and the stop goes on
                log.exception("tracing: shutting the span exporter down failed")
            finally:
                done.set()

        threading.Thread(target=shut, name="llmroute-tracing-shutdown", daemon=True).start()
        if done.wait(within_s):
            return True
        counted = self._counted
        left = counted.left() if counted is not None else 0
        log.warning(
            "stopping: tracing: %s not exported within %g s (the collector is slow or not "
            "answering): lost as the process exits",
            f"{left} span(s)" if left else "spans",
            round(within_s or 0.0, 2),
        )
        return False


def tracing_from_env(environ: Mapping[str, str] | None = None) -> Tracing:
    """`Tracing` as the environment asks (see the module docstring); disabled when it
    does not ask, or the SDK or the exporter is missing (logged)."""
    env = os.environ if environ is None else environ
    flag = env.get(OTEL_ENV, "").strip().lower()
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if flag in _OFF or exporter == "none":
        return Tracing()
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    if not (flag in _ON or exporter or endpoint):
        return Tracing()
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        log.warning("tracing asked for, but opentelemetry-sdk is not installed (llmroute[otel])")
        return Tracing()
    span_exporter: SpanExporter
    if exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        span_exporter = ConsoleSpanExporter()
    elif exporter in ("", "otlp"):
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning(
                "tracing asked for, but opentelemetry-exporter-otlp-proto-http is not "
                "installed (llmroute[otel])"
            )
            return Tracing()
        span_exporter = OTLPSpanExporter()
    else:
        log.warning("OTEL_TRACES_EXPORTER=%s is not supported (otlp, console): no traces", exporter)
        return Tracing()
    name = env.get("OTEL_SERVICE_NAME") or "llmroute"
    # shut down by the gateway, within its deadline (`Tracing.shutdown`), not at exit,
    # where the SDK's handler would wait on a collector that hangs once more (without a
    # bound in older SDKs), past the supervisor's kill
    provider = TracerProvider(
        resource=Resource.create({"service.name": name}), shutdown_on_exit=False
    )
    counted = _Counted(span_exporter)
    provider.add_span_processor(_counting_batches(counted))
    return Tracing(provider, owned=True, counted=counted)


class _Counted:
    """The spans the batch processor was given (`ended`: those recorded, which the
    SDK's samplers also sample) and its exporter was done with (`exported`, sent or
    failed): what a cut shutdown loses is the rest."""

    __slots__ = ("ended", "exported", "exporter")

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter
        self.ended = 0
        self.exported = 0

    def left(self) -> int:
        return max(0, self.ended - self.exported)


def _counting_batches(counted: _Counted) -> SpanProcessor:
    """A ``BatchSpanProcessor`` of `counted`'s exporter that counts in it: one addition
    per span ended, one per batch exported."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    inner = counted.exporter

    class Exporter(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            try:
                return inner.export(spans)
            finally:
                counted.exported += len(spans)

        def shutdown(self) -> None:
            inner.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return inner.force_flush(timeout_millis)

    queue = BatchSpanProcessor.on_end

    class Processor(BatchSpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            counted.ended += 1  # ~50 ns a span; testing `sampled` here cost 1.5 µs
            queue(self, span)

    return Processor(Exporter())


# -- attributes ---------------------------------------------------------------------------


def _decision_attributes(decision: Decision, operation: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.request.model": decision.model,
        "llmroute.route": decision.route,
        "llmroute.decision_id": decision.id,
        "llmroute.layer": decision.layer,
        "llmroute.confidence": decision.confidence,
        "llmroute.registry_version": decision.registry_version,
        "llmroute.decision_us": decision.total_us,
    }
    if decision.margin is not None:
        attributes["llmroute.margin"] = decision.margin
    if decision.safety is not None:
        attributes["llmroute.safety.action"] = decision.safety.action
    if decision.reasoning is not None:
        attributes["llmroute.reasoning.needed"] = decision.reasoning.needed
    return attributes


def _outcome_attributes(record: DecisionRecord) -> dict[str, Any]:
    attributes: dict[str, Any] = {"http.response.status_code": record.status}
    if record.served_model is not None:
        attributes["gen_ai.response.model"] = record.served_model
    if record.deployment is not None:
        attributes["llmroute.deployment"] = record.deployment
    if record.tokens_in is not None:
        attributes["gen_ai.usage.input_tokens"] = record.tokens_in
    if record.tokens_out is not None:
        attributes["gen_ai.usage.output_tokens"] = record.tokens_out
    if record.cost_usd is not None:
        attributes["llmroute.cost_usd"] = record.cost_usd
    if record.ttft_ms is not None:
        attributes["llmroute.ttft_ms"] = record.ttft_ms
    failed = _failures(record.attempts)
    if failed:
        attributes["llmroute.failed_attempts"] = failed
    if record.stream:
        attributes["llmroute.stream"] = True
    return attributes


def _failures(attempts: tuple[str, ...]) -> int:
    """How many of a request's `attempts` failed: not the tiers a cascade escalated from
    (answered, their answers passed over: `escalations`), nor the call a cut request was
    cut on (`failed_attempts`)."""
    kept = attempts[: failed_attempts(attempts)]  # (the cut entry is the last)
    return len(kept) - escalations(kept)


def _layer_spans(tracer: Tracer, parent: Any, decision: Decision, start_ns: int) -> None:
    """The layers that ran, end to end from `start_ns`, the encoder's time first."""
    cursor = start_ns
    if decision.encode_us > 0:
        cursor = _timed_span(
            tracer, parent, "llmroute.encode", cursor, decision.encode_us, {"llmroute.encode": True}
        )
    for signal in decision.signals:
        if signal.outcome is Outcome.SKIPPED:
            continue
        attributes: dict[str, Any] = {
            "llmroute.layer.name": signal.layer,
            "llmroute.layer.outcome": signal.outcome.value,
            "llmroute.layer.elapsed_us": signal.elapsed_us,
        }
        verdict = signal.verdict
        if verdict is not None:
            attributes["llmroute.route"] = verdict.route
            attributes["llmroute.model"] = verdict.model
            attributes["llmroute.confidence"] = verdict.confidence
        name = f"llmroute.layer.{signal.layer}"
        cursor = _timed_span(tracer, parent, name, cursor, signal.elapsed_us, attributes)


def _timed_span(
    tracer: Tracer,
    parent: Any,
    name: str,
    start_ns: int,
    elapsed_us: float,
    attributes: dict[str, Any],
) -> int:
    end_ns = start_ns + int(elapsed_us * 1000)
    span = tracer.start_span(name, context=parent, start_time=start_ns, attributes=attributes)
    span.end(end_time=end_ns)
    return end_ns


def _attempt_attributes(attempt: Attempt) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": attempt.operation,
        "gen_ai.request.model": attempt.upstream,
        "gen_ai.provider.name": attempt.provider_kind,
        "gen_ai.system": attempt.provider_kind,
        "llmroute.model": attempt.model,
        "llmroute.deployment": attempt.provider,
        "llmroute.retry": attempt.retry,
        "llmroute.attempt.outcome": attempt.outcome,
    }
    url = urlsplit(attempt.base_url)
    if url.hostname:
        attributes["server.address"] = url.hostname
        port = url.port or (443 if url.scheme == "https" else 80)
        attributes["server.port"] = port
    if attempt.stream:
        attributes["llmroute.stream"] = True
    error = attempt.error
    if error is not None and attempt.outcome != _CANCELLED:
        attributes["error.type"] = _error_type(error)
        if isinstance(error, ProviderError) and error.status is not None:
            attributes["http.response.status_code"] = error.status
    return attributes


def _described(error: BaseException) -> str:
    """What a span's status says of `error`: its class, and for an upstream's failure the
    provider's name, the HTTP status and the error code (fields the gateway set, a code
    only when it is a short identifier). Never the exception's text: a bug's can hold a
    URL with its password, a header, a prompt; an upstream's message can echo the
    request. Secrets and prompts never go to a tracing backend (the log has the text)."""
    said = type(error).__name__
    if not isinstance(error, ProviderError):
        return said
    parts = [f"provider {error.provider!r}"]
    if error.status is not None:
        parts.append(f"status {error.status}")
    if identifier_code(error.code) is not None:
        parts.append(f"code {error.code}")
    return f"{said}: {', '.join(parts)}"


def _code_said(code: str | None) -> str | None:
    """A request row's error code as its span says it: ``error`` for one that is not a
    short identifier (`identifier_code`, the rule a `ProviderError`'s code is kept by),
    as `_described` says an upstream's."""
    return code if code is None or identifier_code(code) is not None else "error"


def _error_type(error: BaseException) -> str:
    """Low-cardinality, as the conventions ask: the HTTP status, else the class name."""
    if isinstance(error, ProviderError) and error.status is not None:
        return str(error.status)
    return type(error).__name__
