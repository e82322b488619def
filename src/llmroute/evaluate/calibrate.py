"""Choosing the intent threshold from validation scores, in numpy.

The validation rows are scored once; every candidate threshold is then evaluated with
sorted arrays and `searchsorted`, never by re-encoding or re-routing. Candidates are the
midpoints between consecutive distinct scores, so the chosen value does not sit exactly
on a validation example.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "ThresholdChoice",
    "choose_threshold",
    "route_predictions",
    "sweep_thresholds",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Ints = npt.NDArray[np.intp]

OOS = -1
"""Gold index of an out-of-scope row, and the prediction "went to the default"."""


@dataclass(frozen=True, slots=True)
class ThresholdChoice:
    threshold: float
    in_scope_accuracy: float | None
    oos_recall: float | None
    rule: str  # how it was chosen, for the summary


def route_predictions(scores: F32, n_routes: int, threshold: float) -> Ints:
    """What `IntentLayer.judge` decides for each row: a route index or `OOS`.

    Columns past `n_routes` are the out-of-scope class: when it wins, nothing matches.
    """
    best = np.argmax(scores, axis=1)
    top = scores[np.arange(len(scores)), best]
    routed = (best < n_routes) & (top >= threshold)
    return np.where(routed, best, OOS).astype(np.intp)


def _best(scores: F32, n_routes: int) -> tuple[Ints, F64]:
    best = np.argmax(scores, axis=1).astype(np.intp)
    top = scores[np.arange(len(scores)), best].astype(np.float64)
    # A row won by the out-of-scope class never routes, whatever the threshold.
    top[best >= n_routes] = -np.inf
    return best, top


def _candidates(top: F64) -> F64:
    finite = np.unique(top[np.isfinite(top)])
    mids = (finite[:-1] + finite[1:]) / 2.0 if len(finite) > 1 else np.empty(0)
    return np.unique(np.clip(np.concatenate([[0.0], mids, [1.0]]), 0.0, 1.0))


def sweep_thresholds(scores: F32, gold: Ints, n_routes: int, thresholds: F64) -> tuple[F64, F64]:
    """In-scope accuracy and out-of-scope recall at each threshold (NaN when a side is
    empty). `gold` holds route indices, `OOS` for out-of-scope rows."""
    best, top = _best(scores, n_routes)
    in_scope = gold != OOS
    correct = np.sort(top[in_scope & (best == gold)])
    leaked = np.sort(top[~in_scope])  # out-of-scope rows and the score that could route them
    n_in, n_oos = int(in_scope.sum()), int((~in_scope).sum())
    n_correct = len(correct) - np.searchsorted(correct, thresholds, side="left")
    n_leaked = len(leaked) - np.searchsorted(leaked, thresholds, side="left")
    acc = n_correct / n_in if n_in else np.full(len(thresholds), np.nan)
    rec = 1.0 - n_leaked / n_oos if n_oos else np.full(len(thresholds), np.nan)
    return np.asarray(acc, dtype=np.float64), np.asarray(rec, dtype=np.float64)


def _opt(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def choose_threshold(
    scores: F32,
    gold: Ints,
    n_routes: int,
    *,
    oos_recall_target: float = 0.9,
    in_scope_pass: float = 0.98,
) -> ThresholdChoice:
    """The global threshold for these validation scores.

    With out-of-scope rows: the operating point — the highest in-scope accuracy among
    thresholds whose out-of-scope recall reaches `oos_recall_target` (the lowest such
    threshold on ties). Maximising a mean of the two instead over-weights the usually
    few out-of-scope rows: with 20 of them each is worth 5 points of recall, and the
    threshold climbs to catch the last one at the cost of many in-scope rows.

    Without: the highest threshold that keeps `in_scope_pass` of the in-scope rows at
    or above it, so the default catches only the least confident few.
    """
    if len(scores) == 0:
        raise ValueError("no validation rows to choose a threshold on")
    if not (gold == OOS).any():
        return _pass_threshold(scores, gold, n_routes, in_scope_pass)
    candidates = _candidates(_best(scores, n_routes)[1])
    acc, rec = sweep_thresholds(scores, gold, n_routes, candidates)
    feasible = rec >= oos_recall_target - 1e-12
    objective = np.where(np.isnan(acc), 0.0, acc)
    objective[~feasible] = -np.inf
    # A threshold of 1.0 routes (almost) nothing, so something is always feasible.
    index = int(np.argmax(objective))
    rule = f"max in-scope accuracy s.t. oos recall >= {oos_recall_target:g}"
    if not feasible.any():  # pragma: no cover - guarded by the 1.0 candidate
        index = int(np.argmax(rec))
        rule = "highest oos recall (target unreachable)"
    return ThresholdChoice(float(candidates[index]), _opt(acc[index]), _opt(rec[index]), rule)


def _pass_threshold(scores: F32, gold: Ints, n_routes: int, keep: float) -> ThresholdChoice:
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"in_scope_pass must be in (0, 1], got {keep}")
    top = np.sort(_best(scores, n_routes)[1])
    k = int(np.floor((1.0 - keep) * len(top) + 1e-9))  # rows allowed below the threshold
    threshold = 0.0 if k == 0 else (top[k - 1] + top[k]) / 2.0
    threshold = float(np.clip(threshold, 0.0, 1.0))
    acc, _ = sweep_thresholds(scores, gold, n_routes, np.asarray([threshold]))
    return ThresholdChoice(
        threshold, _opt(acc[0]), None, f"keeps {keep:g} of in-scope rows out of fold"
    )
