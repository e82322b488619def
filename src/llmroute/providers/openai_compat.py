"""`OpenAICompatProvider`: POST /chat/completions (and /embeddings) on any
OpenAI-compatible server: OpenAI, vLLM, Ollama, llama.cpp server, Together, Groq ..."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from llmroute.errors import ProviderError
from llmroute.providers._http import (
    error_from_response,
    httpx_timeout,
    iter_sse_events,
    network_error,
)
from llmroute.providers.base import Timeouts
from llmroute.registry.schema import Provider

__all__ = ["OpenAICompatProvider"]

_CHAT = "/chat/completions"
_EMBEDDINGS = "/embeddings"


class OpenAICompatProvider:
    """A pooled `httpx.AsyncClient` for one provider of kind ``openai``.

    The API key is read once, here, from the environment variable the registry names;
    it only ever travels in the ``Authorization`` header.
    """

    def __init__(
        self,
        name: str,
        spec: Provider,
        *,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        env = os.environ if environ is None else environ
        headers = dict(spec.headers)
        key = env.get(spec.api_key_env) if spec.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.AsyncClient(
            base_url=spec.base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(spec.timeout_s, connect=spec.connect_timeout_s),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
            transport=transport,
        )

    async def complete(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> dict[str, Any]:
        return await self._post_json(_CHAT, {**body, "model": model}, timeouts)

    async def embed(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> dict[str, Any]:
        return await self._post_json(_EMBEDDINGS, {**body, "model": model}, timeouts)

    async def stream(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> AsyncIterator[bytes]:
        payload = {**body, "model": model}
        request = self._client.build_request(
            "POST", _CHAT, json=payload, timeout=httpx_timeout(timeouts)
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise network_error(self.name, exc) from None
        try:
            if response.is_error:
                await response.aread()
                raise error_from_response(self.name, response)
            try:
                async for event in iter_sse_events(response):
                    yield event
            except httpx.HTTPError as exc:
                raise network_error(self.name, exc) from None
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _post_json(
        self, path: str, payload: dict[str, Any], timeouts: Timeouts
    ) -> dict[str, Any]:
        try:
            response = await self._client.post(path, json=payload, timeout=httpx_timeout(timeouts))
        except httpx.HTTPError as exc:
            raise network_error(self.name, exc) from None
        if response.is_error:
            raise error_from_response(self.name, response)
        try:
            data = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            raise ProviderError(self.name, "upstream returned a body that is not JSON") from None
        if not isinstance(data, dict):
            raise ProviderError(self.name, "upstream returned JSON that is not an object")
        return data
