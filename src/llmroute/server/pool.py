"""A client key's ``pool``: the models its requests may reach at all.

``keys[].models`` limits what a client may *ask for*; ``pool`` limits where its text may
*go*, whatever it asked: routing (``auto``, a route, the difficulty router), fallbacks,
context fallbacks, cascade tiers and their verifier gates, the LLM router, shadow copies
and embeddings. A decision whose model is outside the pool is served by the first model
of its chain inside it (the decision says so in its reason); with none inside, a routed
request (``auto``, a difficulty router) is served by the default's chain inside the
pool (its reasoning tier when the request needs one, the model it picks for the
request, then its target and ``policy.fallback``, those outside skipped) under the
default's safety profile too (the stricter action wins), and any other
request — one that named a route or a model, or one safety sent to a guarded model — is
refused with 403 ``model_not_allowed`` before anything is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.types import Scope

from llmroute.decide import Router
from llmroute.dispatch.plan import Plan, akeep_within
from llmroute.server.auth import api_key_of
from llmroute.server.errors import GatewayError

__all__ = ["check_pool", "keep_in_pool", "may_reach"]


def may_reach(scope: Scope, model: str) -> bool:
    """Whether the request's key lets its text go to `model` (True without a pool)."""
    key = api_key_of(scope)
    return key is None or key.pool is None or model in key.pool


async def keep_in_pool(
    scope: Scope, plan: Plan, router: Router, body: Mapping[str, Any], headers: Mapping[str, str]
) -> Plan:
    """`plan` kept inside the request's key's pool (itself without one); a routed request
    with no chain model inside is served by the registry's default as its own, with the
    default's safety policy and reasoning tier (`akeep_within`), when a model of its
    chain is inside; 403 ``model_not_allowed`` when nothing may serve it."""
    key = api_key_of(scope)
    if key is None or key.pool is None:
        return plan
    kept = await akeep_within(router, plan, key.pool, key.name, body, headers)
    if isinstance(kept, str):
        raise GatewayError(403, kept, param="model", code="model_not_allowed")
    return kept


def check_pool(scope: Scope, model: str) -> None:
    """403 ``model_not_allowed`` when the key's pool leaves `model` out."""
    key = api_key_of(scope)
    if key is not None and key.pool is not None and model not in key.pool:
        raise GatewayError(
            403,
            f"key {key.name!r} may not use model {model!r}; its pool: {', '.join(key.pool)}",
            param="model",
            code="model_not_allowed",
        )
