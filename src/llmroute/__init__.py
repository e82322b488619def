"""llmroute: a fast, explainable semantic router for pools of LLMs.

>>> from llmroute import Router
>>> router = Router.from_yaml("examples/registry.yaml")  # doctest: +SKIP
>>> router.decide("what is 17 * 23?").route  # doctest: +SKIP
'math'
"""

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
