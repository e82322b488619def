"""Offline evaluation of a cascade gate on labelled answers: escalation rate vs accuracy
and cost, against random escalation and a routing-only difficulty router.

A cascade always calls the weak model; the gate accepts its answer (scored by
``weak_correct``) or escalates to the strong model (scored by ``strong_correct``, and paid
on top). A difficulty router decides before any call, so its strong calls do not pay for
the weak model. Curves reuse `llmroute.difficulty.metrics`: a cascade curve is the
quality curve of the escalation score ``-P(acceptable)`` (share = escalation rate), so
APGR, ties and interpolation mean the same as for routers.

- ``apgr``: area under the performance-gap-recovered curve over escalation 0..1 (random
  escalation = 0.5).
- ``escalation_at_95pct_quality``: the smallest escalation rate whose accuracy reaches 95%
  of the strong model's (interpolated; 0 when the weak model already does).
- ``break_even_escalation``: where the cascade costs as much as always calling the strong
  model, ``1 - price_weak / price_strong``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from llmroute.difficulty.metrics import Curve, apgr, cpt, quality_curve, random_curve
from llmroute.gates.learned import CHECK_NAMES, answer_checks

__all__ = [
    "DEFAULT_PRICES",
    "GATES",
    "THRESHOLDS",
    "bootstrap_apgr",
    "cascade_cost",
    "cascade_curve",
    "escalation_at_quality",
    "evaluate_cascade",
    "heuristic_accept",
    "oracle_accept",
    "quality_at",
    "random_accept",
    "router_cost",
    "threshold_rows",
]

F64 = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

GATES = ("learned", "random", "oracle", "heuristic")
DEFAULT_PRICES = (1.0, 10.0)
"""Relative (weak, strong) price per request when none is given."""
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
QUALITY_TARGET = 0.95


def cascade_curve(name: str, accept: Any, weak: Any, strong: Any) -> Curve:
    """Accuracy at every reachable escalation rate, escalating the lowest `accept` first."""
    return quality_curve(name, -np.asarray(accept, dtype=np.float64), weak, strong)


def random_accept(prompts: Sequence[str], *, seed: int = 0) -> F64:
    """A seeded hash of each prompt in [0, 1): escalation independent of the answer."""
    out = np.empty(len(prompts), dtype=np.float64)
    for i, prompt in enumerate(prompts):
        digest = hashlib.sha256(f"{seed}\0{prompt}".encode()).digest()
        out[i] = int.from_bytes(digest[:8], "little") / 2.0**64
    return out


def oracle_accept(weak: Any) -> F64:
    """Accept exactly the correct weak answers (what a perfect gate sees)."""
    return np.asarray(weak, dtype=np.float64)


def heuristic_accept(prompts: Sequence[str], answers: Sequence[str]) -> F64:
    """The offline heuristic gate: 0 for an empty answer, 0.25 without a final answer
    (``#### N`` or "the answer is N"), 0.5 when a ``<<a*b=c>>`` annotation's arithmetic is
    wrong, else 1; accept at the default threshold 0.5 means only the last two pass."""
    out = np.empty(len(answers), dtype=np.float64)
    for i, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        checks = dict(zip(CHECK_NAMES, answer_checks(prompt, answer), strict=True))
        if checks["empty"]:
            out[i] = 0.0
        elif checks["no_final_answer"]:
            out[i] = 0.25
        elif checks["bad_annotations"] or checks["bad_carried_result"]:
            out[i] = 0.5
        else:
            out[i] = 1.0
    return out


def quality_at(curve: Curve, share: float) -> float:
    """The curve's accuracy at `share`, linear between points (exact in expectation)."""
    return float(np.interp(share, curve.shares, curve.quality))


def escalation_at_quality(
    curve: Curve, weak_acc: float, strong_acc: float, fraction: float = QUALITY_TARGET
) -> float:
    """Smallest share whose accuracy reaches `fraction` of the strong accuracy (1.0 if never);
    0 when the weak model already does."""
    goal = fraction * strong_acc
    if weak_acc >= goal - 1e-12:
        return 0.0
    if strong_acc == weak_acc:
        return 1.0
    target = (goal - weak_acc) / (strong_acc - weak_acc)
    if target > 1.0:  # above the strong model: look for the point directly
        hits = np.flatnonzero(curve.quality >= goal - 1e-12)
        return float(curve.shares[hits[0]]) if hits.size else 1.0
    return cpt(curve, weak_acc, strong_acc, target)


def cascade_cost(escalation: float, prices: tuple[float, float]) -> float:
    """Mean cost per request: the weak call always, the strong one when escalated."""
    return float(prices[0] + escalation * prices[1])


def router_cost(share: float, prices: tuple[float, float]) -> float:
    """Mean cost per request of routing: each request calls one model."""
    return float((1.0 - share) * prices[0] + share * prices[1])


def threshold_rows(
    accept: F64,
    weak: BoolArray,
    strong: BoolArray,
    prices: tuple[float, float],
    thresholds: Sequence[float] = THRESHOLDS,
) -> list[dict[str, float]]:
    """Per gate threshold (accept when P >= it): escalation rate, accuracy, cost, and the
    accuracy of random escalation at the same rate (expected)."""
    weak_acc, strong_acc = float(weak.mean()), float(strong.mean())
    rows = []
    for threshold in thresholds:
        escalate = accept < threshold
        rate = float(escalate.mean())
        rows.append(
            {
                "threshold": float(threshold),
                "escalation": rate,
                "accuracy": float(np.where(escalate, strong, weak).mean()),
                "cost": cascade_cost(rate, prices),
                "random_accuracy": (1.0 - rate) * weak_acc + rate * strong_acc,
            }
        )
    return rows


def bootstrap_apgr(
    accept: F64, weak: BoolArray, strong: BoolArray, *, rounds: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile bootstrap interval of the cascade APGR (rows resampled, gate fixed);
    resamples where weak and strong accuracy tie are skipped."""
    rng = np.random.default_rng(seed)
    n = accept.size
    values = []
    for _ in range(rounds):
        idx = rng.integers(0, n, n)
        w, s = weak[idx], strong[idx]
        if w.mean() == s.mean():
            continue
        curve = cascade_curve("boot", accept[idx], w, s)
        values.append(apgr(curve, float(w.mean()), float(s.mean())))
    if not values:
        return (math.nan, math.nan)
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def _summary(curve: Curve, weak_acc: float, strong_acc: float) -> dict[str, float]:
    return {
        "apgr": apgr(curve, weak_acc, strong_acc),
        "escalation_at_95pct_quality": escalation_at_quality(curve, weak_acc, strong_acc),
    }


def _lift_over_random(curve: Curve, weak_acc: float, strong_acc: float) -> float:
    """The smallest (accuracy - random accuracy) over interior escalation rates."""
    inner = (curve.shares > 0.0) & (curve.shares < 1.0)
    if not inner.any():
        return 0.0
    line = (1.0 - curve.shares) * weak_acc + curve.shares * strong_acc
    return float((curve.quality - line)[inner].min())


def _router(
    scores: F64, name: str, weak: BoolArray, strong: BoolArray, prices: tuple[float, float]
) -> dict[str, Any]:
    weak_acc, strong_acc = float(weak.mean()), float(strong.mean())
    curve = quality_curve(name, scores, weak, strong)
    share = escalation_at_quality(curve, weak_acc, strong_acc)
    return {
        "name": name,
        "apgr": apgr(curve, weak_acc, strong_acc),
        "strong_share_at_95pct_quality": share,
        "cost_at_95pct_quality": router_cost(share, prices),
        "curve": curve,
    }


def evaluate_cascade(
    name: str,
    accept: Any,
    weak: Any,
    strong: Any,
    *,
    prices: tuple[float, float] | None = None,
    router_scores: Any = None,
    router_name: str = "router",
    bootstrap: int = 1000,
) -> dict[str, Any]:
    """One JSON-ready summary (curves under ``"curves"``, not JSON: pop before dumping)."""
    p = np.asarray(accept, dtype=np.float64)
    w, s = np.asarray(weak, dtype=np.bool_), np.asarray(strong, dtype=np.bool_)
    if not (p.ndim == 1 and p.size == w.size == s.size and p.size > 0):
        raise ValueError("accept, weak and strong must be non-empty 1-D arrays of one length")
    given = prices is not None
    price = prices if prices is not None else DEFAULT_PRICES
    weak_acc, strong_acc = float(w.mean()), float(s.mean())
    curve = cascade_curve(name, p, w, s)
    summary = _summary(curve, weak_acc, strong_acc)
    out: dict[str, Any] = {
        "gate": name,
        "n": int(p.size),
        "weak_accuracy": weak_acc,
        "strong_accuracy": strong_acc,
        "prices": {"weak": price[0], "strong": price[1], "default": not given},
        **summary,
        "cost_at_95pct_quality": cascade_cost(summary["escalation_at_95pct_quality"], price),
        "cost_all_strong": price[1],
        "cost_all_weak": price[0],
        "break_even_escalation": max(0.0, 1.0 - price[0] / price[1]) if price[1] else 0.0,
        "min_lift_over_random": _lift_over_random(curve, weak_acc, strong_acc),
        "table": threshold_rows(p, w, s, price),
        "random": _summary(random_curve(w, s), weak_acc, strong_acc),
        "oracle": _summary(cascade_curve("oracle", oracle_accept(w), w, s), weak_acc, strong_acc),
    }
    out["beats_random_at_every_rate"] = out["min_lift_over_random"] > 0.0
    if bootstrap > 0 and weak_acc != strong_acc:
        out["apgr_ci95"] = list(bootstrap_apgr(p, w, s, rounds=bootstrap))
    curves = [curve, random_curve(w, s), cascade_curve("oracle", oracle_accept(w), w, s)]
    if router_scores is not None:
        router = _router(np.asarray(router_scores, np.float64), router_name, w, s, price)
        curves.append(router.pop("curve"))
        out["router"] = router
        out["fewer_strong_calls_than_router"] = (
            summary["escalation_at_95pct_quality"] < router["strong_share_at_95pct_quality"]
        )
        out["cheaper_than_router_at_95pct_quality"] = (
            out["cost_at_95pct_quality"] < router["cost_at_95pct_quality"]
        )
    out["curves"] = curves
    return out
