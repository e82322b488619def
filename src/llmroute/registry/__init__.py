"""The route registry: YAML schema, loading with file/line errors, versions, summaries.

>>> loaded = load_registry("examples/registry.yaml")  # doctest: +SKIP
>>> loaded.version, [route.name for route in loaded.registry.routes]  # doctest: +SKIP
"""

from llmroute.registry._errors import ConfigErrors
from llmroute.registry.loader import (
    LoadedRegistry,
    dump_registry,
    load_registry,
    parse_registry,
    version_of,
)
from llmroute.registry.schema import (
    BUILTIN_ENCODERS,
    BuiltinEncoderSpec,
    Default,
    EncoderSpec,
    IntentSettings,
    Model,
    OpenAIEncoderSpec,
    Price,
    Provider,
    Reasoning,
    Registry,
    Route,
    RoutePolicy,
    Rule,
    RuleWhen,
)
from llmroute.registry.summary import describe_when, summarize

__all__ = [
    "BUILTIN_ENCODERS",
    "BuiltinEncoderSpec",
    "ConfigErrors",
    "Default",
    "EncoderSpec",
    "IntentSettings",
    "LoadedRegistry",
    "Model",
    "OpenAIEncoderSpec",
    "Price",
    "Provider",
    "Reasoning",
    "Registry",
    "Route",
    "RoutePolicy",
    "Rule",
    "RuleWhen",
    "describe_when",
    "dump_registry",
    "load_registry",
    "parse_registry",
    "summarize",
    "version_of",
]
