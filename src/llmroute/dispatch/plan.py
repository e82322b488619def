"""Turn a request's ``model`` into a `Plan`: the decision and the models to try in order.

``auto`` (or no model) runs the router; a route name pins that route; a pool model name
pins that model. Anything else raises `ModelNotFound`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmroute.decide import Router
from llmroute.decision import Decision, new_decision_id
from llmroute.errors import ModelNotFound, RoutingError
from llmroute.registry.schema import Route, RoutePolicy

__all__ = ["AUTO", "PINNED", "Plan", "plan_request"]

AUTO = "auto"
PINNED = "pinned"  # the layer, and the route of a request that pins a pool model


@dataclass(frozen=True, slots=True)
class Plan:
    """The decision, then the pool models to try: the target first, then its fallbacks;
    and the route's policy (timeouts, retries, context fallback), when a route decided."""

    decision: Decision
    chain: tuple[str, ...]
    policy: RoutePolicy | None = None


def plan_request(router: Router, body: Mapping[str, Any], headers: Mapping[str, str]) -> Plan:
    """Raises `RoutingError` for a body that cannot be routed, `ModelNotFound` for an
    unknown ``model``."""
    requested = body.get("model", AUTO)
    if not isinstance(requested, str):
        raise RoutingError("'model' must be a string")
    decision = _decide(router, requested, body, headers)
    route = _route(router, decision.route)
    if route is None:
        return Plan(decision, (decision.model,))
    fallbacks = tuple(m for m in route.policy.fallback if m != decision.model)
    return Plan(decision, (decision.model, *fallbacks), route.policy)


def _decide(
    router: Router, requested: str, body: Mapping[str, Any], headers: Mapping[str, str]
) -> Decision:
    registry = router.loaded.registry
    if requested == AUTO:
        return router.decide(body, headers=headers)
    route = _route(router, requested)
    if route is not None:
        return _pinned(router, route.name, route.target, requested)
    model = registry.models.get(requested)
    if model is not None and model.kind == "chat":
        return _pinned(router, PINNED, requested, requested)
    if model is not None:
        raise ModelNotFound(f"{requested!r} is an embedding model; use POST /v1/embeddings")
    if requested.startswith("router-"):
        raise ModelNotFound(
            f"the model {requested!r} names a difficulty router, and this registry "
            "declares none (difficulty routers are not available yet)"
        )
    raise ModelNotFound(
        f"the model {requested!r} does not exist: use 'auto', a route or a pool model "
        "(GET /v1/models lists them)"
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
