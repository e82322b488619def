"""Turn a request's ``model`` into a `Plan`: the decision and the models to try in order.

``auto`` (or no model) runs the router; a route name pins that route; a pool model name
pins that model. Anything else is a 404 ``model_not_found``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmroute.decide import Router
from llmroute.decision import Decision, new_decision_id
from llmroute.errors import RoutingError
from llmroute.registry.schema import Route
from llmroute.server.errors import GatewayError

__all__ = ["AUTO", "PINNED", "Plan", "plan_request"]

AUTO = "auto"
PINNED = "pinned"  # the layer, and the route of a request that pins a pool model


@dataclass(frozen=True, slots=True)
class Plan:
    """The decision, then the pool models to try: the target first, then its fallbacks."""

    decision: Decision
    chain: tuple[str, ...]
    timeout_s: float | None = None


def plan_request(router: Router, body: Mapping[str, Any], headers: Mapping[str, str]) -> Plan:
    requested = body.get("model", AUTO)
    if not isinstance(requested, str):
        raise GatewayError(400, "'model' must be a string", param="model")
    decision = _decide(router, requested, body, headers)
    route = _route(router, decision.route)
    if route is None:
        return Plan(decision, (decision.model,))
    fallbacks = tuple(m for m in route.policy.fallback if m != decision.model)
    return Plan(decision, (decision.model, *fallbacks), route.policy.timeout_s)


def _decide(
    router: Router, requested: str, body: Mapping[str, Any], headers: Mapping[str, str]
) -> Decision:
    registry = router.loaded.registry
    if requested == AUTO:
        try:
            return router.decide(body, headers=headers)
        except RoutingError as exc:
            raise GatewayError(400, str(exc), param="messages") from None
    route = _route(router, requested)
    if route is not None:
        return _pinned(router, route.name, route.target, requested)
    if requested in registry.models:
        return _pinned(router, PINNED, requested, requested)
    raise GatewayError(
        404,
        f"the model {requested!r} does not exist: use 'auto', a route or a pool model "
        "(GET /v1/models lists them)",
        param="model",
        code="model_not_found",
    )


def _route(router: Router, name: str) -> Route | None:
    try:
        return router.loaded.registry.route(name)
    except KeyError:
        return None


def _pinned(router: Router, route: str, model: str, requested: str) -> Decision:
    start = time.perf_counter_ns()
    return Decision(
        id=new_decision_id(),
        route=route,
        model=model,
        layer=PINNED,
        confidence=1.0,
        margin=None,
        reason=f"pinned by the request's model {requested!r}",
        registry_version=router.version,
        signals=(),
        encode_us=0.0,
        total_us=(time.perf_counter_ns() - start) / 1000.0,
    )
