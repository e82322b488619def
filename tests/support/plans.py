"""A `Plan` for dispatch tests that need no router: a fixed decision and a chain."""

from __future__ import annotations

from llmroute.decision import Decision
from llmroute.dispatch import Plan
from llmroute.registry.schema import RoutePolicy


def plan_for(*chain: str, policy: RoutePolicy | None = None, route: str = "r") -> Plan:
    decision = Decision(
        id="d",
        route=route,
        model=chain[0],
        layer="test",
        confidence=1.0,
        margin=None,
        reason="test",
        registry_version="v",
        signals=(),
        encode_us=0.0,
        total_us=0.0,
    )
    return Plan(decision, chain, policy)
