"""Run routing cases (`llmroute.registry.cases`) against a router: each request is
planned as the gateway plans it (``model`` in a chat body pins a route or a model, as
it does there), offline: no model is called, the LLM router included."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmroute.decide import Router
from llmroute.decision import Decision
from llmroute.dispatch.plan import plan_request
from llmroute.errors import RoutingError
from llmroute.registry.cases import Case, Expect, LoadedCases, names_of

__all__ = ["CaseResult", "check", "run_cases"]


@dataclass(frozen=True)
class CaseResult:
    """One case's outcome: the decision (None when the request could not be routed) and
    what did not hold (empty: passed)."""

    label: str
    line: int
    failures: tuple[str, ...]
    decision: Decision | None

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "case": self.label,
            "line": self.line,
            "passed": self.passed,
            "failures": list(self.failures),
        }
        if self.decision is not None:
            d = self.decision
            out["decision"] = {
                "route": d.route,
                "model": d.model,
                "layer": d.layer,
                "confidence": round(d.confidence, 4),
                "reason": d.reason,
                "safety": None if d.safety is None else d.safety.action,
                "reasoning": None if d.reasoning is None else d.reasoning.needed,
            }
        return out


def run_cases(router: Router, cases: LoadedCases) -> list[CaseResult]:
    """Every case's result, in file order."""
    results = []
    for index, (case, line) in enumerate(cases):
        label = cases.label(index)
        try:
            plan = plan_request(router, _body(case), case.headers or {})
        except RoutingError as exc:  # ModelNotFound too: the request itself is refused
            results.append(CaseResult(label, line, (f"not routed: {exc}",), None))
            continue
        failures = check(case.expect, plan.decision)
        if case.expect.chain is not None and plan.chain != case.expect.chain:
            wanted, got = " -> ".join(case.expect.chain), " -> ".join(plan.chain)
            failures.append(f"chain {wanted} expected, got {got}")
        results.append(CaseResult(label, line, tuple(failures), plan.decision))
    return results


def _body(case: Case) -> dict[str, Any]:
    if case.request is not None:
        return case.request
    return {"messages": [{"role": "user", "content": case.prompt}]}


def check(expect: Expect, decision: Decision) -> list[str]:
    """What in `expect` the decision does not meet, one phrase each."""
    failures = []
    for key, got in (
        ("route", decision.route),
        ("model", decision.model),
        ("layer", decision.layer),
    ):
        wanted = getattr(expect, key)
        if wanted is None:
            continue
        names = names_of(wanted)
        if got not in names:
            failures.append(f"{key} {' or '.join(names)} expected, got {got}")
    if expect.rule is not None:
        prefix = f"rule {expect.rule!r}"
        if decision.layer != "rules" or not decision.reason.startswith(prefix):
            failures.append(f"rule {expect.rule} expected to decide, got {decision.reason}")
    if expect.safety is not None:
        action = "allow" if decision.safety is None else decision.safety.action
        if action != expect.safety:
            failures.append(f"safety {expect.safety} expected, got {action}")
    if expect.reasoning is not None:
        needed = decision.reasoning is not None and decision.reasoning.needed
        if needed != expect.reasoning:
            failures.append(
                f"reasoning {'needed' if expect.reasoning else 'not needed'} expected, got "
                f"{'needed' if needed else 'not needed'}"
            )
    if expect.min_confidence is not None and decision.confidence < expect.min_confidence:
        failures.append(
            f"confidence >= {expect.min_confidence:g} expected, got {decision.confidence:.4f}"
        )
    return failures
