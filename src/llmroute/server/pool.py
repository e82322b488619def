"""A client key's ``pool``: the models its requests may reach at all.

``keys[].models`` limits what a client may *ask for*; ``pool`` limits where its text may
*go*, whatever it asked: routing (``auto``, a route, the difficulty router), fallbacks,
context fallbacks, cascade tiers and their verifier gates, the LLM router, shadow copies
and embeddings. A decision whose model is outside the pool is served by the first model
of its chain inside it (the decision says so in its reason); with none inside, a routed
request (``auto``, a difficulty router) is served by the default's chain inside the
pool (the model it picks for the request, then its target and ``policy.fallback``,
those outside skipped), and any other
request — one that named a route or a model, or one safety sent to a guarded model — is
refused with 403 ``model_not_allowed`` before anything is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.types import Scope

from llmroute.decide import Router
from llmroute.dispatch.plan import (
    Plan,
    adefault_pick,
    falls_to_default,
    pool_refusal,
    within_pool,
)
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
    with no chain model inside goes to the registry's default (the model it picks for
    the request, `adefault_pick`, then its target and fallbacks, those inside the pool)
    when one of them is inside."""
    key = api_key_of(scope)
    if key is None or key.pool is None:
        return plan
    default = router.loaded.registry.default
    pick = None
    if falls_to_default(plan, key.pool):
        pick = await adefault_pick(router, body, headers)
    kept = within_pool(plan, key.pool, key.name, default.target, default.policy, pick)
    if kept is None:
        raise GatewayError(
            403,
            pool_refusal(plan, key.pool, key.name),
            param="model",
            code="model_not_allowed",
        )
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
