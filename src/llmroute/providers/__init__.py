"""Clients for the model providers a registry names: OpenAI-compatible and Anthropic."""

from __future__ import annotations

from llmroute.providers.anthropic import AnthropicProvider
from llmroute.providers.base import ChatProvider
from llmroute.providers.build import build_providers
from llmroute.providers.openai_compat import OpenAICompatProvider

__all__ = ["AnthropicProvider", "ChatProvider", "OpenAICompatProvider", "build_providers"]
