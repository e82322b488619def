"""The values a decision produces: `Verdict`, `LayerSignal` and the immutable `Decision`.

A `Decision` explains itself: which layer decided and why, with what confidence and
margin, every layer's signal and its cost in microseconds, the registry version and an
id that the gateway returns to the client and the decision log stores.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

__all__ = ["Decision", "LayerSignal", "Outcome", "RouteScore", "Verdict", "new_decision_id"]

_NO_DETAIL: Mapping[str, Any] = MappingProxyType({})


def new_decision_id() -> str:
    """A time-ordered, unique id: 12 hex digits of milliseconds, then 12 random."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(6).hex()}"


class Outcome(StrEnum):
    """What a layer did with the request."""

    DECIDED = "decided"  # chose the route and model
    ANNOTATED = "annotated"  # added signals for later layers without deciding
    PASSED = "passed"  # had nothing to say
    SKIPPED = "skipped"  # did not run: an earlier layer had decided


@dataclass(frozen=True, slots=True)
class RouteScore:
    """A candidate route's score from a scoring layer, with the threshold it must clear."""

    route: str
    score: float
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return {"route": self.route, "score": self.score, "threshold": self.threshold}


@dataclass(frozen=True, slots=True)
class Verdict:
    """A layer's choice: the route, the model that serves it, and why."""

    route: str
    model: str
    confidence: float
    reason: str
    margin: float | None = None


@dataclass(frozen=True, slots=True)
class LayerSignal:
    """What one layer saw and did, as logged and shown by ``--explain``."""

    layer: str
    outcome: Outcome
    elapsed_us: float
    verdict: Verdict | None = None
    candidates: tuple[RouteScore, ...] = ()
    detail: Mapping[str, Any] = field(default_factory=lambda: _NO_DETAIL)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "layer": self.layer,
            "outcome": self.outcome.value,
            "elapsed_us": round(self.elapsed_us, 1),
        }
        if self.verdict is not None:
            out["route"] = self.verdict.route
            out["model"] = self.verdict.model
            out["confidence"] = self.verdict.confidence
            out["reason"] = self.verdict.reason
        if self.candidates:
            out["candidates"] = [c.to_dict() for c in self.candidates]
        if self.detail:
            out["detail"] = dict(self.detail)
        return out


@dataclass(frozen=True, slots=True)
class Decision:
    """The routing decision for one request.

    `layer` names the deciding layer (``default`` when no layer decided and the
    registry's default target was used). `margin` is the confidence gap between the
    chosen route and the runner-up when the deciding layer scores routes, else None.
    """

    id: str
    route: str
    model: str
    layer: str
    confidence: float
    margin: float | None
    reason: str
    registry_version: str
    signals: tuple[LayerSignal, ...]
    encode_us: float
    total_us: float

    @property
    def candidates(self) -> tuple[RouteScore, ...]:
        """The scored routes of the last layer that scored any, best first."""
        for signal in reversed(self.signals):
            if signal.candidates:
                return signal.candidates
        return ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the stable shape of ``llmroute route --json``."""
        return {
            "id": self.id,
            "route": self.route,
            "model": self.model,
            "layer": self.layer,
            "confidence": round(self.confidence, 6),
            "margin": None if self.margin is None else round(self.margin, 6),
            "reason": self.reason,
            "registry_version": self.registry_version,
            "candidates": [c.to_dict() for c in self.candidates],
            "timing_us": {"encode": round(self.encode_us, 1), "total": round(self.total_us, 1)},
            "layers": [s.to_dict() for s in self.signals],
        }
