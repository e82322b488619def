"""`LlmRouter`: a small model picks the route when the intent layer is unsure.

The only decision layer that calls the network, so it is not part of `Router.decide`
(which stays pure): it refines a finished `Decision`, asynchronously and on a budget.

When it applies (`LlmRouter.applies`): ``registry.llm_fallback`` is enabled, and either

- the intent layer decided with a margin (the probability lead over the runner-up)
  below ``llm_fallback.margin``; or
- no layer decided and the default served because the intent layer's best route scored
  below its threshold (not out of scope, not an empty prompt), and that route missed
  its threshold by less than ``margin``, or led its runner-up by less than ``margin``;
- or because the text is mostly in scripts the encoder does not read (the intent layer
  did not score it; every route is offered, whatever ``top_k``).

Never for rules, pinned or difficulty-decided requests, nor for requests the safety
layer blocked or rerouted.

What it does (`LlmRouter.refine`): one chat call to the pool model
``llm_fallback.model`` through the dispatcher (no retries, no fallback, temperature 0,
``max_tokens`` `MAX_TOKENS`, the model's thinking turned off as for a request the
reasoning gate finds not needed) with a prompt listing each route's name and a one-line
description (``Route.description``, else its first examples) plus ``none`` (the
registry's default), the request cut to ``max_chars``, and the answer constrained by
``response_format`` ``json_schema`` (an enum of the names); Anthropic models get the plain
prompt (the Messages API has no schema mode). The reply is parsed strictly: a JSON
object whose ``route`` is exactly one of the names, or a bare name; anything else keeps
the intent decision. ``timeout_s`` is a hard limit on the call (one it cuts had sent
its prompt: charged then, estimated, to the model's budget and counted in the caller's
spend, as its answer would be: `Dispatcher.within`); at most
``max_concurrency`` calls are in flight, and a request arriving when they all are keeps
its decision at once (``saturated``).

The new decision has ``layer="llm_router"``, the chosen route and its target, confidence
1.0 (the model's choice is taken as is: no logprobs are asked for), margin None, and one
more signal: ``LayerSignal("llm_router", DECIDED|PASSED, detail={"answer", "outcome"})``
with outcome ``chosen``, ``kept`` (unparseable or unknown answer), ``timeout``,
``error`` or ``saturated``. A decision that was kept keeps its layer and route.

Memo: a verdict the model gave (``chosen``) is remembered, per process, for the same
offered routes and the same (truncated) request text, by digest: the last
``llm_fallback.memo`` of them, each for ``memo_ttl_s`` seconds. A repeat is decided from
the memo without a call (outcome ``memo``), so a request the response cache answers, or
a popular prompt, pays the model once. A registry reload builds a new LLM router and so
starts an empty memo.

Guards: safety profiles and reasoning tiers belong to routes, so when the chosen route
differs, `refine_decision` / `refine_plan` apply its guards as well (`reguard`): its
safety profile over the first route's (the stricter action for each finding: the first
profile already acted, on the text the model was sent), its reasoning tier, and for
``none`` the difficulty router's pick. On what the decision computed: nothing is
scanned or embedded again. `refine` alone carries the old guard outcomes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from llmroute.decide import DEFAULT_LAYER, Router
from llmroute.decision import (
    Decision,
    LayerSignal,
    Outcome,
    ReasoningOutcome,
    Verdict,
    new_decision_id,
)
from llmroute.dispatch.dispatcher import Dispatcher
from llmroute.dispatch.plan import OFF_LOOP_CHARS, Plan, also_guarded, default_plan, plan_of
from llmroute.dispatch.usage import prompt_chars
from llmroute.errors import LlmrouteError, ProviderError, ProviderTimeout, UpstreamRejected
from llmroute.layers.base import DecisionContext
from llmroute.layers.intent import UNREAD_SCRIPTS
from llmroute.registry.schema import ANTHROPIC_KINDS, LlmFallback, Registry, Route, RoutePolicy
from llmroute.untrusted_json import loads

__all__ = [
    "LLM_ROUTER_LAYER",
    "MAX_TOKENS",
    "NONE",
    "LlmRouter",
    "llm_router_signal",
    "parse_answer",
    "refine_decision",
    "refine_plan",
]

LLM_ROUTER_LAYER = "llm_router"
NONE = "none"  # the answer that means the registry's default
MAX_TOKENS = 24
INTENT_LAYER = "intent"
_GATEWAY_TIMEOUT = 504  # the dispatcher's status when every model timed out
_BACKSTOP = 2.0  # the dispatcher's own limit, as a multiple of timeout_s
_EXAMPLES = 3
_EXAMPLE_CHARS = 60
_DESCRIPTION_CHARS = 160
_TRUNCATED = " …"

_SYSTEM = (
    "You are a request router. Pick the one route that best fits the user's request.\n"
    "Routes:\n{routes}\n- none: none of the above fits\n"
    'Answer with JSON only: {{"route": "<name>"}}, where <name> is one of: {names}.'
)

OutcomeHook = Callable[[str], None]


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def describe(route: Route) -> str:
    """The route's description, else a summary from its first examples."""
    if route.description:
        return _one_line(route.description, _DESCRIPTION_CHARS)
    shown = "; ".join(f'"{_one_line(e, _EXAMPLE_CHARS)}"' for e in route.examples[:_EXAMPLES])
    return f"requests like {shown}"


def parse_answer(reply: str | None, names: Sequence[str]) -> str | None:
    """The route name the reply gives, or None. Strict: a JSON object whose ``route`` is
    exactly one of `names` (``none`` included), or a bare name (quotes and surrounding
    whitespace allowed)."""
    if reply is None:
        return None
    text = reply.strip()
    if text.startswith("```"):  # a fenced JSON block
        text = text.strip("`").removeprefix("json").strip()
    try:
        data = loads(text)
    except ValueError:
        data = text
    if isinstance(data, dict):
        data = data.get("route")
    if isinstance(data, str):
        name = data.strip()
        if name in names:
            return name
    return None


def _reply_text(data: Mapping[str, Any]) -> str | None:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return None
    message = choices[0].get("message")
    if not isinstance(message, Mapping):
        return None
    content = message.get("content")
    return content if isinstance(content, str) else None


def llm_router_signal(decision: Decision) -> LayerSignal | None:
    """The LLM router's signal in `decision`, when it was asked (or tried to be)."""
    return next((s for s in decision.signals if s.layer == LLM_ROUTER_LAYER), None)


def _intent_pass(decision: Decision) -> LayerSignal | None:
    """The intent layer's signal when it passed because its best route scored below
    that route's threshold (not out of scope, not an empty prompt)."""
    for signal in decision.signals:
        if signal.layer != INTENT_LAYER:
            continue
        reason = signal.detail.get("reason")
        if signal.candidates and isinstance(reason, str) and "below its threshold" in reason:
            return signal
    return None


def _unread(decision: Decision) -> bool:
    """Whether the intent layer passed because the text is in scripts its encoder does
    not read."""
    return any(s.layer == INTENT_LAYER and UNREAD_SCRIPTS in s.detail for s in decision.signals)


class LlmRouter:
    """See the module docstring. `on_outcome` is told each call's outcome (``chosen``,
    ``kept``, ``timeout``, ``error``, ``saturated``): `GatewayMetrics.llm_router`.
    `top_k` (default: the settings' ``top_k``), when set, lists only the intent layer's
    best `top_k` candidates (and ``none``) instead of every route: a shorter prompt for
    a small model."""

    name = LLM_ROUTER_LAYER

    def __init__(
        self,
        settings: LlmFallback,
        registry: Registry,
        dispatcher: Dispatcher,
        *,
        on_outcome: OutcomeHook | None = None,
        top_k: int | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.dispatcher = dispatcher
        self.on_outcome = on_outcome
        self.top_k = settings.top_k if top_k is None else top_k
        self._routes = {route.name: route for route in registry.routes}
        self._lines = {name: f"- {name}: {describe(r)}" for name, r in self._routes.items()}
        self._schema_mode = not _anthropic_only(registry, settings.model)
        self._in_flight = 0
        self._lock = threading.Lock()
        self._memo: OrderedDict[tuple[tuple[str, ...], bytes], tuple[float, str]] = OrderedDict()
        self._plan = Plan(
            _llm_decision(settings.model),
            (settings.model,),
            RoutePolicy(retries=0, timeout_s=settings.timeout_s * _BACKSTOP),
        )

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def applies(self, decision: Decision) -> bool:
        """Whether the LLM router would be asked about this decision (cheap)."""
        margin = self.settings.margin
        if not self.settings.enabled or decision.blocked:
            return False
        if decision.safety is not None and decision.safety.model is not None:
            return False  # rerouted to a guarded model: never routed elsewhere
        if decision.layer == INTENT_LAYER:
            return decision.margin is not None and decision.margin < margin
        if decision.layer != DEFAULT_LAYER:
            return False
        if _unread(decision):
            return True
        signal = _intent_pass(decision)
        if signal is None:
            return False
        best = signal.candidates[0]
        lead = signal.detail.get("margin")
        close = isinstance(lead, float) and lead < margin
        return close or best.threshold - best.score < margin

    def names(self, decision: Decision) -> tuple[str, ...]:
        """The route names offered to the model for this decision, ``none`` last: every
        route when there is no `top_k` or the intent layer did not read the text."""
        if self.top_k is None or _unread(decision):
            names = tuple(self._routes)
        else:
            names = tuple(c.route for c in decision.candidates[: self.top_k])
            names = tuple(n for n in names if n in self._routes) or tuple(self._routes)
        return (*names, NONE)

    def body(self, names: Sequence[str], request_text: str) -> dict[str, Any]:
        """The chat request sent to the model."""
        limit = self.settings.max_chars
        text = request_text if len(request_text) <= limit else request_text[:limit] + _TRUNCATED
        routes = "\n".join(self._lines[n] for n in names if n != NONE)
        system = _SYSTEM.format(routes=routes, names=", ".join(names))
        body: dict[str, Any] = {
            "model": self.settings.model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": text},
            ],
            "temperature": 0,
            "max_tokens": MAX_TOKENS,
        }
        if self._schema_mode:
            body["response_format"] = response_format(names)
        return body

    async def refine(self, decision: Decision, request_text: str) -> Decision:
        """The decision after asking the model (see the module docstring); `decision`
        itself when the LLM router does not apply. Never raises for the model's failures:
        they keep the decision."""
        if not self.applies(decision):
            return decision
        start = time.perf_counter_ns()
        names = self.names(decision)
        key = (names, self._digest(request_text))
        remembered = self._recall(key)
        if remembered is not None:
            return self._chosen(decision, remembered, start, outcome="memo")
        with self._lock:
            saturated = self._in_flight >= self.settings.max_concurrency
            if not saturated:
                self._in_flight += 1
        if saturated:
            return self._kept(decision, "saturated", None, start)
        try:
            outcome, answer = await self._ask(names, request_text)
        finally:
            with self._lock:
                self._in_flight -= 1
        if outcome != "chosen" or answer is None:
            return self._kept(decision, outcome, answer, start)
        self._remember(key, answer)
        return self._chosen(decision, answer, start)

    def _digest(self, request_text: str) -> bytes:
        """The memo's key for a request: what the model is shown of it."""
        shown = request_text[: self.settings.max_chars]
        return hashlib.blake2b(shown.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def _recall(self, key: tuple[tuple[str, ...], bytes]) -> str | None:
        if self.settings.memo == 0:
            return None
        now = time.monotonic()
        with self._lock:
            entry = self._memo.get(key)
            if entry is None:
                return None
            if entry[0] <= now:
                del self._memo[key]
                return None
            self._memo.move_to_end(key)
            return entry[1]

    def _remember(self, key: tuple[tuple[str, ...], bytes], answer: str) -> None:
        if self.settings.memo == 0:
            return
        expires = time.monotonic() + self.settings.memo_ttl_s
        with self._lock:
            self._memo[key] = (expires, answer)
            self._memo.move_to_end(key)
            while len(self._memo) > self.settings.memo:
                self._memo.popitem(last=False)

    async def _ask(self, names: Sequence[str], text: str) -> tuple[str, str | None]:
        """(outcome, the parsed answer or the raw reply)."""
        body = self.body(names, text)
        try:
            # a call its limit cuts is charged its prompt then (`Dispatcher.within`)
            async with self.dispatcher.within(self.settings.timeout_s):
                try:
                    served = await self.dispatcher.complete(self._plan, body)
                except UpstreamRejected:
                    if "response_format" not in body:
                        raise
                    # No schema mode on this server: ask again without, from now on.
                    self._schema_mode = False
                    body.pop("response_format")
                    served = await self.dispatcher.complete(self._plan, body)
        except TimeoutError:
            return "timeout", None
        except ProviderError as exc:
            timed_out = isinstance(exc, ProviderTimeout) or exc.status == _GATEWAY_TIMEOUT
            return ("timeout" if timed_out else "error"), None
        except LlmrouteError:
            return "error", None
        reply = _reply_text(served.data)
        answer = parse_answer(reply, names)
        if answer is None:
            return "kept", None if reply is None else _one_line(reply, 80)
        return "chosen", answer

    def _count(self, outcome: str) -> None:
        if self.on_outcome is not None:
            with contextlib.suppress(Exception):  # a metric must never fail a request
                self.on_outcome(outcome)

    def _kept(self, decision: Decision, outcome: str, reply: str | None, start: int) -> Decision:
        self._count(outcome)
        elapsed = (time.perf_counter_ns() - start) / 1000.0
        detail = MappingProxyType({"answer": reply, "outcome": outcome})
        signal = LayerSignal(LLM_ROUTER_LAYER, Outcome.PASSED, elapsed, detail=detail)
        return replace(
            decision,
            signals=(*decision.signals, signal),
            total_us=decision.total_us + elapsed,
        )

    def _chosen(
        self, decision: Decision, answer: str, start: int, outcome: str = "chosen"
    ) -> Decision:
        self._count(outcome)
        elapsed = (time.perf_counter_ns() - start) / 1000.0
        if answer == NONE:
            route, model = DEFAULT_LAYER, self.registry.default.target
        else:
            route, model = answer, self._routes[answer].target
        if route == decision.route:
            model = decision.model  # same route: its guards' model (a reasoning tier) stands
        reason = f"llm router ({self.settings.model}) chose {answer!r} over {decision.route!r}"
        if route == decision.route:
            reason = f"llm router ({self.settings.model}) confirmed {decision.route!r}"
        verdict = Verdict(route, model, 1.0, reason)
        detail = MappingProxyType({"answer": answer, "outcome": outcome})
        signal = LayerSignal(LLM_ROUTER_LAYER, Outcome.DECIDED, elapsed, verdict, detail=detail)
        return replace(
            decision,
            route=route,
            model=model,
            layer=LLM_ROUTER_LAYER,
            confidence=1.0,
            margin=None,
            reason=reason,
            signals=(*decision.signals, signal),
            total_us=decision.total_us + elapsed,
        )


def response_format(names: Sequence[str]) -> dict[str, Any]:
    """The ``json_schema`` response format that allows exactly `names`."""
    schema = {
        "type": "object",
        "properties": {"route": {"type": "string", "enum": list(names)}},
        "required": ["route"],
        "additionalProperties": False,
    }
    return {
        "type": "json_schema",
        "json_schema": {"name": "route", "strict": True, "schema": schema},
    }


def _anthropic_only(registry: Registry, model: str) -> bool:
    entry = registry.models.get(model)
    if entry is None:
        return False
    kinds = {registry.providers[p].kind for p in entry.provider_names() if p in registry.providers}
    return bool(kinds) and kinds <= ANTHROPIC_KINDS


# the router's own call: its few tokens leave no room for thinking (a Qwen3 that thinks by
# default spends them all in it), so dispatch turns thinking off as for a request the gate
# finds not needed, in the model's own parameter (where its ``reasoning`` entry says how)
_NO_THINKING = ReasoningOutcome(needed=False, reason="llm router: a route name, no thinking")


def _llm_decision(model: str) -> Decision:
    return Decision(
        id=new_decision_id(),
        route=LLM_ROUTER_LAYER,
        model=model,
        layer=LLM_ROUTER_LAYER,
        confidence=1.0,
        margin=None,
        reason="llm router",
        registry_version="",
        signals=(),
        encode_us=0.0,
        total_us=0.0,
        reasoning=_NO_THINKING,
    )


# -- the chosen route's guards, and the gateway's plan ---------------------------------------


def reguard(
    router: Router,
    first: str,
    refined: Decision,
    body: str | Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
) -> Decision:
    """`refined` (a route the LLM router chose over route `first`) under that route's
    guards as well as `first`'s, on what they computed: the chosen route's safety profile
    applied over `first`'s (`also_guarded`: the stricter action for each finding, a
    guarded model's reroute setting the model), its reasoning tier for the gate's verdict,
    and for ``none`` with a difficulty router, its pick. Nothing is scanned or embedded
    again: the difficulty router scores the decision's embedding. The guards' signals
    follow the LLM router's, as the guards applied last."""
    start = time.perf_counter_ns()
    registry = router.loaded.registry
    request = router.request(body, headers=headers)
    ctx = DecisionContext(request, router.encoder.encode, refined.embedding)
    model, reason = refined.model, refined.reason
    if refined.route == DEFAULT_LAYER:
        tier = registry.default.reasoning_target
        difficulty = router.difficulty
        verdict = None if difficulty is None else difficulty.evaluate(ctx).verdict
        if verdict is not None:
            model, reason = verdict.model, f"{reason}; {verdict.reason}"
    else:
        tier = registry.route(refined.route).reasoning_target
    guarded = also_guarded(router, refined, request, refined.route, None if tier == model else tier)
    safety, reasoning = guarded.safety, guarded.reasoning
    if safety is not None and safety is not refined.safety:
        owner = "the default" if first == DEFAULT_LAYER else f"route {first!r}"
        reason += (
            f"; the safety profile of {owner} kept as well ({safety.profile}: {safety.action})"
        )
    if reasoning is not None and reasoning.tier is not None:
        model, reason = reasoning.tier, f"{reason}; reasoning tier ({reasoning.reason})"
    if safety is not None and safety.model is not None:
        fired = ", ".join(safety.decisive or safety.fired) or "policy"
        model, reason = safety.model, f"{reason}; rerouted by safety ({fired})"
    guard_names = {layer.name for layer in router.guards}
    return replace(
        guarded,
        model=model,
        reason=reason,
        signals=(
            *(s for s in guarded.signals if s.layer not in guard_names),
            *(s for s in guarded.signals if s.layer in guard_names),
        ),
        encode_us=refined.encode_us + ctx.encode_us,
        total_us=refined.total_us + (time.perf_counter_ns() - start) / 1000.0,
    )


async def _areguard(
    router: Router,
    first: str,
    refined: Decision,
    body: Mapping[str, Any],
    headers: Mapping[str, str] | None,
) -> Decision:
    """`reguard` for an event loop: in a worker thread where `akeep_within` falls to the
    default in one (a long prompt's redaction; a remote encoder's embedding, for a
    difficulty router with none kept)."""
    if prompt_chars(body) > OFF_LOOP_CHARS or (
        getattr(router.encoder, "remote", False)
        and refined.route == DEFAULT_LAYER
        and router.difficulty is not None
        and refined.embedding is None
    ):
        return await asyncio.to_thread(reguard, router, first, refined, body, headers)
    return reguard(router, first, refined, body, headers)


def request_text(router: Router, decision: Decision, body: str | Mapping[str, Any]) -> str:
    """The text the intent layer saw, from the body safety redacted when it did: the LLM
    router never sends what the request's safety profile withheld."""
    safety = decision.safety
    if safety is not None and safety.redacted_body is not None:
        body = safety.redacted_body
    return router.request(body).text


async def refine_decision(
    llm_router: LlmRouter | None,
    router: Router,
    decision: Decision,
    body: str | Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
) -> Decision:
    """`decision`, refined by the LLM router when it applies, with the guards re-run when
    the route changed; `decision` itself otherwise (or with no LLM router)."""
    if llm_router is None or not llm_router.applies(decision):
        return decision
    refined = await llm_router.refine(decision, request_text(router, decision, body))
    if refined.route == decision.route:
        return refined
    if isinstance(body, str):
        return reguard(router, decision.route, refined, body, headers)
    return await _areguard(router, decision.route, refined, body, headers)


async def refine_plan(
    llm_router: LlmRouter | None,
    router: Router,
    plan: Plan,
    body: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
) -> Plan:
    """The gateway's step after `plan_request`: `plan` itself unless the LLM router
    applies; else a plan for the refined decision. When it chose another route, the
    decision has that route's guards as well (`reguard`), and the plan is that route's
    (its chain, policy and cascade, as for a request pinning it) or, for ``none``, the
    default's."""
    if llm_router is None or not llm_router.applies(plan.decision):
        return plan
    decision = plan.decision
    refined = await llm_router.refine(decision, request_text(router, decision, body))
    if refined.route == decision.route:
        return replace(plan, decision=refined)
    guarded = await _areguard(router, decision.route, refined, body, headers)
    if refined.route == DEFAULT_LAYER:  # as plan_request plans a request no route claims
        return default_plan(router.loaded.registry.default, guarded)
    return plan_of(router, guarded)
