"""``GET /metrics``: the gateway's Prometheus metrics.

The endpoint reads the process's `GatewayMetrics` from ``request.app.state.metrics``
(set once in the lifespan, kept across registry reloads) and the current gateway from
``request.app.state.gateway`` (None before the first registry has loaded), whose
dispatcher's circuit breakers give the ``llmroute_breaker_open`` gauges, and whose
limits store the budget gauges (``llmroute_budget_usd``, ``llmroute_budget_spent_usd``).
It answers 503 while no ``app.state.metrics`` is set.

With ``llmroute serve --workers N`` whichever worker is scraped answers for all of them
(``$PROMETHEUS_MULTIPROC_DIR``; see `llmroute.telemetry.metrics`).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from llmroute.dispatch.budgets import model_account
from llmroute.money import usd_figure
from llmroute.registry.schema import Budget
from llmroute.server.auth import account_of
from llmroute.server.state import Gateway
from llmroute.telemetry.metrics import BudgetReading, GatewayMetrics

__all__ = ["budget_readings", "metrics_endpoint"]


async def metrics_endpoint(request: Request) -> Response:
    metrics = getattr(request.app.state, "metrics", None)
    if not isinstance(metrics, GatewayMetrics):
        return PlainTextResponse("metrics are not enabled\n", status_code=503)
    gateway = getattr(request.app.state, "gateway", None)
    if not isinstance(gateway, Gateway):
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)
    body, content_type = metrics.render(gateway.dispatcher, await budget_readings(gateway))
    return Response(body, media_type=content_type)


async def budget_readings(gateway: Gateway) -> list[BudgetReading]:
    """The registry's budgets (pool models', client keys') and what each has spent this
    period, read from where they are counted: one read each (a Redis that does not
    answer leaves the spending out)."""
    limits = gateway.dispatcher.limits
    if limits is None:
        return []
    registry = gateway.dispatcher.registry
    counted: list[tuple[str, str, str, Budget]] = [
        ("model", name, model_account(name), model.budget)
        for name, model in registry.models.items()
        if model.budget is not None
    ]
    keys = registry.auth.keys if registry.auth is not None else ()
    counted += [("key", k.name, account_of(k), k.budget) for k in keys if k.budget is not None]
    readings = []
    for kind, name, account, budget in counted:
        spent = await limits.spent(account, budget.period)
        shown = usd_figure(spent) if limits.answering else None
        readings.append(BudgetReading(kind, name, budget.period, budget.hard, budget.usd, shown))
    return readings
