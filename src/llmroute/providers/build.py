"""Build one client per provider a registry names."""

from __future__ import annotations

from collections.abc import Mapping

from llmroute.providers.anthropic import AnthropicProvider
from llmroute.providers.base import ChatProvider
from llmroute.providers.openai_compat import OpenAICompatProvider
from llmroute.registry.schema import Provider, Registry

__all__ = ["build_providers"]


def build_providers(
    registry: Registry, environ: Mapping[str, str] | None = None
) -> dict[str, ChatProvider]:
    """A client for every provider: OpenAI-compatible or Anthropic, by its `kind`."""
    return {name: _build(name, spec, environ) for name, spec in registry.providers.items()}


def _build(name: str, spec: Provider, environ: Mapping[str, str] | None) -> ChatProvider:
    if spec.kind == "anthropic":
        return AnthropicProvider(name, spec, environ=environ)
    return OpenAICompatProvider(name, spec, environ=environ)
