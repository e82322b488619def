"""Build one client per provider a registry names."""

from __future__ import annotations

from collections.abc import Mapping

from llmroute.providers.base import ChatProvider
from llmroute.providers.openai_compat import OpenAICompatProvider
from llmroute.registry.schema import Registry

__all__ = ["build_providers"]


def build_providers(
    registry: Registry, environ: Mapping[str, str] | None = None
) -> dict[str, ChatProvider]:
    """Clients for the providers of kind ``openai``; other kinds are not implemented yet,
    so they are left out (the gateway answers 501 for models served by them)."""
    return {
        name: OpenAICompatProvider(name, spec, environ=environ)
        for name, spec in registry.providers.items()
        if spec.kind == "openai"
    }
