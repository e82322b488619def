"""Turn a request's ``model`` into a `Plan`: the decision and the models to try in order.

``auto`` (or no model) runs the router; a route name pins that route; a pool model name
pins that model. Anything else raises `ModelNotFound`. A route's requests are tried down
its ``policy.fallback``, the default's down the default's (after the model it picked); a
pinned model, or one a rule names, alone.

A route with a ``cascade`` (requested by ``auto`` or by its name) puts it in the plan,
unless safety rerouted the request to a guarded model or another layer (the reasoning
gate) chose a model other than the cascade's first tier; dispatch then runs the tiers
(`llmroute.dispatch.cascade`) instead of the chain.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from llmroute.decide import DEFAULT_LAYER, RequestInput, Router
from llmroute.decision import Decision, LayerSignal, Outcome
from llmroute.dispatch.text_completions import TextRequest
from llmroute.dispatch.usage import prompt_chars
from llmroute.errors import ModelNotFound, PolicyViolation, RoutingError, shown
from llmroute.layers.base import DecisionContext, DecisionLayer
from llmroute.layers.difficulty import DifficultyLayer
from llmroute.layers.pin import PIN_LAYER, PinLayer
from llmroute.registry.schema import Cascade, Default, Model, Registry, Route, RoutePolicy
from llmroute.request import RouteRequest

__all__ = [
    "AUTO",
    "OFF_LOOP_CHARS",
    "PINNED",
    "ModelNotAString",
    "Plan",
    "akeep_within",
    "alone_because",
    "also_guarded",
    "aplan_request",
    "default_plan",
    "difficulty_model",
    "falls_to_default",
    "keep_within",
    "model_layers",
    "plan_of",
    "plan_request",
    "pool_refusal",
    "to_default",
    "within_pool",
]

OFF_LOOP_CHARS = 8_000
"""Prompt text past which `aplan_request` routes in a worker thread: such a decision
embeds up to the safety layer's `max_windows` windows (its static detector up to
`extra_windows` more) and scans PII over all of the text (about a second for a pasted
600 kB document on two cores), which must not stall every other request on the event
loop. Shorter ones take about a millisecond, less
than the thread hop."""

_ROUTER_MODEL = re.compile(
    r"^router-(?P<name>.+?)-(?P<threshold>[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)$"
)
AUTO = "auto"
PINNED = PIN_LAYER  # the layer, and the route of a request that pins a pool model


class ModelNotAString(RoutingError):
    """A ``model`` that is not a string: the client's error is in ``model``, not in the
    messages every other `RoutingError` is about (the gateway's 400 names it)."""

    param = "model"


@dataclass(frozen=True, slots=True)
class Plan:
    """The decision, then the pool models to try: the target first, then its fallbacks;
    and the route's policy (timeouts, retries, context fallback), when a route decided
    (the default's, for the default's requests: `default_plan`);
    and the route's `cascade`, when it has one and the request should run it. `pool`,
    when set, is every model the request may reach (`within_pool`): a context fallback
    outside it is not tried. `text`, when set, says the request came to the completions
    API: models that continue raw text get it raw (`llmroute.dispatch.text_completions`);
    when one may answer (`may_answer_raw`), the cascade's tiers are tried as a chain
    (`without_cascade`)."""

    decision: Decision
    chain: tuple[str, ...]
    policy: RoutePolicy | None = None
    cascade: Cascade | None = None
    pool: tuple[str, ...] | None = None
    text: TextRequest | None = None

    @property
    def guarded(self) -> bool:
        """Whether safety sent the request to a guarded model, which serves it alone: no
        fallback, and no context or content fallback of its policy either (its text must
        not reach an unguarded model)."""
        return _guarded(self.decision)

    @property
    def fallbacks(self) -> tuple[str, ...]:
        """The models dispatch tries after the first, in order: the cascade's later tiers
        when it runs one, else the rest of the chain; none when safety blocked it."""
        if self.decision.blocked:
            return ()
        if self.cascade is not None:
            return tuple(tier.model for tier in self.cascade.tiers[1:])
        return self.chain[1:]

    def to_dict(self) -> dict[str, Any]:
        """The decision's JSON (`Decision.to_dict`) and `fallbacks`: what ``/v1/route``
        and ``llmroute route --json`` answer."""
        return {**self.decision.to_dict(), "fallbacks": list(self.fallbacks)}

    def outgoing(self, body: dict[str, Any]) -> dict[str, Any]:
        """The body to send upstream: with PII redacted when the safety policy says so.
        Raises `PolicyViolation` when it blocked the request."""
        safety = self.decision.safety
        if safety is None:
            return body
        if safety.blocked:
            raise PolicyViolation(
                safety.profile,
                safety.decisive or safety.fired,
                self.decision.id,
                unscanned_for=safety.unscanned_for,
            )
        if safety.redacted_body is not None:
            body = dict(safety.redacted_body)
        if safety.fields:
            body = {**body, **safety.fields}
        return body


def may_answer_raw(plan: Plan, models: Mapping[str, Model]) -> bool:
    """Whether a model continuing raw text (``text_completions``) may answer `plan`'s
    request: it is a completion, and such a model is in its chain or its cascade."""
    if plan.text is None:
        return False
    return any(models[m].text_completions for m in _reachable(plan) if m in models)


def without_cascade(plan: Plan) -> Plan:
    """`plan` with its cascade's tiers added to the chain instead, in order."""
    if plan.cascade is None:
        return plan
    return replace(plan, chain=_reachable(plan), cascade=None)


def _reachable(plan: Plan) -> tuple[str, ...]:
    if plan.cascade is None:
        return plan.chain
    return tuple(dict.fromkeys((*plan.chain, *(tier.model for tier in plan.cascade.tiers))))


def within_pool(
    plan: Plan,
    pool: tuple[str, ...],
    owner: str,
    default: str | None = None,
    default_policy: RoutePolicy | None = None,
    pick: str | None = None,
    tier: str | None = None,
) -> Plan | None:
    """`plan` kept inside `pool`, the models client key `owner` may reach: its chain
    without the models outside it, the decision's model the first one left (its reason
    says so when that changed it), its cascade only when every tier and every verifier
    gate's model is inside.

    With no model of the chain inside, a *routed* request (`falls_to_default`) is served
    by the default's chain inside the pool: `pick`, the model the default picks for it
    (`to_default`: its difficulty router's strong or weak model), then `default`, the
    registry's default target, then the fallbacks of `default_policy` (the default's
    policy, which the plan then carries), those outside left out, as a route's are; None
    when none is inside. `tier`, the default's reasoning tier for a request that needs
    it, comes before them all (as it replaces the pick of a request no route claims).
    A blocked plan is returned as it is: nothing will be sent, and
    the client should hear why (the policy), not where it may not go."""
    if plan.decision.blocked:
        return replace(plan, pool=pool)
    chain = tuple(m for m in plan.chain if m in pool)
    decision = plan.decision
    if not chain:
        if default is None or not falls_to_default(plan, pool):
            return None
        fallbacks = () if default_policy is None else default_policy.fallback
        firsts = tuple(dict.fromkeys(m for m in (tier, pick or default, default) if m))
        chain = tuple(m for m in dict.fromkeys((*firsts, *fallbacks)) if m in pool)
        if not chain:
            return None
        served = f"the default, {chain[0]}"
        if chain[0] not in firsts:
            outside = f"{firsts[0]} is" if len(firsts) == 1 else f"{' and '.join(firsts)} are"
            served = f"the default's fallback {chain[0]} ({outside} outside it)"
        reason = (
            f"{decision.reason}; route {decision.route!r} has no model in key {owner!r}'s "
            f"pool: served by {served}"
        )
        decision = replace(decision, model=chain[0], reason=reason)
        return Plan(decision, chain, default_policy, None, pool)
    if chain[0] != decision.model:
        reason = f"{decision.reason}; {decision.model} is outside key {owner!r}'s pool"
        decision = replace(decision, model=chain[0], reason=reason)
    cascade = plan.cascade
    if cascade is not None and not _cascade_within(cascade, pool):
        cascade = None
    return Plan(decision, chain, plan.policy, cascade, pool)


def pool_refusal(plan: Plan, pool: tuple[str, ...], owner: str) -> str:
    """What a request is told when `within_pool` found no model of `plan` inside `pool`."""
    return (
        f"key {owner!r} may not be served by {', '.join(plan.chain)} "
        f"(route {plan.decision.route!r}); its pool: {', '.join(pool)}"
    )


def falls_to_default(plan: Plan, pool: tuple[str, ...]) -> bool:
    """Whether `within_pool` sends `plan` to the default: not blocked, no model of its
    chain inside `pool`, and routed (`_rerouteable`)."""
    decision = plan.decision
    if decision.blocked or any(m in pool for m in plan.chain):
        return False
    return _rerouteable(decision)


def keep_within(
    router: Router,
    plan: Plan,
    pool: tuple[str, ...],
    owner: str,
    body: RequestInput,
    headers: Mapping[str, str],
) -> Plan | str:
    """`plan` kept inside `pool`, client key `owner`'s (`within_pool`), or the message
    of its refusal when nothing may serve it. A routed request none of whose chain is
    inside is the default's (`falls_to_default`), and the default serves it as its own
    (`to_default`) when a route decided it: its safety profile applied too (the stricter
    action wins: a block or a guarded model of the default's holds), its reasoning tier
    first when the gate found reasoning needed, then the model its difficulty router
    picks, its target and its fallbacks, those inside the pool. One the default decided
    keeps its pick (outside the pool) and goes on to the target and the fallbacks."""
    default = router.loaded.registry.default
    if not _moves_to_default(plan, pool):
        kept = within_pool(plan, pool, owner, default.target, default.policy)
        return pool_refusal(plan, pool, owner) if kept is None else kept
    decision, pick = to_default(router, plan.decision, body, headers)
    lead = f"route {decision.route!r} has no model in key {owner!r}'s pool"
    safety = decision.safety
    if safety is not None and safety.blocked:
        why = f"{lead}, and the default's safety policy blocks it (profile {safety.profile!r})"
        blocked = replace(decision, reason=f"{decision.reason}; {why}")
        return Plan(blocked, plan.chain, default.policy, None, pool)
    if safety is not None and safety.model is not None:
        guarded = safety.model
        sent = f"the default's safety policy (profile {safety.profile!r}) sends it to {guarded}"
        if guarded not in pool:
            refused = f"key {owner!r} may not be served by {guarded}: {lead}, and {sent}"
            return f"{refused}; its pool: {', '.join(pool)}"
        reason = f"{decision.reason}; {lead}: {sent}"
        return Plan(replace(decision, reason=reason), (guarded,), default.policy, None, pool)
    tier = None if decision.reasoning is None else decision.reasoning.tier
    moved = replace(plan, decision=decision)
    kept = within_pool(moved, pool, owner, default.target, default.policy, pick, tier)
    if kept is None:
        return pool_refusal(plan, pool, owner)
    if safety is not None and safety is not plan.decision.safety:
        checked = f"; the default's safety profile applied too ({safety.profile}: {safety.action})"
        kept = replace(kept, decision=replace(kept.decision, reason=kept.decision.reason + checked))
    return kept


def _moves_to_default(plan: Plan, pool: tuple[str, ...]) -> bool:
    """Whether `keep_within` hands `plan` to the default to serve as its own
    (`to_default`): it falls to the default from a route. A request the default decided
    (unclaimed, a client's ``router-<name>-<threshold>``, the LLM router's ``none``) has
    its guards and its pick already, at the threshold the client asked for, which the
    registry's would overrule: its target and fallbacks inside the pool serve it,
    nothing scored again."""
    return plan.decision.route != DEFAULT_LAYER and falls_to_default(plan, pool)


async def akeep_within(
    router: Router,
    plan: Plan,
    pool: tuple[str, ...],
    owner: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
) -> Plan | str:
    """`keep_within` for an event loop: a fall to the default in a worker thread where
    `aplan_request` decides in one (a long prompt's safety pass; a remote encoder, when
    the decision kept no embedding for the difficulty router to score)."""
    if _moves_to_default(plan, pool) and (
        prompt_chars(body) > OFF_LOOP_CHARS
        or (
            getattr(router.encoder, "remote", False)
            and router.difficulty is not None
            and plan.decision.embedding is None
        )
    ):
        return await asyncio.to_thread(keep_within, router, plan, pool, owner, body, headers)
    return keep_within(router, plan, pool, owner, body, headers)


def to_default(
    router: Router, decision: Decision, body: RequestInput, headers: Mapping[str, str]
) -> tuple[Decision, str]:
    """`decision`, of a routed request the default is to serve (a key's pool sent it
    there), with the default's guards, and the model the default picks for it (its
    difficulty router's strong or weak model by the request's score, as for a request no
    route claims; else its target). The safety outcome gets the default's profile as
    well (`SafetyLayer.also_under`: the stricter action of the two for each finding, a
    guarded model's reroute setting the model); the reasoning gate's verdict, the same
    for any route, gets the default's ``reasoning_target`` for tier. Nothing is embedded
    or scanned again: the difficulty router scores the decision's embedding."""
    start = time.perf_counter_ns()
    default = router.loaded.registry.default
    request = router.request(body, headers=headers)
    ctx = DecisionContext(request, router.encoder.encode, decision.embedding)
    pick = default.target
    if router.difficulty is not None:
        verdict = router.difficulty.evaluate(ctx).verdict
        pick = pick if verdict is None else verdict.model
    moved = also_guarded(router, decision, request, DEFAULT_LAYER, default.reasoning_target)
    safety = moved.safety
    moved = replace(
        moved,
        model=decision.model if safety is None or safety.model is None else safety.model,
        encode_us=decision.encode_us + ctx.encode_us,
        total_us=decision.total_us + (time.perf_counter_ns() - start) / 1000.0,
    )
    return moved, pick


def also_guarded(
    router: Router, decision: Decision, request: RouteRequest, owner: str, tier: str | None
) -> Decision:
    """`decision` with the guards of `owner` (a route, or the default) applied as well,
    on what its own guards computed: `owner`'s safety profile over the decision's
    (`SafetyLayer.also_under`: the stricter action of the two for each finding), and
    `tier`, `owner`'s reasoning tier, when the gate found reasoning needed (none when
    the stricter profile blocks). Nothing is scanned or embedded again. The guards'
    signals say what applied; the model and reason are the caller's to set."""
    # the layers' modules: not imported with this one (the CLI's, the SDK's)
    from llmroute.layers.reasoning import REASONING_LAYER
    from llmroute.layers.safety import SafetyLayer

    signals = decision.signals
    safety = decision.safety
    layer = next((g for g in router.guards if isinstance(g, SafetyLayer)), None)
    if safety is not None and layer is not None:
        applied = layer.also_under(safety, request, layer.profile_of(owner))
        if applied is not None:
            safety, detail = applied
            signals = _with_detail(signals, layer.name, lambda _: detail)
    reasoning = decision.reasoning
    if reasoning is not None and safety is not None and safety.blocked:
        reasoning = None  # as the gate does for a blocked request
        skipped = {"skipped": "blocked by safety"}
        signals = _with_detail(signals, REASONING_LAYER, lambda _: skipped, Outcome.PASSED)
    elif reasoning is not None:
        tier = tier if reasoning.needed else None
        reasoning = replace(reasoning, tier=tier)
        signals = _with_detail(signals, REASONING_LAYER, lambda was: _tiered(was, tier))
    return replace(decision, signals=signals, safety=safety, reasoning=reasoning)


def _tiered(detail: Mapping[str, Any], tier: str | None) -> dict[str, Any]:
    """The reasoning signal's `detail` naming `tier` (none: no tier)."""
    out = {k: v for k, v in detail.items() if k != "tier"}
    if tier is not None:
        out["tier"] = tier
    return out


def _with_detail(
    signals: tuple[LayerSignal, ...],
    layer: str,
    detail: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    outcome: Outcome | None = None,
) -> tuple[LayerSignal, ...]:
    """`signals` with `layer`'s detail made anew from what it was (and its `outcome`)."""
    return tuple(
        replace(
            s,
            detail=MappingProxyType(dict(detail(s.detail))),
            outcome=s.outcome if outcome is None else outcome,
        )
        if s.layer == layer
        else s
        for s in signals
    )


def _rerouteable(decision: Decision) -> bool:
    """Whether the router chose the route (the client asked for ``auto`` or a difficulty
    router), so that another model may serve: not a route or model the client named
    (`PinLayer`), and not a guarded model safety chose."""
    if decision.layer == PIN_LAYER:
        return False
    return decision.safety is None or decision.safety.model is None


def _cascade_within(cascade: Cascade, pool: tuple[str, ...]) -> bool:
    for tier in cascade.tiers:
        if tier.model not in pool:
            return False
        for gate in cascade.gates_of(tier):
            if gate.kind == "verifier" and gate.model is not None and gate.model not in pool:
                return False
    return True


async def aplan_request(
    router: Router, body: Mapping[str, Any], headers: Mapping[str, str]
) -> Plan:
    """`plan_request` for an event loop: on it for an ordinary request, in a worker
    thread for one with more than `OFF_LOOP_CHARS` of prompt text, or whose encoder is a
    remote embeddings endpoint (its HTTP call would stop the loop, and every other
    request, for its round trip); the decision is thread-safe, and the encoders release
    the GIL while they run."""
    if prompt_chars(body) > OFF_LOOP_CHARS or getattr(router.encoder, "remote", False):
        return await asyncio.to_thread(plan_request, router, body, headers)
    return plan_request(router, body, headers)


def plan_request(router: Router, body: Mapping[str, Any], headers: Mapping[str, str]) -> Plan:
    """Raises `RoutingError` for a body that cannot be routed, `ModelNotFound` for an
    unknown ``model``."""
    requested = body.get("model")
    if requested is None:  # left out or null, as OpenAI reads a null: routed
        requested = AUTO
    if not isinstance(requested, str):
        raise ModelNotAString("'model' must be a string")
    decision = router.route(body, headers=headers, layers=model_layers(router, requested))
    return plan_of(router, decision)


def plan_of(router: Router, decision: Decision) -> Plan:
    """The plan for `decision`, however it was made (`plan_request`'s, or the CLI's
    ``llmroute route``, which decides on text): a route's chain, the default's
    (`default_plan`), or the model alone (pinned, named by a rule, guarded)."""
    if decision.route == DEFAULT_LAYER:
        return default_plan(router.loaded.registry.default, decision)
    route = _route(router, decision.route)
    if route is None:
        return Plan(decision, (decision.model,))
    if _guarded(decision):
        return Plan(decision, (decision.model,), route.policy)
    fallbacks = tuple(m for m in route.policy.fallback if m != decision.model)
    cascade = route.cascade
    if cascade is not None and cascade.tiers[0].model != decision.model:
        cascade = None  # another layer chose the model: serve that one
    return Plan(decision, (decision.model, *fallbacks), route.policy, cascade)


def default_plan(default: Default, decision: Decision) -> Plan:
    """The plan of a request the default serves (no rule or route claimed it, or the
    difficulty router or the LLM router sent it there): the model picked (the target,
    the difficulty router's strong or weak model, the reasoning tier), then the
    default's `policy.fallback` without it; and the default's policy."""
    if _guarded(decision):
        return Plan(decision, (decision.model,), default.policy)
    fallbacks = tuple(m for m in default.policy.fallback if m != decision.model)
    return Plan(decision, (decision.model, *fallbacks), default.policy)


def alone_because(plan: Plan, registry: Registry) -> str | None:
    """Why `plan` has no fallback, in words (None when it has one), for an operator
    asking why a request ended where it did: blocked, guarded, pinned, named by a rule,
    its target or fallbacks outside the key's pool (and with them its cascade), or none
    in its policy."""
    if plan.fallbacks:
        return None
    decision = plan.decision
    if decision.blocked:
        return "blocked by safety: nothing is sent"
    if plan.guarded:
        return f"guarded: safety sent the request to {decision.model}, which serves it alone"
    if plan.policy is None:
        if decision.layer == PIN_LAYER:
            return f"pinned: the request named {decision.model}, which is tried alone"
        rule = decision.route.removeprefix("rule:")
        return f"rule-named: rule {rule!r} names {decision.model}, which is tried alone"
    default = registry.default
    route = None if plan.policy is default.policy else _route_named(registry, decision.route)
    owner = "the default" if route is None else f"route {decision.route!r}"
    target = default.target if route is None else route.target
    if plan.pool is not None:
        left_out = _left_out(plan, plan.pool, target, route)
        if left_out is not None:
            return f"the key's pool leaves out {owner}'s {left_out}"
    others = [m for m in plan.policy.fallback if m != decision.model]
    if not others:
        return f"{owner} has no policy.fallback" + (
            f" but {decision.model}" if plan.policy.fallback else ""
        )
    return f"the key's pool leaves out {owner}'s fallbacks ({', '.join(others)})"


def _left_out(plan: Plan, pool: tuple[str, ...], target: str, route: Route | None) -> str | None:
    """What of its policy's chain (`target`, then `policy.fallback`) `pool` left out of
    `plan`, in words: the target (the model serving then one of the fallbacks, alone), the
    fallbacks, and the route's cascade with them; None when nothing was."""
    assert plan.policy is not None
    model = plan.decision.model
    fallbacks = [m for m in plan.policy.fallback if m not in pool and m not in (model, target)]
    parts = []
    if target not in pool:
        parts.append(f"target {target}")
    if fallbacks:
        parts.append(f"fallbacks ({', '.join(fallbacks)})")
    if not parts:
        return None
    said = " and ".join(parts)
    cascade = None if route is None else route.cascade
    if cascade is not None and plan.cascade is None and not _cascade_within(cascade, pool):
        said += " (and so its cascade, which runs only with every tier inside)"
    return said + (f": {model} serves alone" if target not in pool else "")


def _route_named(registry: Registry, name: str) -> Route | None:
    return next((r for r in registry.routes if r.name == name), None)


def _guarded(decision: Decision) -> bool:
    """Rerouted by safety to a guarded model: never fall back to an unguarded one."""
    return decision.safety is not None and decision.safety.model is not None


def model_layers(router: Router, requested: str) -> tuple[DecisionLayer, ...] | None:
    """The routing layers for a request whose ``model`` is `requested`, an alias read
    as its target: None for ``auto`` (the router's own), a `PinLayer` for a route or a
    pool chat model (routing skipped, the guards still run), the difficulty layer alone
    at the asked threshold for ``router-<name>-<threshold>``; `ModelNotFound` for
    anything else. It decides nothing, so ``llmroute route --model`` checks a name once
    and decides every prompt with the gateway's reading of it."""
    registry = router.loaded.registry
    if requested == AUTO:
        return None
    asked, requested = requested, registry.resolve_alias(requested)
    if requested == AUTO:  # an alias of auto
        return None
    alias_of = requested if requested != asked else None
    route = _route(router, requested)
    if route is not None:
        return (PinLayer(route.name, route.target, asked, alias_of),)
    model = registry.models.get(requested)
    if model is not None and model.kind == "chat":
        return (PinLayer(PINNED, requested, asked, alias_of),)
    if model is not None:
        raise ModelNotFound(
            f"{shown(requested)} is an embedding model; use POST /v1/embeddings"
            if model.kind == "embedding"
            else f"{shown(requested)} is a rerank model; use POST /v1/rerank",
            code="model_not_chat",
        )
    if requested.startswith("router-"):
        return (_difficulty(router, requested),)
    raise ModelNotFound(
        f"the model {shown(requested)} does not exist: use 'auto', a route or a pool model "
        "(GET /v1/models lists them)"
    )


def difficulty_model(router: Router) -> str | None:
    """The ``router-<name>-<threshold>`` model at the registry's own threshold."""
    layer = router.difficulty
    if layer is None:
        return None
    short = f"{layer.threshold:.6g}"
    # exactly the registry's threshold: a rounded one (0.155171 for 0.15517081...) would
    # send what scores in between elsewhere than `auto` does
    exact = short if float(short) == layer.threshold else repr(layer.threshold)
    return f"router-{layer.router.name}-{exact}"


def _difficulty(router: Router, requested: str) -> DifficultyLayer:
    """``router-<name>-<threshold>``: the difficulty router alone, at that threshold."""
    layer = router.difficulty
    match = _ROUTER_MODEL.match(requested)
    if layer is None:
        raise ModelNotFound(
            f"the model {shown(requested)} names a difficulty router, and this registry declares "
            "none (default.difficulty)"
        )
    if match is None or match["name"] != layer.router.name:
        raise ModelNotFound(
            f"the model {shown(requested)} is not 'router-{layer.router.name}-<threshold>', the "
            "difficulty router this registry declares"
        )
    threshold = float(match["threshold"])
    if not math.isfinite(threshold):  # 1e999: every request to the weak model
        raise ModelNotFound(f"the model {shown(requested)} names no finite threshold")
    return layer.with_threshold(threshold)


def _route(router: Router, name: str) -> Route | None:
    try:
        return router.loaded.registry.route(name)
    except KeyError:
        return None
