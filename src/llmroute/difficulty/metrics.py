"""RouteLLM-style metrics for difficulty routing: quality against the share of strong calls.

A router scores each prompt (higher = the strong model is more needed); a threshold sends the
prompts scoring at or above it to the strong model. Sweeping the threshold traces a curve
from all-weak (share 0, quality = weak accuracy) to all-strong (share 1, strong accuracy).

- PGR(share) = (quality(share) - weak_acc) / (strong_acc - weak_acc): the part of the
  weak→strong gap recovered. It is NOT clipped: it exceeds 1 where the mix beats the strong
  model (the weak one is right where the strong one is wrong) and goes below 0 where the mix
  is worse than all-weak. Clipping would hide both, and an oracle's APGR above 1 is the honest
  measure of the headroom.
- APGR: trapezoid area under PGR over share ∈ [0, 1]; a random router scores 0.5 in
  expectation, a perfect one more (see `oracle_curve`).
- CPT(x): the smallest share of strong calls whose PGR reaches x (a fraction, 0.5 = "50%").

Ties: prompts with equal scores cannot be separated by a threshold, so a curve has points
only at tie-group boundaries; between two points the quality is what a random order inside
the group gives in expectation, which is why linear interpolation between points is exact
in expectation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.typing import ArrayLike

__all__ = [
    "Curve",
    "apgr",
    "cpt",
    "knee",
    "oracle_curve",
    "pgr",
    "quality_curve",
    "random_curve",
    "report",
    "threshold_for_share",
    "threshold_text",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

_EPS = 1e-12  # float slack so a PGR of exactly the target (e.g. 1.0 at share 1) counts


@dataclass(frozen=True, slots=True)
class Curve:
    """Quality of the routed mix at each reachable strong-call share.

    `shares` increases from 0 to 1; `thresholds[i]` is the score threshold (score >= it →
    strong) that reaches `shares[i]`, inf at share 0.
    """

    name: str
    shares: FloatArray
    quality: FloatArray
    thresholds: FloatArray

    def __post_init__(self) -> None:
        sizes = {len(self.shares), len(self.quality), len(self.thresholds)}
        if len(sizes) != 1 or len(self.shares) < 2:
            raise ValueError("a curve needs >= 2 points and equal-length arrays")
        if self.shares[0] != 0.0 or self.shares[-1] != 1.0:
            raise ValueError("a curve's shares must run from 0 to 1")


def _labels(weak: ArrayLike, strong: ArrayLike) -> tuple[BoolArray, BoolArray]:
    """Validated per-prompt correctness of the two models, as 1-D bool arrays."""
    out = []
    for name, values in (("weak", weak), ("strong", strong)):
        arr = np.asarray(values)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"{name} must be a non-empty 1-D array")
        if arr.dtype != np.bool_ and not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must hold booleans (or 0/1)")
        out.append(arr.astype(np.bool_))
    if out[0].shape != out[1].shape:
        raise ValueError("weak and strong must have the same length")
    return out[0], out[1]


def _scores(scores: ArrayLike, n: int | None = None) -> FloatArray:
    """Validated 1-D finite scores (of length `n` when given)."""
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or (n is not None and arr.size != n):
        raise ValueError("scores must be a non-empty 1-D array, one per prompt")
    if not np.isfinite(arr).all():
        raise ValueError("scores must be finite")
    return arr


def quality_curve(name: str, scores: ArrayLike, weak: ArrayLike, strong: ArrayLike) -> Curve:
    """The exact curve of a scoring router: top-k by score to strong, for every k reachable by a
    threshold (every k without ties; tied scores move together, as one step)."""
    weak_ok, strong_ok = _labels(weak, strong)
    values = _scores(scores, weak_ok.size)
    n = values.size
    order = np.argsort(-values, kind="stable")
    ranked = values[order]
    # Last index of each tie group: a threshold there sends that group and all above.
    ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    gain = np.cumsum(strong_ok[order].astype(np.float64) - weak_ok[order])
    quality = (weak_ok.sum() + np.concatenate(([0.0], gain[ends]))) / n
    shares = np.concatenate(([0.0], (ends + 1) / n))
    thresholds = np.concatenate(([math.inf], ranked[ends]))
    return Curve(name, shares, quality, thresholds)


def random_curve(weak: ArrayLike, strong: ArrayLike) -> Curve:
    """A random router's expected curve: the straight line from weak to strong accuracy.

    It is the curve of a score drawn uniformly from [0, 1), so `thresholds` = 1 - share.
    Points are at every k/n to line up with `quality_curve`.
    """
    weak_ok, strong_ok = _labels(weak, strong)
    shares = np.linspace(0.0, 1.0, weak_ok.size + 1)
    quality = (1.0 - shares) * weak_ok.mean() + shares * strong_ok.mean()
    thresholds = 1.0 - shares
    thresholds[0] = math.inf
    return Curve("random", shares, quality, thresholds)


def oracle_curve(weak: ArrayLike, strong: ArrayLike) -> Curve:
    """The best possible router: strong first where only strong is right (score 2), then where
    both agree (1, no change), last where only weak is right (0, each one a loss)."""
    weak_ok, strong_ok = _labels(weak, strong)
    score = 1.0 + (strong_ok & ~weak_ok) - (weak_ok & ~strong_ok)
    return quality_curve("oracle", score, weak_ok, strong_ok)


def pgr(curve: Curve, weak_acc: float, strong_acc: float) -> FloatArray:
    """Performance gap recovered at each point of `curve` (unclipped, see the module doc)."""
    gap = strong_acc - weak_acc
    if not math.isfinite(gap) or gap == 0.0:
        raise ValueError("PGR is undefined when weak and strong accuracy are equal")
    return (curve.quality - weak_acc) / gap


def apgr(curve: Curve, weak_acc: float, strong_acc: float) -> float:
    """Area under the (unclipped) PGR curve over share 0..1, by trapezoids; random = 0.5."""
    y = pgr(curve, weak_acc, strong_acc)
    return float(np.sum(np.diff(curve.shares) * (y[1:] + y[:-1]) / 2.0))


def cpt(curve: Curve, weak_acc: float, strong_acc: float, target: float) -> float:
    """Smallest strong-call share whose PGR reaches `target` (a fraction, 0.5 for CPT(50%)),
    interpolated linearly between points; 1.0 if the curve never reaches it."""
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target is a fraction in [0, 1], got {target}")
    y = pgr(curve, weak_acc, strong_acc)
    hits = np.flatnonzero(y >= target - _EPS)
    if hits.size == 0:
        return 1.0
    i = int(hits[0])
    if i == 0:
        return 0.0
    x0, x1, y0, y1 = curve.shares[i - 1], curve.shares[i], y[i - 1], y[i]
    return float(min(x1, x0 + (target - y0) / (y1 - y0) * (x1 - x0)))


def knee(curve: Curve) -> tuple[float, float]:
    """(share, quality) of the point furthest above the random line joining the curve's own
    end points; the cheapest such point on ties.

    The best buy for the money: past it, each extra strong call gains less than a random one
    would. A linear functional peaks at a vertex of the upper convex hull, so this is the
    hull's knee. A curve never above the random line gives share 0 (all-weak).
    """
    q0, q1 = curve.quality[0], curve.quality[-1]
    lift = curve.quality - (q0 + curve.shares * (q1 - q0))
    i = int(np.argmax(lift))
    return float(curve.shares[i]), float(curve.quality[i])


def threshold_for_share(scores: ArrayLike, share: float) -> float:
    """The score threshold sending `share` of these prompts to strong (score >= it → strong).

    It is the k-th highest score, k = ceil(share·n) (at least 1): with no tie at the cut the
    realised share is k/n; prompts tied with the k-th score go along, so with ties the
    realised share is the smallest reachable one at or above `share`.
    """
    if not 0.0 < share < 1.0:
        raise ValueError(f"share must be in (0, 1), got {share}")
    values = np.sort(_scores(scores))[::-1]
    k = max(1, math.ceil(share * values.size - 1e-9))
    return float(values[k - 1])


def threshold_text(scores: ArrayLike, threshold: float, digits: int = 6) -> str:
    """`threshold` written with `digits` significant digits (more where needed), rounded
    down, so that the written value read back as a threshold (score >= it → strong, as a
    registry applies it) sends exactly the prompts of `scores` that `threshold` sends.

    Rounding to the nearest would write a value above `threshold` half the time, and the
    prompt scoring exactly `threshold` (`threshold_for_share` returns a score) would then
    go to the weak model; rounding down past the next lower score would add prompts.
    """
    values = _scores(scores)
    below = values[values < threshold]
    floor = float(below.max()) if below.size else -math.inf
    exact = Decimal(threshold)
    for places in range(digits, 18):
        step = Decimal(1).scaleb(exact.adjusted() - places + 1)
        text = f"{float(exact.quantize(step, rounding=ROUND_FLOOR)):.{places}g}"
        if floor < float(text) <= threshold:
            return text
    return repr(float(threshold))


def _summary(curve: Curve, weak_acc: float, strong_acc: float) -> dict[str, float]:
    return {
        "apgr": apgr(curve, weak_acc, strong_acc),
        "cpt50": cpt(curve, weak_acc, strong_acc, 0.5),
        "cpt80": cpt(curve, weak_acc, strong_acc, 0.8),
    }


def _costs(summary: dict[str, Any], prices: tuple[float, float]) -> dict[str, float]:
    """Mean cost per request at each operating point (each prompt goes to one model)."""
    weak_price, strong_price = prices

    def at(share: float) -> float:
        return float((1.0 - share) * weak_price + share * strong_price)

    return {
        "cost_cpt50": at(summary["cpt50"]),
        "cost_cpt80": at(summary["cpt80"]),
        "cost_knee": at(summary["knee_share"]),
        "cost_all_strong": at(1.0),
        "cost_all_weak": at(0.0),
    }


def report(
    curve: Curve,
    weak: ArrayLike,
    strong: ArrayLike,
    *,
    prices: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """One JSON-ready summary of `curve` with random and oracle baselines for scale.

    Shares are fractions 0..1; with `prices` = (weak, strong) cost per request, `cost_*` is
    the mean cost per request at that operating point.
    """
    weak_ok, strong_ok = _labels(weak, strong)
    weak_acc, strong_acc = float(weak_ok.mean()), float(strong_ok.mean())
    share, quality = knee(curve)
    out: dict[str, Any] = {
        "name": curve.name,
        "n": int(weak_ok.size),
        "weak_accuracy": weak_acc,
        "strong_accuracy": strong_acc,
        **_summary(curve, weak_acc, strong_acc),
        "knee_share": share,
        "knee_quality": quality,
    }
    if prices is not None:
        out.update(_costs(out, prices))
    out["random"] = _summary(random_curve(weak_ok, strong_ok), weak_acc, strong_acc)
    out["oracle"] = _summary(oracle_curve(weak_ok, strong_ok), weak_acc, strong_acc)
    return out
