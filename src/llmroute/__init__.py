"""llmroute: a fast, explainable semantic router for pools of LLMs.

>>> from llmroute import Router
>>> router = Router.from_yaml("examples/registry.yaml")  # doctest: +SKIP
>>> router.decide("what is 17 * 23?").route  # doctest: +SKIP
'math'

The names below are imported on first use (PEP 562), not with the package: every
``llmroute.*`` import runs this file first, and ``Router`` alone pulls in numpy,
pydantic and the registry schema (about 0.6 s on 2 CPUs), which ``llmroute --help``
and most commands' own modules do not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmroute.decide import Router
    from llmroute.decision import Decision, LayerSignal, Outcome, RouteScore, Verdict
    from llmroute.encoders.base import Encoder
    from llmroute.errors import (
        ConfigError,
        DataError,
        EncoderError,
        EncoderUnavailable,
        LlmrouteError,
        RoutingError,
        UnencodableText,
    )
    from llmroute.layers.base import DecisionContext, DecisionLayer, LayerResult
    from llmroute.registry import LoadedRegistry, load_registry
    from llmroute.request import RouteRequest

__version__ = "0.1.0"

_WHERE = {
    "ConfigError": "llmroute.errors",
    "DataError": "llmroute.errors",
    "Decision": "llmroute.decision",
    "DecisionContext": "llmroute.layers.base",
    "DecisionLayer": "llmroute.layers.base",
    "Encoder": "llmroute.encoders.base",
    "EncoderError": "llmroute.errors",
    "EncoderUnavailable": "llmroute.errors",
    "LayerResult": "llmroute.layers.base",
    "LayerSignal": "llmroute.decision",
    "LlmrouteError": "llmroute.errors",
    "LoadedRegistry": "llmroute.registry",
    "Outcome": "llmroute.decision",
    "RouteRequest": "llmroute.request",
    "RouteScore": "llmroute.decision",
    "Router": "llmroute.decide",
    "RoutingError": "llmroute.errors",
    "UnencodableText": "llmroute.errors",
    "Verdict": "llmroute.decision",
    "load_registry": "llmroute.registry",
}

__all__ = [
    "ConfigError",
    "DataError",
    "Decision",
    "DecisionContext",
    "DecisionLayer",
    "Encoder",
    "EncoderError",
    "EncoderUnavailable",
    "LayerResult",
    "LayerSignal",
    "LlmrouteError",
    "LoadedRegistry",
    "Outcome",
    "RouteRequest",
    "RouteScore",
    "Router",
    "RoutingError",
    "UnencodableText",
    "Verdict",
    "__version__",
    "load_registry",
]


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use and kept here; else a
    submodule (``llmroute.errors`` after ``import llmroute``, as when this file imported
    them with the names)."""
    module = _WHERE.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
    if not name.startswith("__"):  # not a tool's probe (``__wrapped__``)
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":  # the submodule's own import failed
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_NOT_PUBLIC = frozenset({"annotations", "importlib", "TYPE_CHECKING", "Any"})


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__} - _NOT_PUBLIC)
