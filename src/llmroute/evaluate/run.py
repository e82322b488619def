"""Running a registry over labelled rows, and comparing two registries on the same rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llmroute.decide import DEFAULT_LAYER, Router
from llmroute.decision import Decision
from llmroute.evaluate.data import LabelledRow
from llmroute.evaluate.intent_metrics import DEFAULT, IntentReport, intent_report

__all__ = ["Comparison", "RouteDiff", "compare_reports", "evaluate_router", "predicted_route"]

BATCH = 256


def predicted_route(decision: Decision) -> str:
    """The route a decision counts as: its route, or `DEFAULT` when nothing matched."""
    return DEFAULT if decision.layer == DEFAULT_LAYER else decision.route


def evaluate_router(
    router: Router,
    rows: Sequence[LabelledRow],
    *,
    oos_label: str | None = None,
    progress: Callable[[int], None] | None = None,
    routes: Sequence[str] | None = None,
) -> IntentReport:
    """Route every row (batched encoder calls) and score the decisions against the labels.

    `progress` is called with the number of rows done after each batch. `routes`, the
    labels that count as routes (default: this registry's; a label outside them is out
    of scope): comparing two registries, both are scored against the routes of either,
    so one that drops a route is not excused the rows labelled with it.
    """
    predictions: list[str] = []
    for start in range(0, len(rows), BATCH):
        chunk = rows[start : start + BATCH]
        predictions.extend(predicted_route(d) for d in router.decide_many([r.text for r in chunk]))
        if progress is not None:
            progress(len(chunk))
    if routes is None:
        routes = [route.name for route in router.loaded.registry.routes]
    return intent_report([r.intent for r in rows], predictions, routes, oos_label=oos_label)


@dataclass(frozen=True, slots=True)
class RouteDiff:
    baseline_f1: float | None
    f1: float | None
    baseline_recall: float | None
    recall: float | None

    @property
    def delta_f1(self) -> float | None:
        if self.f1 is None or self.baseline_f1 is None:
            return None
        return self.f1 - self.baseline_f1

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline_f1": self.baseline_f1,
            "f1": self.f1,
            "delta_f1": self.delta_f1,
            "baseline_recall": self.baseline_recall,
            "recall": self.recall,
        }


@dataclass(frozen=True, slots=True)
class Comparison:
    """The candidate registry against a baseline; fails when accuracy drops too far."""

    baseline_accuracy: float
    accuracy: float
    max_drop_points: float
    per_route: dict[str, RouteDiff]

    @property
    def delta_points(self) -> float:
        return (self.accuracy - self.baseline_accuracy) * 100.0

    @property
    def passed(self) -> bool:
        # Rounded so that equal registries never fail on float noise.
        return round(self.delta_points, 9) >= -self.max_drop_points

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline_accuracy": self.baseline_accuracy,
            "accuracy": self.accuracy,
            "delta_points": self.delta_points,
            "max_drop_points": self.max_drop_points,
            "passed": self.passed,
            "per_route": {name: diff.to_dict() for name, diff in self.per_route.items()},
        }


def compare_reports(
    candidate: IntentReport, baseline: IntentReport, *, max_drop_points: float = 0.5
) -> Comparison:
    """Compare on the same rows; routes of either registry appear in the per-route diff."""
    if candidate.n != baseline.n:
        raise ValueError("reports to compare must come from the same rows")
    if max_drop_points < 0:
        raise ValueError(f"max_drop_points must be >= 0, got {max_drop_points}")
    names = list(candidate.per_route) + [
        r for r in baseline.per_route if r not in candidate.per_route
    ]
    per_route = {}
    for name in names:
        new, old = candidate.per_route.get(name), baseline.per_route.get(name)
        per_route[name] = RouteDiff(
            baseline_f1=old.f1 if old else None,
            f1=new.f1 if new else None,
            baseline_recall=old.recall if old else None,
            recall=new.recall if new else None,
        )
    return Comparison(
        baseline_accuracy=baseline.accuracy or 0.0,
        accuracy=candidate.accuracy or 0.0,
        max_drop_points=max_drop_points,
        per_route=per_route,
    )
