"""An `HttpTransport` whose every request carries a token source's headers (an OAuth2
access token that is renewed while the session lives), sent once more with a renewed
token when the upstream answers 401: for OpenAI-compatible endpoints behind Google's
credentials (``auth: google``: Gemini and Model Garden models on Vertex AI)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from typing import Any

from llmroute.errors import ProviderMisconfigured
from llmroute.providers._transport import HttpTransport
from llmroute.providers.base import Timeouts
from llmroute.providers.google_auth import TokenSource

__all__ = ["TokenTransport"]


class TokenTransport:
    """`http`'s requests with `tokens`' headers; what `http` raises, raised."""

    def __init__(self, http: HttpTransport, tokens: TokenSource) -> None:
        self._http = http
        self._tokens = tokens

    async def probe(self, timeouts: Timeouts) -> None:
        """Gets a token as a request would."""
        await self._tokens.headers(timeouts.total_s)

    async def post_json(
        self,
        path: str,
        payload: dict[str, Any],
        timeouts: Timeouts,
        *,
        verbatim: Collection[str] = (),
    ) -> dict[str, Any]:
        headers = await self._tokens.headers(timeouts.total_s)
        post = self._http.post_json
        try:
            return await post(path, payload, timeouts, headers=headers, verbatim=verbatim)
        except ProviderMisconfigured as exc:
            renewed = await self._renewed(exc, headers, timeouts)
        return await post(path, payload, timeouts, headers=renewed, verbatim=verbatim)

    async def get_json(self, path: str, timeouts: Timeouts) -> dict[str, Any] | list[Any]:
        headers = await self._tokens.headers(timeouts.total_s)
        try:
            return await self._http.get_json(path, timeouts, headers=headers)
        except ProviderMisconfigured as exc:
            renewed = await self._renewed(exc, headers, timeouts)
        return await self._http.get_json(path, timeouts, headers=renewed)

    @asynccontextmanager
    async def events(
        self, path: str, payload: dict[str, Any], timeouts: Timeouts
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        headers = await self._tokens.headers(timeouts.total_s)
        opened = False
        try:
            async with self._http.events(path, payload, timeouts, headers=headers) as events:
                opened = True
                yield events
            return
        except ProviderMisconfigured as exc:  # refused before its first event
            if opened:
                raise
            renewed = await self._renewed(exc, headers, timeouts)
        async with self._http.events(path, payload, timeouts, headers=renewed) as events:
            yield events

    async def _renewed(
        self, refused: ProviderMisconfigured, headers: Mapping[str, str], timeouts: Timeouts
    ) -> Mapping[str, str]:
        """The headers to send once more after `refused`: a renewed token for a 401
        (expired or revoked early), when the source has one; else `refused`, raised."""
        if refused.status == 401:
            renewed = await self._tokens.renewed(headers, timeouts.total_s)
            if renewed is not None:
                return renewed
        raise refused

    async def aclose(self) -> None:
        await self._http.aclose()
