"""Trace context across the gateway, while tracing is on: read from a client's request,
so that the request span joins the client's trace, and sent on the upstream calls made
for it, so that a model server that traces (vLLM, an OpenTelemetry-instrumented proxy)
puts its spans in the same trace: under the attempt span of the call (`carry`, set as
each call starts), else under the request span (`upstream_trace`).

The headers are OpenTelemetry's global propagator's (W3C ``traceparent`` /
``tracestate`` and ``baggage`` unless ``OTEL_PROPAGATORS`` says otherwise), computed once
a request. With tracing off nothing here imports OpenTelemetry, and an upstream call pays
one context-variable read.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = ["caller_context", "carry", "upstream_headers", "upstream_trace"]

_UPSTREAM: ContextVar[dict[str, str] | None] = ContextVar("llmroute_upstream_trace", default=None)


def upstream_headers() -> dict[str, str] | None:
    """The trace headers an upstream call made now should carry (None: none)."""
    return _UPSTREAM.get()


@contextmanager
def upstream_trace(span: Span) -> Iterator[None]:
    """Inside the block, upstream calls carry `span`'s context (`upstream_headers`)."""
    from opentelemetry import propagate, trace

    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    token = _UPSTREAM.set(carrier or None)
    try:
        yield
    finally:
        _UPSTREAM.reset(token)


def carry(span: Span) -> None:
    """From now on in this context (an attempt's call, up to the next one or the end of
    `upstream_trace`'s block, which restores what was before), upstream calls carry
    `span`'s context."""
    from opentelemetry import propagate, trace

    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    _UPSTREAM.set(carrier or None)


def caller_context(headers: Mapping[str, str] | None) -> Any:
    """The trace context a client's request `headers` carry, as the parent for its
    request span; None (a new trace) when they carry none."""
    if not headers:
        return None
    from opentelemetry import propagate, trace

    context = propagate.extract(headers)
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    return context
