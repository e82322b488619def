"""Build one client per provider a registry names."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from llmroute.providers.anthropic import AnthropicProvider
from llmroute.providers.base import ChatProvider
from llmroute.providers.bedrock import BedrockProvider, unnamed_credentials
from llmroute.providers.echo import EchoProvider
from llmroute.providers.openai_compat import OpenAICompatProvider
from llmroute.registry.schema import Provider, Registry, check_credential_text

__all__ = ["build_http", "build_providers"]


def build_providers(
    registry: Registry,
    environ: Mapping[str, str] | None = None,
    *,
    base_dir: Path | None = None,
) -> dict[str, ChatProvider]:
    """A client for every provider: OpenAI-compatible, Anthropic, Claude on Bedrock or
    Vertex AI, in-process llama.cpp or echo, by its `kind`. llama.cpp providers load their
    GGUF files here (blocking; paths are relative to `base_dir`, the registry file's
    directory, default the working one)."""
    return {
        name: _build(name, spec, registry, environ, base_dir)
        for name, spec in registry.providers.items()
    }


def _build(
    name: str,
    spec: Provider,
    registry: Registry,
    environ: Mapping[str, str] | None,
    base_dir: Path | None,
) -> ChatProvider:
    if spec.kind == "llamacpp":
        from llmroute.providers.llamacpp import build_llamacpp

        return build_llamacpp(name, spec, registry, base_dir)
    if spec.kind == "echo":
        return EchoProvider(name, spec)
    return build_http(name, spec, environ)


def build_http(name: str, spec: Provider, environ: Mapping[str, str] | None) -> ChatProvider:
    """The client of a provider reached over HTTP (every kind but llamacpp and echo)."""
    env = os.environ if environ is None else environ
    unnamed = unnamed_credentials(spec, env) if spec.kind == "bedrock" else []
    check_credential_text(f"providers.{name}", spec.api_key_env, spec.headers_env, env, unnamed)
    if spec.kind == "anthropic":
        return AnthropicProvider(name, spec, environ=environ)
    if spec.kind == "bedrock":
        return BedrockProvider(name, spec, environ=environ)
    if spec.kind == "vertex":
        from llmroute.providers.vertex import VertexProvider

        return VertexProvider(name, spec, environ=environ)
    return OpenAICompatProvider(name, spec, environ=environ)
