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

When the encoder reads only some scripts (`scripts`: the built-in encoders read Latin),
a request whose letters, in what the encoder reads of it, are more than half in other
scripts is not scored: its vector is made of unknown tokens and letter fragments, and
the head would score it as confidently as any other. The layer passes, unsure, with the
reason ``text mostly in a script the encoder does not read (Han 87% of the letters)``
and ``detail["unread_scripts"]``, so the LLM router (when there is one) is asked, else
the default serves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from llmroute.decision import RouteScore, Verdict
from llmroute.encoders.scripts import ScriptCheck
from llmroute.layers.base import DecisionContext, LayerResult
from llmroute.scoring.heads import IntentHead

__all__ = ["UNREAD_SCRIPTS", "IntentLayer", "confidence_view", "unread_scripts"]

UNREAD_SCRIPTS = "unread_scripts"
"""The `detail` key of a pass for a text mostly in scripts the encoder does not read."""

_TOP = 3
_NO_DETAIL: Mapping[str, object] = MappingProxyType({})


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
        scripts: ScriptCheck | None = None,
    ) -> None:
        if not len(routes) == len(targets) == len(thresholds):
            raise ValueError("routes, targets and thresholds must have the same length")
        self.head = head
        self.routes = tuple(routes)
        self.targets = tuple(targets)
        self.has_out_of_scope = has_out_of_scope
        self._thresholds = np.asarray(thresholds, dtype=np.float32)
        self.pairwise = has_out_of_scope and head.probabilistic
        self.scripts = scripts

    @property
    def method(self) -> str:
        return self.head.method

    def evaluate(self, ctx: DecisionContext) -> LayerResult:
        text = ctx.request.text
        if not text or text.isspace():  # no copy of a long prompt, unlike strip()
            return LayerResult(detail=MappingProxyType({"reason": "empty prompt"}))
        if self.scripts is not None and (unread := self.scripts.unread(text)) is not None:
            reason = f"text mostly in a script the encoder does not read ({unread} of the letters)"
            return LayerResult(detail=MappingProxyType({"reason": reason, UNREAD_SCRIPTS: unread}))
        return self.judge(self.head.scores(ctx.embedding))

    def confidences(self, scores: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Class scores (one row or many) in the units thresholds are compared with."""
        return confidence_view(scores, len(self.routes)) if self.pairwise else scores

    def judge(self, scores: npt.NDArray[np.float32]) -> LayerResult:
        """Turn one row of class scores into a verdict (or a pass with candidates).

        Candidates are routes only; the out-of-scope class, when there is one, wins when
        its raw score beats every route's, and its score is reported in `detail`.
        """
        n_routes = len(self.routes)
        conf = self.confidences(scores)
        top = _top_indices(scores[:n_routes], _TOP)  # the same order in both views
        candidates = tuple(
            RouteScore(self.routes[i], float(conf[i]), float(self._thresholds[i])) for i in top
        )
        best = int(top[0])
        confidence = float(conf[best])
        lead = float(scores[best])
        margin = lead - float(scores[top[1]]) if len(top) > 1 else lead
        detail: dict[str, object] = {}
        if self.has_out_of_scope:
            oos = float(scores[n_routes])
            detail["out_of_scope"] = round(oos, 6)
            if oos > lead:
                return _pass(candidates, f"out of scope (score {oos:.2f})", margin, detail)
        if confidence < (threshold := self._thresholds[best]):
            places = 2 if f"{confidence:.2f}" != f"{threshold:.2f}" else 4  # not "0.28 < 0.28"
            reason = (
                f"best route '{self.routes[best]}' scored {confidence:.{places}f}, "
                f"below its threshold {threshold:.{places}f}"
            )
            return _pass(candidates, reason, margin, detail)
        verdict = Verdict(
            route=self.routes[best],
            model=self.targets[best],
            confidence=confidence,
            margin=margin,
            reason=f"intent '{self.routes[best]}' ({self.method}, score {confidence:.2f})",
        )
        return LayerResult(verdict=verdict, candidates=candidates, detail=_frozen(detail))


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


def _pass(
    candidates: tuple[RouteScore, ...], reason: str, margin: float, detail: dict[str, object]
) -> LayerResult:
    detail.update(reason=reason, margin=round(margin, 6))
    return LayerResult(candidates=candidates, detail=_frozen(detail))


def _frozen(detail: dict[str, object]) -> Mapping[str, object]:
    return MappingProxyType(detail) if detail else _NO_DETAIL


def _top_indices(scores: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.intp]:
    if scores.shape[0] <= k:
        return np.argsort(-scores)
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part])]


def unread_scripts(ctx: DecisionContext, check: ScriptCheck | None, text: str) -> str | None:
    """The scripts the encoder does not read that most of `text` is in, or None: as the
    intent layer found when it ran (it checked the same text), else by `check` (a rule,
    a pinned model or ``router-<kind>-<t>`` decided). For the layers after intent whose
    learned scores of such a text's vector mean nothing."""
    if check is None or not text:
        return None
    intent = ctx.results.get(IntentLayer.name)
    if intent is not None:
        unread = intent.detail.get(UNREAD_SCRIPTS)
        return unread if isinstance(unread, str) else None
    return check.unread(text)
