"""Send a planned request to its model, falling back down the route's chain on failure.

Non-streaming requests may fall back at any point; streams only before their first byte
(after that the status line has gone out). Only failures that another model could fix
fall back: no response, 5xx, 408, 409 and 429. Any other 4xx is the request's own fault
(a bad parameter, say) and goes back to the client with its status, unretried.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from llmroute.errors import ProviderError
from llmroute.providers.base import ChatProvider
from llmroute.registry.schema import Registry
from llmroute.server.errors import GatewayError
from llmroute.server.resolve import Plan

__all__ = ["Dispatcher", "Opened", "relay"]

log = logging.getLogger("llmroute.server")


@dataclass(frozen=True, slots=True)
class Opened:
    """A stream that has produced its first chunk, and the pool model serving it."""

    model: str
    first: bytes
    rest: AsyncIterator[bytes]


class Dispatcher:
    def __init__(self, registry: Registry, providers: Mapping[str, ChatProvider]) -> None:
        self._registry = registry
        self._providers = providers

    async def complete(
        self, plan: Plan, body: dict[str, Any], headers: Mapping[str, str]
    ) -> tuple[str, dict[str, Any]]:
        """The served pool model and the upstream's JSON, its ``model`` set to the
        upstream name of the model that answered."""
        attempts: list[str] = []
        for name in plan.chain:
            provider, upstream = self._target(name, attempts, headers)
            if provider is None:
                continue
            try:
                data = await provider.complete(upstream, body, timeout_s=plan.timeout_s)
            except ProviderError as exc:
                _raise_if_client_error(name, exc, headers)
                attempts.append(self._failed(name, exc))
                continue
            data["model"] = upstream
            return name, data
        raise _all_failed(attempts, headers)

    async def open_stream(
        self, plan: Plan, body: dict[str, Any], headers: Mapping[str, str]
    ) -> Opened:
        attempts: list[str] = []
        for name in plan.chain:
            provider, upstream = self._target(name, attempts, headers)
            if provider is None:
                continue
            chunks = provider.stream(upstream, body, timeout_s=plan.timeout_s)
            try:
                first = await anext(chunks, b"")
            except ProviderError as exc:
                _raise_if_client_error(name, exc, headers)
                attempts.append(self._failed(name, exc))
                continue
            return Opened(name, first, chunks)
        raise _all_failed(attempts, headers)

    def _target(
        self, name: str, attempts: list[str], headers: Mapping[str, str]
    ) -> tuple[ChatProvider | None, str]:
        model = self._registry.models[name]
        provider = self._providers.get(model.provider)
        if provider is not None:
            return provider, model.model
        kind = self._registry.providers[model.provider].kind
        if not attempts:
            raise GatewayError(
                501,
                f"the {kind} provider is not implemented yet (model {name!r}, "
                f"provider {model.provider!r})",
                code="provider_not_implemented",
                headers=headers,
            )
        attempts.append(f"{name} (the {kind} provider is not implemented yet)")
        return None, model.model

    @staticmethod
    def _failed(name: str, exc: ProviderError) -> str:
        log.warning("model %s failed: %s", name, exc)
        return f"{name} ({exc})"


async def relay(opened: Opened) -> AsyncIterator[bytes]:
    """The stream's bytes; an upstream failure mid-stream ends it with an error event."""
    try:
        if opened.first:
            yield opened.first
        async for chunk in opened.rest:
            yield chunk
    except ProviderError as exc:
        log.warning("stream from %s broke off: %s", opened.model, exc)
        yield b'data: {"error": {"message": "the upstream stream broke off", '
        yield b'"type": "server_error", "param": null, "code": "upstream_error"}}\n\n'
        yield b"data: [DONE]\n\n"
    finally:
        if isinstance(opened.rest, AsyncGenerator):
            await opened.rest.aclose()


_RETRYABLE_4XX = frozenset({408, 409, 429})


def _raise_if_client_error(name: str, exc: ProviderError, headers: Mapping[str, str]) -> None:
    status = exc.status
    if status is not None and 400 <= status < 500 and status not in _RETRYABLE_4XX:
        raise GatewayError(
            status,
            f"model {name!r} rejected the request: {exc}",
            code="upstream_rejected",
            headers=headers,
        )


def _all_failed(attempts: list[str], headers: Mapping[str, str]) -> GatewayError:
    names = ", ".join(attempts)
    return GatewayError(
        502,
        f"every model failed: {names}",
        code="upstream_error",
        headers=headers,
        attempts=attempts,
    )
