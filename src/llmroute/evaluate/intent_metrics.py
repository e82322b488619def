"""Route-accuracy metrics over (gold label, routed-to) pairs.

Pure functions on label sequences. Both sides use `DEFAULT` for "out of scope": a gold
row that no route of the registry should take, and a decision that fell through to the
registry's default. So an out-of-scope row is correct exactly when it went to the
default. Gold labels the registry has no route for (other than the out-of-scope label)
are out of scope *for that registry*; `IntentReport.unknown_labels` lists them so a
typo in a label does not pass silently.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT",
    "IntentReport",
    "RouteMetrics",
    "accuracy",
    "confusion_counts",
    "in_scope_accuracy",
    "intent_report",
    "normalise_gold",
    "oos_precision",
    "oos_recall",
    "per_route_metrics",
    "top_confusions",
]

DEFAULT = "default"
"""Out of scope (gold) / routed to the registry default (prediction)."""


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _check(gold: Sequence[str], pred: Sequence[str]) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")


def normalise_gold(
    labels: Iterable[str], routes: Iterable[str], oos_label: str | None = None
) -> tuple[list[str], list[str]]:
    """Map raw labels onto the registry: route names stay, the rest become `DEFAULT`.

    Returns the mapped labels and the sorted labels that were neither a route nor
    `oos_label` (treated as out of scope, reported so they can be checked).
    """
    known = set(routes)
    mapped: list[str] = []
    unknown: set[str] = set()
    for label in labels:
        if label in known:
            mapped.append(label)
        else:
            mapped.append(DEFAULT)
            if label != oos_label and label != DEFAULT:
                unknown.add(label)
    return mapped, sorted(unknown)


def accuracy(gold: Sequence[str], pred: Sequence[str]) -> float | None:
    """Share of all rows routed to their gold route (out of scope: to the default)."""
    _check(gold, pred)
    return _ratio(sum(g == p for g, p in zip(gold, pred, strict=True)), len(gold))


def in_scope_accuracy(gold: Sequence[str], pred: Sequence[str]) -> float | None:
    """Accuracy over rows whose gold label is a route (None when there are none)."""
    _check(gold, pred)
    pairs = [(g, p) for g, p in zip(gold, pred, strict=True) if g != DEFAULT]
    return _ratio(sum(g == p for g, p in pairs), len(pairs))


def oos_recall(gold: Sequence[str], pred: Sequence[str]) -> float | None:
    """Share of out-of-scope rows that went to the default (None when there are none)."""
    _check(gold, pred)
    routed = [p for g, p in zip(gold, pred, strict=True) if g == DEFAULT]
    return _ratio(sum(p == DEFAULT for p in routed), len(routed))


def oos_precision(gold: Sequence[str], pred: Sequence[str]) -> float | None:
    """Share of rows sent to the default that were out of scope (None when none were)."""
    _check(gold, pred)
    sent = [g for g, p in zip(gold, pred, strict=True) if p == DEFAULT]
    return _ratio(sum(g == DEFAULT for g in sent), len(sent))


@dataclass(frozen=True, slots=True)
class RouteMetrics:
    precision: float | None
    recall: float | None
    f1: float | None
    support: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "support": self.support,
        }


def per_route_metrics(
    gold: Sequence[str], pred: Sequence[str], routes: Iterable[str]
) -> dict[str, RouteMetrics]:
    """Precision, recall, F1 and support (gold rows) for every route, zero support too.

    F1 is 2·TP / (2·TP + FP + FN), defined whenever the route has rows or was routed to:
    0 for a route none of whose rows it got, even when nothing was routed to it (its
    precision undefined), so a route a registry stopped routing to shows as 0, not n/a."""
    _check(gold, pred)
    support = Counter(gold)
    predicted = Counter(pred)
    hits = Counter(g for g, p in zip(gold, pred, strict=True) if g == p)
    out: dict[str, RouteMetrics] = {}
    for route in routes:
        precision = _ratio(hits[route], predicted[route])
        recall = _ratio(hits[route], support[route])
        errors = predicted[route] + support[route] - 2 * hits[route]  # FP + FN
        f1 = _ratio(2 * hits[route], 2 * hits[route] + errors)
        out[route] = RouteMetrics(precision, recall, f1, support[route])
    return out


def confusion_counts(gold: Sequence[str], pred: Sequence[str]) -> dict[str, dict[str, int]]:
    """`{gold: {predicted: count}}` over every row, the diagonal included."""
    _check(gold, pred)
    table: dict[str, dict[str, int]] = {}
    for (g, p), count in sorted(Counter(zip(gold, pred, strict=True)).items()):
        table.setdefault(g, {})[p] = count
    return table


def top_confusions(
    confusion: dict[str, dict[str, int]], limit: int = 15
) -> list[tuple[str, str, int]]:
    """The most frequent (gold, predicted, count) errors, largest first."""
    errors = [(g, p, n) for g, row in confusion.items() for p, n in row.items() if g != p]
    errors.sort(key=lambda item: (-item[2], item[0], item[1]))
    return errors[:limit]


@dataclass(frozen=True, slots=True)
class IntentReport:
    """Every metric of one registry on one labelled file."""

    n: int
    n_in_scope: int
    n_out_of_scope: int
    accuracy: float | None
    in_scope_accuracy: float | None
    oos_recall: float | None
    oos_precision: float | None
    per_route: dict[str, RouteMetrics]
    confusion: dict[str, dict[str, int]]
    unknown_labels: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "n_in_scope": self.n_in_scope,
            "n_out_of_scope": self.n_out_of_scope,
            "accuracy": self.accuracy,
            "in_scope_accuracy": self.in_scope_accuracy,
            "oos_recall": self.oos_recall,
            "oos_precision": self.oos_precision,
            "unknown_labels": self.unknown_labels,
            "per_route": {name: m.to_dict() for name, m in self.per_route.items()},
            "confusion": self.confusion,
        }


def intent_report(
    labels: Sequence[str],
    predictions: Sequence[str],
    routes: Sequence[str],
    *,
    oos_label: str | None = None,
) -> IntentReport:
    """All metrics for raw gold `labels` against `predictions` (route names or `DEFAULT`)."""
    gold, unknown = normalise_gold(labels, routes, oos_label)
    _check(gold, predictions)
    n_oos = sum(g == DEFAULT for g in gold)
    return IntentReport(
        n=len(gold),
        n_in_scope=len(gold) - n_oos,
        n_out_of_scope=n_oos,
        accuracy=accuracy(gold, predictions),
        in_scope_accuracy=in_scope_accuracy(gold, predictions),
        oos_recall=oos_recall(gold, predictions),
        oos_precision=oos_precision(gold, predictions),
        per_route=per_route_metrics(gold, predictions, routes),
        confusion=confusion_counts(gold, predictions),
        unknown_labels=unknown,
    )
