"""`DifficultyLayer`: strong or weak model by the predicted benefit of the strong one.

It runs after rules and intent, for the requests they leave to the default: a learned
win-rate router (``llmroute train difficulty``) scores the shared embedding, and the
strong model serves when the score reaches the threshold. The threshold is the
cost/quality dial: a higher one sends fewer requests to the strong model.

A request mostly in scripts the encoder does not read (`ScriptCheck`, as the intent layer
says it) is not scored by default: its vector is made of unknown tokens, so the score
would pick strong or weak by chance. `unread` says what serves it instead: ``strong``
(the default: quality first, and a small model is the likelier to fail in a language
its vendor trained it less on), ``weak``, or ``score`` to score it all the same. An
empty prompt (no text at all, as in an image-only turn) is not scored either: the layer
passes, and the default's target serves it, as it does when no difficulty router is set.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from llmroute.decision import Verdict
from llmroute.encoders.scripts import ScriptCheck
from llmroute.layers.base import DecisionContext, LayerResult
from llmroute.layers.intent import UNREAD_SCRIPTS, unread_scripts

__all__ = ["DIFFICULTY_ROUTE", "DifficultyLayer", "ScoresDifficulty", "Unread"]

DIFFICULTY_ROUTE = "default"  # the route of a difficulty verdict: it refines the default
Unread = Literal["strong", "weak", "score"]


class ScoresDifficulty(Protocol):
    """What the layer needs of a trained router (`llmroute.difficulty`)."""

    @property
    def name(self) -> str: ...

    def score(
        self, embeddings: npt.NDArray[np.float32], texts: Sequence[str]
    ) -> npt.NDArray[np.float64]: ...


class DifficultyLayer:
    name = "difficulty"
    always_runs = False

    def __init__(
        self,
        router: ScoresDifficulty,
        *,
        strong: str,
        weak: str,
        threshold: float,
        scripts: ScriptCheck | None = None,
        unread: Unread = "strong",
    ) -> None:
        self.router = router
        self.strong = strong
        self.weak = weak
        self.threshold = threshold
        self.scripts = scripts
        self.unread = unread

    def with_threshold(self, threshold: float) -> DifficultyLayer:
        return DifficultyLayer(
            self.router,
            strong=self.strong,
            weak=self.weak,
            threshold=threshold,
            scripts=self.scripts,
            unread=self.unread,
        )

    def evaluate(self, ctx: DecisionContext) -> LayerResult:
        text = ctx.request.text
        if not text or text.isspace():
            # Nothing to score (an image-only turn, say): the zero vector's score would
            # pick strong or weak regardless of the request, so the default serves it.
            return LayerResult(detail=MappingProxyType({"reason": "empty prompt"}))
        unread = unread_scripts(ctx, self.scripts, text)
        if unread is not None and self.unread != "score":
            strong = self.unread == "strong"
            verdict = Verdict(
                route=DIFFICULTY_ROUTE,
                model=self.strong if strong else self.weak,
                confidence=0.0,  # nothing was scored
                reason=(
                    f"not scored: text mostly in a script the encoder does not read ({unread} "
                    f"of the letters): {self.unread} model"
                ),
                margin=0.0,
            )
            detail = {UNREAD_SCRIPTS: unread, "threshold": self.threshold}
            return LayerResult(verdict=verdict, detail=MappingProxyType(detail))
        score = float(self.router.score(ctx.embedding[None, :], (text,))[0])
        strong = score >= self.threshold
        model = self.strong if strong else self.weak
        relation = "≥" if strong else "<"
        reason = (
            f"{self.router.name} difficulty score {score:.3f} {relation} threshold "
            f"{self.threshold:.3f}: {'strong' if strong else 'weak'} model"
        )
        if unread is not None:
            reason += f" (text mostly in {unread}: scored all the same)"
        verdict = Verdict(
            route=DIFFICULTY_ROUTE,
            model=model,
            # how far the score is from the dial, squashed to 0..1: 0 at the threshold
            confidence=float(np.tanh(abs(score - self.threshold) * 4.0)),
            reason=reason,
            margin=score - self.threshold,
        )
        scored: dict[str, object] = {"score": round(score, 6), "threshold": self.threshold}
        if unread is not None:
            scored[UNREAD_SCRIPTS] = unread
        return LayerResult(verdict=verdict, detail=MappingProxyType(scored))
