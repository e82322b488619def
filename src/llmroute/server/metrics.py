"""``GET /metrics``: the gateway's Prometheus metrics.

The endpoint reads the process's `GatewayMetrics` from ``request.app.state.metrics``
(set once in the lifespan, kept across registry reloads) and the current gateway from
``request.app.state.gateway`` (None before the first registry has loaded), whose
dispatcher's circuit breakers give the ``llmroute_breaker_open`` gauges. It answers 503
while no ``app.state.metrics`` is set.

With ``llmroute serve --workers N`` whichever worker is scraped answers for all of them
(``$PROMETHEUS_MULTIPROC_DIR``; see `llmroute.telemetry.metrics`).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from llmroute.server.state import Gateway
from llmroute.telemetry.metrics import GatewayMetrics

__all__ = ["metrics_endpoint"]


async def metrics_endpoint(request: Request) -> Response:
    metrics = getattr(request.app.state, "metrics", None)
    if not isinstance(metrics, GatewayMetrics):
        return PlainTextResponse("metrics are not enabled\n", status_code=503)
    gateway = getattr(request.app.state, "gateway", None)
    dispatcher = gateway.dispatcher if isinstance(gateway, Gateway) else None
    body, content_type = metrics.render(dispatcher)
    return Response(body, media_type=content_type)
