"""`VertexProvider`: Claude on Google Cloud's Vertex AI, behind the OpenAI
chat-completions interface, as `AnthropicProvider` serves it from Anthropic's API.

Vertex takes Anthropic's Messages body with two differences: the model is named in the
URL (``.../publishers/anthropic/models/{model}:rawPredict``, ``:streamRawPredict`` for
a stream), not in the body, and ``anthropic_version`` goes in the body. Its answers and
stream events are Anthropic's own, so the translation both ways is `AnthropicProvider`'s.
The token is a Google OAuth2 access token (`llmroute.providers.google_auth`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

from llmroute.dispatch.usage import usage_wanted
from llmroute.errors import ProviderError, ProviderMisconfigured
from llmroute.providers._anthropic_convert import to_chat_completion, to_messages_request
from llmroute.providers._transport import HttpTransport
from llmroute.providers.anthropic import StreamTranslator, sent_once_more, streamed_once_more
from llmroute.providers.base import Timeouts
from llmroute.providers.google_auth import AdcTokens, StaticToken, TokenSource
from llmroute.registry.schema import Provider, env_headers
from llmroute.sse import DONE, drain_after_end

__all__ = ["VERTEX_ANTHROPIC_VERSION", "VertexProvider"]

VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"
# What an operator checks when Vertex refuses the gateway (its messages for a 403 are
# not shown: they can name the account).
_REFUSED_HINT = {
    403: " (the account needs the Vertex AI User role, roles/aiplatform.user, in the "
    "project, and the model must be enabled in its Model Garden)",
    404: " (check the model id with its @version, that the region serves it, and that "
    "the model is enabled in the project's Model Garden)",
}
# ... and when its 403 says the project's billing is disabled (reason BILLING_DISABLED)
_BILLING_HINT = " (link the Google Cloud project to an active billing account)"


class VertexProvider:
    """One pooled HTTP session for a provider of kind ``vertex``.

    The token comes from `api_key_env` when the registry names one (a sidecar keeps it
    fresh), else from Application Default Credentials; a 401 with the latter renews
    the token once and sends the request again.
    """

    def __init__(
        self,
        name: str,
        spec: Provider,
        *,
        environ: Mapping[str, str] | None = None,
        tokens: TokenSource | None = None,
    ) -> None:
        self.name = name
        env = os.environ if environ is None else environ
        from_env = env_headers(spec.headers_env, env)
        headers = {**spec.headers, **from_env}
        token = env.get(spec.api_key_env) if spec.api_key_env else None
        secrets = [token, *from_env.values()]
        self._http = HttpTransport(name, spec.http_url.rstrip("/"), headers, secrets=secrets)
        if tokens is None and spec.api_key_env:
            tokens = StaticToken(token or None)
        self._tokens = tokens or AdcTokens(name)

    async def complete(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> dict[str, Any]:
        """The ``chat.completion`` for `body` (as `AnthropicProvider.complete`)."""
        path = _path(model, "rawPredict")
        payload = _payload(self.name, model, body)
        data = await sent_once_more(payload, lambda sent: self._post(path, sent, timeouts))
        if not isinstance(data.get("content"), list):
            raise ProviderError(self.name, "upstream answered without a content list")
        return to_chat_completion(data)

    async def stream(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> AsyncIterator[bytes]:
        path = _path(model, "streamRawPredict")
        payload = {**_payload(self.name, model, body), "stream": True}
        translator = StreamTranslator(self.name, include_usage=usage_wanted(body))
        events = streamed_once_more(
            payload, lambda sent: self._events(path, sent, translator, timeouts)
        )
        async with contextlib.aclosing(events):  # closed with this one, not when collected
            async for chunk in events:
                yield chunk
                if chunk == DONE:  # message_stop's: nothing after it is the answer's
                    await drain_after_end(events)
                    return
        if not translator.done:
            raise ProviderError(self.name, "upstream stream ended before message_stop")

    async def authenticate(self, *, timeouts: Timeouts) -> None:
        """Gets a token as a request would (what `llmroute registry probe` checks, since
        Vertex lists no publisher models to ask for)."""
        await self._tokens.headers(timeouts.total_s)

    async def _post(self, path: str, payload: dict[str, Any], timeouts: Timeouts) -> dict[str, Any]:
        headers = await self._tokens.headers(timeouts.total_s)
        try:
            return await self._http.post_json(path, payload, timeouts, headers=headers)
        except ProviderMisconfigured as exc:
            renewed = await self._renewed(exc, headers, timeouts)
        try:
            return await self._http.post_json(path, payload, timeouts, headers=renewed)
        except ProviderMisconfigured as exc:
            raise _explained(exc) from None

    async def _events(
        self,
        path: str,
        payload: dict[str, Any],
        translator: StreamTranslator,
        timeouts: Timeouts,
    ) -> AsyncGenerator[bytes, None]:
        headers = await self._tokens.headers(timeouts.total_s)
        sent = False
        try:
            async for chunk in self._translated(path, payload, translator, timeouts, headers):
                sent = True
                yield chunk
            return
        except ProviderMisconfigured as exc:  # refused before its first event
            if sent:
                raise
            renewed = await self._renewed(exc, headers, timeouts)
        try:
            async for chunk in self._translated(path, payload, translator, timeouts, renewed):
                yield chunk
        except ProviderMisconfigured as exc:
            raise _explained(exc) from None

    async def _renewed(
        self, refused: ProviderMisconfigured, headers: Mapping[str, str], timeouts: Timeouts
    ) -> dict[str, str]:
        """The headers to send once more after `refused`: a renewed token for a 401
        (expired or revoked early), when the token source has one; else `refused`,
        raised."""
        if refused.status == 401:
            renewed = await self._tokens.renewed(headers, timeouts.total_s)
            if renewed is not None:
                return renewed
        raise _explained(refused) from None

    async def _translated(
        self,
        path: str,
        payload: dict[str, Any],
        translator: StreamTranslator,
        timeouts: Timeouts,
        headers: Mapping[str, str],
    ) -> AsyncIterator[bytes]:
        async with self._http.events(path, payload, timeouts, headers=headers) as events:
            async for event in events:
                for chunk in translator.feed(event):
                    yield chunk

    async def aclose(self) -> None:
        await self._http.aclose()


def _path(model: str, method: str) -> str:
    """The model's path under the provider's ``.../projects/P/locations/R`` base URL
    (the model id quoted: it is a path segment)."""
    return f"/publishers/anthropic/models/{quote(model, safe='@')}:{method}"


def _payload(provider: str, model: str, body: dict[str, Any]) -> dict[str, Any]:
    """Anthropic's Messages body as Vertex takes it: no ``model``, its API version."""
    payload = to_messages_request(provider, model, body, first_party=False)
    del payload["model"]
    return {"anthropic_version": VERTEX_ANTHROPIC_VERSION, **payload}


def _explained(exc: ProviderMisconfigured) -> ProviderMisconfigured:
    """`exc` with what to check in Google Cloud when Vertex refused the gateway."""
    billing = exc.code == "BILLING_DISABLED"
    hint = _BILLING_HINT if billing else _REFUSED_HINT.get(exc.status or 0)
    if hint is None:
        return exc
    return ProviderMisconfigured(exc.provider, (*exc.parts, hint), status=exc.status, code=exc.code)
