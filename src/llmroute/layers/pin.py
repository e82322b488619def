"""`PinLayer`: the verdict for a request whose ``model`` names a route or a pool model.

A pinned request skips routing, not the guards: running it through the pipeline with
this layer first lets safety and the reasoning gate see it like any other request.
"""

from __future__ import annotations

from llmroute.decision import Verdict
from llmroute.layers.base import DecisionContext, LayerResult

__all__ = ["PIN_LAYER", "PinLayer"]

PIN_LAYER = "pinned"


class PinLayer:
    name = PIN_LAYER
    always_runs = False

    def __init__(self, route: str, model: str, requested: str, alias_of: str | None = None) -> None:
        reason = f"pinned by the request's model {requested!r}"
        if alias_of is not None:
            reason += f" (an alias of {alias_of!r})"
        self._result = LayerResult(Verdict(route, model, 1.0, reason))

    def evaluate(self, ctx: DecisionContext) -> LayerResult:
        return self._result
