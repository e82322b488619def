"""Clients for the model providers a registry names (OpenAI-compatible for now)."""

from __future__ import annotations

from llmroute.providers.base import ChatProvider
from llmroute.providers.build import build_providers
from llmroute.providers.openai_compat import OpenAICompatProvider

__all__ = ["ChatProvider", "OpenAICompatProvider", "build_providers"]
