"""The rules layer: explicit, ordered conditions that pin a route or a model.

Rules are for what must not be left to similarity: a tenant pinned to a model, requests
with tools, very long prompts, stack traces. Every condition is compiled once, at load;
evaluating a rule is a few regex searches and dict look-ups.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from llmroute.decision import Verdict
from llmroute.layers.base import DecisionContext, LayerResult
from llmroute.registry import Registry, Rule, RuleWhen
from llmroute.request import RouteRequest

__all__ = ["RulesLayer"]

Predicate = Callable[[RouteRequest], bool]


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    name: str
    predicates: tuple[Predicate, ...]
    verdict: Verdict


class RulesLayer:
    """First matching rule wins; a rule names a route (served by its target) or a model."""

    name = "rules"
    always_runs = False

    def __init__(self, registry: Registry) -> None:
        self._rules = tuple(_compile(rule, registry) for rule in registry.rules)

    def __len__(self) -> int:
        return len(self._rules)

    def evaluate(self, ctx: DecisionContext) -> LayerResult:
        request = ctx.request
        for rule in self._rules:
            if all(predicate(request) for predicate in rule.predicates):
                return LayerResult(
                    verdict=rule.verdict, detail=MappingProxyType({"rule": rule.name})
                )
        return LayerResult()


def _compile(rule: Rule, registry: Registry) -> _CompiledRule:
    if rule.route is not None:
        route, model = rule.route, registry.route(rule.route).target
    else:
        assert rule.target is not None  # the schema requires exactly one of the two
        route, model = f"rule:{rule.name}", rule.target
    verdict = Verdict(route=route, model=model, confidence=1.0, reason=f"rule '{rule.name}'")
    return _CompiledRule(rule.name, _predicates(rule.when), verdict)


def _predicates(when: RuleWhen) -> tuple[Predicate, ...]:
    preds: list[Predicate] = []
    if when.regex is not None:
        patterns = [when.regex] if isinstance(when.regex, str) else list(when.regex)
        preds.append(_search(re.compile("|".join(f"(?:{p})" for p in patterns))))
    if when.keywords:
        words = "|".join(re.escape(k) for k in when.keywords)
        preds.append(_search(re.compile(rf"(?<!\w)(?:{words})(?!\w)", re.IGNORECASE)))
    if when.header:
        preds.append(_match_mapping(when.header, lambda r: r.headers, lower_keys=True))
    if when.metadata:
        preds.append(_match_mapping(when.metadata, lambda r: r.metadata, lower_keys=False))
    if when.has_tools is not None:
        wanted = when.has_tools
        preds.append(lambda r: r.has_tools is wanted)
    if when.has_images is not None:
        images = when.has_images
        preds.append(lambda r: r.has_images is images)
    if when.min_tokens is not None:
        low = when.min_tokens
        preds.append(lambda r: r.estimated_tokens >= low)
    if when.max_tokens is not None:
        high = when.max_tokens
        preds.append(lambda r: r.estimated_tokens <= high)
    return tuple(preds)


def _search(pattern: re.Pattern[str]) -> Predicate:
    return lambda request: pattern.search(request.text) is not None


def _match_mapping(
    wanted: Mapping[str, str],
    get: Callable[[RouteRequest], Mapping[str, str]],
    *,
    lower_keys: bool,
) -> Predicate:
    pairs: Sequence[tuple[str, str]] = tuple(
        (k.lower() if lower_keys else k, str(v)) for k, v in wanted.items()
    )

    def check(request: RouteRequest) -> bool:
        have = get(request)
        for key, value in pairs:
            got = have.get(key)
            if got is None or (value != "*" and got != value):
                return False
        return True

    return check
