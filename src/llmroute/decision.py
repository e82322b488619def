"""The values a decision produces: `Verdict`, `LayerSignal` and the immutable `Decision`.

A `Decision` explains itself: which layer decided and why, with what confidence and
margin, every layer's signal and its cost in microseconds, the registry version and an
id that the gateway returns to the client and the decision log stores.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmroute.safety.answer_pii import AnswerMask

__all__ = [
    "Decision",
    "LayerSignal",
    "Outcome",
    "ReasoningOutcome",
    "RouteScore",
    "SafetyOutcome",
    "Verdict",
    "new_decision_id",
]

_NO_DETAIL: Mapping[str, Any] = MappingProxyType({})
_NO_COUNTS: Mapping[str, int] = MappingProxyType({})


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
class SafetyOutcome:
    """What the safety layer found and did. It never holds the matched text: `findings`
    are detector names and scores or PII types and counts, safe to log and return.

    `action` is ``allow``, ``redact``, ``block`` or ``route`` (to `model`); `fired` names
    every detector that found something, whatever its action (``injection``,
    ``rule:<name>``, ``pii:EMAIL``, ``unscanned``, ``unread_scripts``).
    `redacted_body` is the request body with PII replaced by placeholders, for dispatch
    and telemetry; `restore` maps each placeholder to the value it replaced, for the
    answer the client gets when the profile restores (`llmroute.safety.restore`);
    `answer_mask` redacts PII in that answer when the profile says so. They are left out
    of `to_dict` and of the repr. `windows` counts the windows cut, `unread_windows`
    those of them mostly in scripts the encoder does not read, which the classifier did
    not score whole (only their read letters, when there are enough), `extra_windows`
    those past ``max_windows`` that went to the built-in static detector (when the
    registry's is another), and `extra_score` its worst score of them; `injection_score`
    is the registry's detector's, of the others. `unscanned_for` says why text went
    unscanned: ``length`` (past all the windows), ``script`` (windows past ``max_windows``
    in a script the registry's encoder reads and the static detector's does not); it is
    in the signal's detail, not in `to_dict`.
    """

    profile: str
    action: str
    fired: tuple[str, ...] = ()
    injection_score: float | None = None
    pii: Mapping[str, int] = field(default_factory=lambda: _NO_COUNTS)
    windows: int = 0
    unread_windows: int = 0
    unscanned: bool = False
    unscanned_for: tuple[str, ...] = ()
    extra_windows: int = 0
    extra_score: float | None = None
    model: str | None = None
    redacted_body: Mapping[str, Any] | None = field(default=None, repr=False)
    restore: Mapping[str, str] | None = field(default=None, repr=False)
    answer_mask: AnswerMask | None = field(default=None, repr=False)
    # the detectors whose action is `action` (what a block names; `fired` has them all)
    decisive: tuple[str, ...] = field(default=(), repr=False)
    # top-level body fields rewritten because they held PII (end-user ids, metadata)
    fields: Mapping[str, Any] | None = field(default=None, repr=False)
    # what the detectors saw (the injection scan, the PII spans' places and types, no
    # text), whatever the profile made of it: another profile is applied to it
    # (`SafetyLayer.also_under`) without running them again; past `KEPT_SPANS` spans
    # (`llmroute.layers.safety`) none are kept, and the PII detector runs again
    detected: Any = field(default=None, repr=False, compare=False)

    @property
    def blocked(self) -> bool:
        return self.action == "block"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"profile": self.profile, "action": self.action}
        if self.fired:
            out["fired"] = list(self.fired)
        if self.injection_score is not None:
            out["injection_score"] = round(self.injection_score, 4)
        if self.pii:
            out["pii"] = dict(self.pii)
        out["windows"] = self.windows
        if self.unread_windows:
            out["unread_windows"] = self.unread_windows
        if self.extra_windows:
            out["extra_windows"] = self.extra_windows
        if self.extra_score is not None:
            out["extra_score"] = round(self.extra_score, 4)
        if self.unscanned:
            out["unscanned"] = True
        if self.model is not None:
            out["model"] = self.model
        if self.fields:
            out["fields"] = sorted(self.fields)
        return out


@dataclass(frozen=True, slots=True)
class ReasoningOutcome:
    """The reasoning gate's call: whether the request needs extended thinking, the
    learned score when one ran, why, and the reasoning-tier model it switched to."""

    needed: bool
    reason: str
    score: float | None = None
    tier: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"needed": self.needed, "reason": self.reason}
        if self.score is not None:
            out["score"] = round(self.score, 4)
        if self.tier is not None:
            out["tier"] = self.tier
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
    safety: SafetyOutcome | None = None
    reasoning: ReasoningOutcome | None = None
    # the request text's unit-norm embedding when a layer computed it, and the length of
    # that text (the semantic cache reuses them); not part of the decision's record, and
    # not kept past the request (`kept`)
    embedding: Any = field(default=None, repr=False, compare=False)
    embedded_chars: int = field(default=0, repr=False, compare=False)
    # id() of the body the layers routed on and its text: the decision log stores that
    # text for that body (alive throughout its request) rather than parse it again. Not
    # the request itself: a record waiting in the log's queue would keep the body and
    # its headers. Not part of the decision's record.
    routed: tuple[int, str] | None = field(default=None, repr=False, compare=False)

    @property
    def blocked(self) -> bool:
        """Whether the safety layer refused the request."""
        return self.safety is not None and self.safety.blocked

    def kept(self) -> Decision:
        """This decision less what only its own request needs: the text the layers
        routed on, its embedding (a vector can be inverted to approximate text; the
        layers, a pool's fall to the default and the cache's keys read it during the
        request, nothing after it) and, of its safety outcome, the values the answer is
        restored with, the redacted body and the spans found. What outlives the request
        (a record waiting in the decision log's queue, a shadow's reference and judge
        calls) holds this, not the originals of what safety redacted."""
        safety = self.safety
        if safety is not None:
            safety = replace(safety, restore=None, redacted_body=None, detected=None)
        return replace(self, routed=None, safety=safety, embedding=None, embedded_chars=0)

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
            "safety": None if self.safety is None else self.safety.to_dict(),
            "reasoning": None if self.reasoning is None else self.reasoning.to_dict(),
        }
