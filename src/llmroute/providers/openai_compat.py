"""`OpenAICompatProvider`: POST /chat/completions on any OpenAI-compatible server."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from llmroute.errors import ProviderError
from llmroute.registry.schema import Provider

__all__ = ["OpenAICompatProvider"]

_PATH = "/chat/completions"


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
        self._timeout = httpx.Timeout(spec.timeout_s)
        self._client = httpx.AsyncClient(
            base_url=spec.base_url.rstrip("/"),
            headers=headers,
            timeout=self._timeout,
            transport=transport,
        )

    async def complete(
        self, model: str, body: dict[str, Any], *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        payload = {**body, "model": model}
        try:
            response = await self._client.post(
                _PATH, json=payload, timeout=self._timeout_for(timeout_s)
            )
        except httpx.HTTPError as exc:
            raise self._network_error(exc) from None
        self._check(response)
        try:
            data = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ProviderError(self.name, "upstream returned a body that is not JSON") from None
        if not isinstance(data, dict):
            raise ProviderError(self.name, "upstream returned JSON that is not an object")
        return data

    async def stream(
        self, model: str, body: dict[str, Any], *, timeout_s: float | None = None
    ) -> AsyncIterator[bytes]:
        payload = {**body, "model": model}
        request = self._client.build_request(
            "POST", _PATH, json=payload, timeout=self._timeout_for(timeout_s)
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._network_error(exc) from None
        try:
            if response.is_error:
                await response.aread()
                self._check(response)
            try:
                async for chunk in response.aiter_bytes():
                    yield chunk
            except httpx.HTTPError as exc:
                raise self._network_error(exc) from None
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def _timeout_for(self, timeout_s: float | None) -> httpx.Timeout:
        return self._timeout if timeout_s is None else httpx.Timeout(timeout_s)

    def _check(self, response: httpx.Response) -> None:
        if response.is_error:
            raise ProviderError(
                self.name,
                f"upstream returned HTTP {response.status_code}",
                status=response.status_code,
            )

    def _network_error(self, exc: httpx.HTTPError) -> ProviderError:
        # The class name only: httpx messages can carry the URL, and a URL can carry
        # credentials.
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "request failed"
        return ProviderError(self.name, f"upstream {kind} ({type(exc).__name__})")
