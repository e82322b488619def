"""`ChatProvider`: what the gateway needs from an upstream chat-completions client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

__all__ = ["ChatProvider"]


class ChatProvider(Protocol):
    """One pooled client per provider. Failures raise `llmroute.errors.ProviderError`.

    `model` is the provider's own model name; it replaces the body's ``model``, and the
    rest of the body goes upstream untouched. `timeout_s` overrides the provider's timeout
    for one call (a route's ``policy.timeout_s``).
    """

    name: str

    async def complete(
        self, model: str, body: dict[str, Any], *, timeout_s: float | None = None
    ) -> dict[str, Any]: ...

    def stream(
        self, model: str, body: dict[str, Any], *, timeout_s: float | None = None
    ) -> AsyncIterator[bytes]:
        """The upstream's server-sent events, as raw bytes. An error status raises before
        the first chunk is yielded."""
        ...

    async def aclose(self) -> None: ...
