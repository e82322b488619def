"""Dispatch: send a planned request to its model with timeouts, retries, fallbacks,
circuit breakers and balancing across deployments. Used by the gateway and the SDK."""

from llmroute.dispatch.cascade import TierStep, cascade_header
from llmroute.dispatch.dispatcher import Dispatcher, Opened, Served
from llmroute.dispatch.plan import AUTO, PINNED, Plan, aplan_request, plan_request

__all__ = [
    "AUTO",
    "PINNED",
    "Dispatcher",
    "Opened",
    "Plan",
    "Served",
    "TierStep",
    "aplan_request",
    "cascade_header",
    "plan_request",
]
