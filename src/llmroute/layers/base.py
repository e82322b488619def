"""The decision-layer contract and the per-request context layers share.

A layer is any object with a `name`, an `always_runs` flag and an `evaluate` method
(a Protocol, so test fakes need no inheritance). Layers run in the order the pipeline
gives; the first that decides wins, and later layers are skipped unless they declare
`always_runs` (a safety layer does: it may override any earlier verdict).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np

from llmroute.decision import Outcome, ReasoningOutcome, RouteScore, SafetyOutcome, Verdict
from llmroute.encoders.base import Embeddings
from llmroute.request import RouteRequest

__all__ = ["DecisionContext", "DecisionLayer", "LayerResult"]

_NO_DETAIL: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class LayerResult:
    """What a layer returns. A verdict means the layer decided."""

    verdict: Verdict | None = None
    candidates: tuple[RouteScore, ...] = ()
    detail: Mapping[str, Any] = field(default_factory=lambda: _NO_DETAIL)
    annotated: bool = False

    @property
    def outcome(self) -> Outcome:
        if self.verdict is not None:
            return Outcome.DECIDED
        return Outcome.ANNOTATED if self.annotated or self.candidates else Outcome.PASSED


class DecisionContext:
    """Per-request state: the request, the shared embedding, and earlier layers' results.

    The embedding is computed on first use and then shared, so the encoder runs at most
    once per request whichever layers need it; a batch caller can pass it in ready-made.
    """

    __slots__ = (
        "_embed",
        "_embedding",
        "encode_us",
        "reasoning",
        "request",
        "results",
        "safety",
        "verdict",
    )

    def __init__(
        self,
        request: RouteRequest,
        embed: Callable[[Sequence[str]], Embeddings],
        embedding: Embeddings | None = None,
    ) -> None:
        self.request = request
        self._embed = embed
        self._embedding = embedding
        self.encode_us = 0.0
        self.results: dict[str, LayerResult] = {}
        self.verdict: Verdict | None = None
        self.safety: SafetyOutcome | None = None
        self.reasoning: ReasoningOutcome | None = None

    @property
    def embedded(self) -> Embeddings | None:
        """The embedding if a layer has computed it, without computing it."""
        return self._embedding

    @property
    def embedding(self) -> Embeddings:
        """The request text's unit-norm embedding, shape (dim,)."""
        if self._embedding is None:
            start = time.perf_counter_ns()
            self._embedding = np.ascontiguousarray(self._embed((self.request.text,))[0])
            self.encode_us += (time.perf_counter_ns() - start) / 1000.0
        return self._embedding

    def encode(self, texts: Sequence[str]) -> Embeddings:
        """Embed other texts (a long request's windows), charged to the encoder's time."""
        start = time.perf_counter_ns()
        vectors = self._embed(texts)
        self.encode_us += (time.perf_counter_ns() - start) / 1000.0
        return vectors


class DecisionLayer(Protocol):
    """One step of the decision pipeline."""

    @property
    def name(self) -> str: ...

    @property
    def always_runs(self) -> bool: ...

    def evaluate(self, ctx: DecisionContext) -> LayerResult: ...
