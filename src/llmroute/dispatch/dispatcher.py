"""`Dispatcher`: a planned request → the first model of its chain that answers.

Non-streaming requests may fall back at any point; streams only before their first
event (after that the client has bytes). Only failures that another try could fix fall
back (`ProviderError.retryable`); any other 4xx is the request's own fault and raises
`UpstreamRejected` at once.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from llmroute.dispatch.plan import Plan
from llmroute.errors import AllFallbacksFailed, ProviderError, UpstreamRejected
from llmroute.providers.base import ChatProvider, EmbeddingProvider, Timeouts
from llmroute.registry.schema import Registry, RoutePolicy

__all__ = ["Dispatcher", "Opened", "Served"]

log = logging.getLogger("llmroute.dispatch")


@dataclass(frozen=True, slots=True)
class Served:
    """A completed request: the pool model and deployment (provider) that answered, the
    ``chat.completion`` (its ``model`` the upstream name), and the failures before it."""

    model: str
    deployment: str
    data: dict[str, Any]
    attempts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Opened:
    """A stream that has produced its first event. `events` yields every event, the
    first included; a failure after that raises `ProviderError` from it."""

    model: str
    deployment: str
    events: AsyncIterator[bytes]
    attempts: tuple[str, ...] = ()


class Dispatcher:
    """Owns the providers it is given (`aclose` closes them)."""

    def __init__(self, registry: Registry, providers: Mapping[str, ChatProvider]) -> None:
        self._registry = registry
        self._providers = providers

    @property
    def registry(self) -> Registry:
        return self._registry

    async def complete(self, plan: Plan, body: dict[str, Any]) -> Served:
        attempts: list[str] = []
        for name in plan.chain:
            model = self._registry.models[name]
            deployment = model.targets()[0]
            provider = self._provider(deployment.provider)
            upstream = deployment.model or model.model
            try:
                data = await provider.complete(
                    upstream, body, timeouts=self._timeouts(plan.policy, name, deployment.provider)
                )
            except ProviderError as exc:
                if not exc.retryable:
                    exc.model = name
                    raise
                attempts.append(_failed(name, exc))
                continue
            data["model"] = upstream
            return Served(name, deployment.provider, data, tuple(attempts))
        raise AllFallbacksFailed(attempts)

    async def open_stream(self, plan: Plan, body: dict[str, Any]) -> Opened:
        attempts: list[str] = []
        for name in plan.chain:
            model = self._registry.models[name]
            deployment = model.targets()[0]
            provider = self._provider(deployment.provider)
            upstream = deployment.model or model.model
            events = provider.stream(
                upstream, body, timeouts=self._timeouts(plan.policy, name, deployment.provider)
            )
            try:
                first = await anext(aiter(events))
            except StopAsyncIteration:
                attempts.append(f"{name} (the stream ended before its first event)")
                continue
            except ProviderError as exc:
                if not exc.retryable:
                    exc.model = name
                    raise
                attempts.append(_failed(name, exc))
                continue
            return Opened(name, deployment.provider, _chain(first, events), tuple(attempts))
        raise AllFallbacksFailed(attempts)

    async def embed(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /embeddings`` on the embedding model `name` (a pool model of kind
        ``embedding``); its ``model`` is set back to `name`."""
        model = self._registry.models[name]
        deployment = model.targets()[0]
        provider = self._providers[deployment.provider]
        if not isinstance(provider, EmbeddingProvider):
            raise UpstreamRejected(deployment.provider, "this provider serves no embeddings")
        try:
            data = await provider.embed(
                deployment.model or model.model,
                body,
                timeouts=self._timeouts(None, name, deployment.provider),
            )
        except ProviderError as exc:
            exc.model = name
            raise
        data["model"] = name
        return data

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()

    def _provider(self, name: str) -> ChatProvider:
        return self._providers[name]

    def _timeouts(self, policy: RoutePolicy | None, model: str, provider: str) -> Timeouts:
        """Route policy over model over provider, per limit."""
        spec = self._registry.providers[provider]
        entry = self._registry.models[model]
        route = policy or RoutePolicy()
        return Timeouts(
            connect_s=route.connect_timeout_s or entry.connect_timeout_s or spec.connect_timeout_s,
            total_s=route.timeout_s or entry.timeout_s or spec.timeout_s,
            first_token_s=(
                route.first_token_timeout_s
                or entry.first_token_timeout_s
                or spec.first_token_timeout_s
            ),
        )


async def _chain(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        yield first
        async for event in rest:
            yield event
    finally:
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()


def _failed(name: str, exc: ProviderError) -> str:
    log.warning("model %s failed: %s", name, exc)
    return f"{name} via {exc.provider} ({exc.message})"
