"""The intent layer: the request embedding against each route's examples.

It decides when the best route's confidence clears that route's threshold; otherwise it
passes, with the scored candidates as its signal, and later layers or the registry's
default take over.

Confidence is the best route's score: a cosine similarity for centroid and kNN, a
softmax probability for the linear head. When the linear head has an out-of-scope class,
confidence is instead ``p(route) / (p(route) + p(out_of_scope))``: how much more likely
the route is than "off-topic", whatever the other routes do. Measured on CLINC150 (a
validation part of train), thresholding that score keeps 3-7 points more in-scope
accuracy at the same out-of-scope recall than thresholding the max probability, because
a request split between two close routes is no longer mistaken for an off-topic one.
The margin stays the probability lead over the runner-up: that is route ambiguity.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from llmroute.decision import RouteScore, Verdict
from llmroute.layers.base import DecisionContext, LayerResult
from llmroute.scoring.heads import IntentHead

__all__ = ["OUT_OF_SCOPE", "IntentLayer", "confidence_view"]

OUT_OF_SCOPE = "out_of_scope"
"""Name of the extra class trained on a registry's out-of-scope examples."""

_TOP = 3


class IntentLayer:
    """Scores the classes of `head`; the first `len(routes)` classes are routes, an extra
    last class (when `has_out_of_scope`) stands for off-topic requests."""

    name = "intent"
    always_runs = False

    def __init__(
        self,
        head: IntentHead,
        routes: Sequence[str],
        targets: Sequence[str],
        thresholds: Sequence[float],
        *,
        has_out_of_scope: bool = False,
    ) -> None:
        if not len(routes) == len(targets) == len(thresholds):
            raise ValueError("routes, targets and thresholds must have the same length")
        self.head = head
        self.routes = tuple(routes)
        self.targets = tuple(targets)
        self.has_out_of_scope = has_out_of_scope
        self._names = (*self.routes, OUT_OF_SCOPE) if has_out_of_scope else self.routes
        # The out-of-scope class has no threshold of its own: when it wins, nothing matches.
        limits = [*thresholds, 2.0] if has_out_of_scope else list(thresholds)
        self._thresholds = np.asarray(limits, dtype=np.float32)
        self.pairwise = has_out_of_scope and head.probabilistic

    @property
    def method(self) -> str:
        return self.head.method

    def evaluate(self, ctx: DecisionContext) -> LayerResult:
        text = ctx.request.text
        if not text or text.isspace():  # no copy of a long prompt, unlike strip()
            return LayerResult(detail=MappingProxyType({"reason": "empty prompt"}))
        return self.judge(self.head.scores(ctx.embedding))

    def confidences(self, scores: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Class scores (one row or many) in the units thresholds are compared with."""
        return confidence_view(scores, len(self.routes)) if self.pairwise else scores

    def judge(self, scores: npt.NDArray[np.float32]) -> LayerResult:
        """Turn one row of class scores into a verdict (or a pass with candidates)."""
        conf = self.confidences(scores)
        top = _top_indices(scores, _TOP)  # the same order in both views
        candidates = tuple(
            RouteScore(self._names[i], float(conf[i]), self._threshold_of(i)) for i in top
        )
        best = int(top[0])
        confidence = float(conf[best])
        lead = float(scores[best])
        margin = lead - float(scores[top[1]]) if len(top) > 1 else lead
        if best >= len(self.routes):
            reason = f"out of scope (p={confidence:.2f})"
            return LayerResult(candidates=candidates, detail=_reason(reason, margin))
        if confidence < self._thresholds[best]:
            reason = (
                f"best route '{self.routes[best]}' scored {confidence:.2f}, "
                f"below its threshold {self._thresholds[best]:.2f}"
            )
            return LayerResult(candidates=candidates, detail=_reason(reason, margin))
        verdict = Verdict(
            route=self.routes[best],
            model=self.targets[best],
            confidence=confidence,
            margin=margin,
            reason=f"intent '{self.routes[best]}' ({self.method}, score {confidence:.2f})",
        )
        return LayerResult(verdict=verdict, candidates=candidates)

    def _threshold_of(self, index: int) -> float:
        return float(self._thresholds[index]) if index < len(self.routes) else 1.0


def confidence_view(scores: npt.NDArray[np.float32], n_routes: int) -> npt.NDArray[np.float32]:
    """Route columns become ``p_r / (p_r + p_oos)``; the out-of-scope column becomes 0.5.

    Monotone in p_r, so the route order is kept, and the out-of-scope column (0.5) wins
    exactly when p_oos exceeded every p_r: argmax and threshold rules work unchanged.
    Works on one row or a matrix; the last column is the out-of-scope class.
    """
    routes = scores[..., :n_routes]
    oos = scores[..., n_routes : n_routes + 1]
    out = np.empty_like(scores)
    np.divide(routes, routes + oos, out=out[..., :n_routes])
    out[..., n_routes:] = 0.5
    return out


def _reason(reason: str, margin: float) -> MappingProxyType[str, object]:
    return MappingProxyType({"reason": reason, "margin": round(margin, 6)})


def _top_indices(scores: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.intp]:
    if scores.shape[0] <= k:
        return np.argsort(-scores)
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part])]
