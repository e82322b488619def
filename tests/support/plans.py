"""A `Plan` for dispatch tests that need no router: a fixed decision and a chain."""

from __future__ import annotations

from typing import Any

from llmroute.decision import Decision
from llmroute.dispatch import Plan
from llmroute.registry.schema import Cascade, RoutePolicy


def plan_for(
    *chain: str,
    policy: RoutePolicy | None = None,
    cascade: Cascade | None = None,
    **decision: Any,
) -> Plan:
    """A plan for `chain`, decided on route ``r`` for its first model; `decision`
    overrides the decision's fields (``reasoning=...``)."""
    fields: dict[str, Any] = {
        "id": "d",
        "route": "r",
        "model": chain[0],
        "layer": "test",
        "confidence": 1.0,
        "margin": None,
        "reason": "test",
        "registry_version": "v",
        "signals": (),
        "encode_us": 0.0,
        "total_us": 0.0,
    }
    return Plan(Decision(**{**fields, **decision}), chain, policy, cascade)
