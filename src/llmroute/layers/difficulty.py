"""`DifficultyLayer`: strong or weak model by the predicted benefit of the strong one.

It runs after rules and intent, for the requests they leave to the default: a learned
win-rate router (``llmroute train difficulty``) scores the shared embedding, and the
strong model serves when the score reaches the threshold. The threshold is the
cost/quality dial: a higher one sends fewer requests to the strong model.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Protocol

import numpy as np
import numpy.typing as npt

from llmroute.decision import Verdict
from llmroute.layers.base import DecisionContext, LayerResult

__all__ = ["DIFFICULTY_ROUTE", "DifficultyLayer", "ScoresDifficulty"]

DIFFICULTY_ROUTE = "default"  # the route of a difficulty verdict: it refines the default


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
        self, router: ScoresDifficulty, *, strong: str, weak: str, threshold: float
    ) -> None:
        self.router = router
        self.strong = strong
        self.weak = weak
        self.threshold = threshold

    def with_threshold(self, threshold: float) -> DifficultyLayer:
        return DifficultyLayer(self.router, strong=self.strong, weak=self.weak, threshold=threshold)

    def evaluate(self, ctx: DecisionContext) -> LayerResult:
        text = ctx.request.text
        score = float(self.router.score(ctx.embedding[None, :], (text,))[0])
        strong = score >= self.threshold
        model = self.strong if strong else self.weak
        relation = "≥" if strong else "<"
        verdict = Verdict(
            route=DIFFICULTY_ROUTE,
            model=model,
            # how far the score is from the dial, squashed to 0..1: 0 at the threshold
            confidence=float(np.tanh(abs(score - self.threshold) * 4.0)),
            reason=(
                f"{self.router.name} difficulty score {score:.3f} {relation} threshold "
                f"{self.threshold:.3f}: {'strong' if strong else 'weak'} model"
            ),
            margin=score - self.threshold,
        )
        detail = MappingProxyType({"score": round(score, 6), "threshold": self.threshold})
        return LayerResult(verdict=verdict, detail=detail)
