"""Dispatch: send a planned request to its model with timeouts, retries, fallbacks,
circuit breakers and balancing across deployments. Used by the gateway and the SDK."""

from llmroute.dispatch.dispatcher import Dispatcher, Opened, Served
from llmroute.dispatch.plan import AUTO, PINNED, Plan, plan_request

__all__ = ["AUTO", "PINNED", "Dispatcher", "Opened", "Plan", "Served", "plan_request"]
