"""`OpenAICompatProvider`: POST /chat/completions (and /embeddings, and /completions for
models that continue raw text) on any OpenAI-compatible server: OpenAI, vLLM, Ollama,
llama.cpp server, Together, Groq ..."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from llmroute.errors import ProviderError
from llmroute.providers._http import checked_event, error_in_answer
from llmroute.providers._transport import HttpTransport
from llmroute.providers.base import Timeouts, model_ids
from llmroute.providers.cache_markers import without_cache_markers
from llmroute.providers.google_auth import AdcTokens
from llmroute.providers.token_transport import TokenTransport
from llmroute.providers.tool_ids import openai_tool_ids
from llmroute.registry.schema import Provider, env_headers
from llmroute.sse import DONE, drain_after_end
from llmroute.untrusted_json import loads
from llmroute.verbatim_json import Verbatim

__all__ = ["OpenAICompatProvider"]

_CHAT = "/chat/completions"
_TEXT = "/completions"
_EMBEDDINGS = "/embeddings"
_RERANK = "/rerank"
_MODELS = "/models"


class OpenAICompatProvider:
    """One pooled HTTP session for a provider of kind ``openai``.

    The API key is read once, here, from the environment variable the registry names;
    it only ever travels in the ``Authorization`` header (`headers_env` values likewise
    in theirs).
    """

    def __init__(
        self, name: str, spec: Provider, *, environ: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        env = os.environ if environ is None else environ
        from_env = env_headers(spec.headers_env, env)
        headers = {**spec.headers, **from_env}
        key = env.get(spec.api_key_env) if spec.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        http = HttpTransport(name, spec.http_url, headers, secrets=[key, *from_env.values()])
        self._http: HttpTransport | TokenTransport = http
        if spec.auth == "google":  # Vertex AI's OpenAI-compatible endpoint
            self._http = TokenTransport(http, AdcTokens(name, token_env=False))
        self._send_markers = spec.cache_control == "send"
        self._developer_as_system = not takes_developer_role(spec.http_url)

    def _chat(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        sent = body if self._send_markers else without_cache_markers(body)
        if self._developer_as_system:
            sent = developer_as_system(sent)
        # OpenAI's 40-character cap on tool call ids, whoever serves it (a proxy in front
        # of OpenAI's models takes it too): ids another provider or a client wrote
        return {**openai_tool_ids(without_thinking(sent)), "model": model}

    async def complete(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> dict[str, Any]:
        data = await self._http.post_json(_CHAT, self._chat(model, body), timeouts)
        return self._answered(data, "message", dict)

    async def complete_text(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> dict[str, Any]:
        """The ``text_completion`` object for a (legacy) completions `body`, sent as it is
        (``suffix``, ``echo``, ``logprobs`` included)."""
        data = await self._http.post_json(_TEXT, {**body, "model": model}, timeouts)
        return self._answered(data, "text", str)

    async def embed(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> dict[str, Any]:
        # a large answer's vectors are passed on as they came (`verbatim_json`)
        sent = {**body, "model": model}
        data = self._answered(
            await self._http.post_json(_EMBEDDINGS, sent, timeouts, verbatim=("data",))
        )
        if not isinstance(data.get("data"), list | Verbatim):
            raise ProviderError(self.name, "upstream answered embeddings without their data")
        return data

    async def rerank(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> dict[str, Any]:
        """``POST {base_url}/rerank``: ``/v1/rerank`` of vLLM, Jina or Infinity, Cohere's
        ``/v2/rerank`` with its ``/v2`` base URL."""
        data = self._answered(
            await self._http.post_json(_RERANK, {**body, "model": model}, timeouts)
        )
        if not isinstance(data.get("results", data.get("data")), list):  # Voyage: data
            raise ProviderError(self.name, "upstream answered a rerank without its results")
        return data

    def _answered(
        self, data: dict[str, Any], part: str | None = None, kind: type = object
    ) -> dict[str, Any]:
        """`data`, unless it is an error the upstream sent with a 200 (`error_in_answer`):
        then that error is raised, to be retried or fallen back from like any other.
        With `part`, an answer whose choices do not each hold that member (of type
        `kind`: a chat choice's ``message`` object, a text choice's ``text``) is raised
        too, as a body that is not JSON is: served, a client would read ``choices`` as
        None (or no text) and the call would be charged for."""
        failed = error_in_answer(self.name, data)
        if failed is not None:
            raise failed
        if part is not None and _lacks(data.get("choices"), part, kind):
            raise ProviderError(
                self.name, f"upstream answered without choices (each with a {part})"
            )
        return data

    async def list_models(self, *, timeouts: Timeouts) -> list[str]:
        """The ids ``GET /models`` lists (what `llmroute registry probe` checks names
        against)."""
        return model_ids(self.name, await self._http.get_json(_MODELS, timeouts))

    def stream(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> AsyncIterator[bytes]:
        """The answer's events. An error event (`error_in_event`), or one whose data is
        not a JSON object (`checked_event`: a broken upstream's), is raised: as the first
        event it fails the call (retried, fallen back from); later, dispatch ends the
        stream with an error event of its own, as when the connection breaks. Events
        go on as `plain_event` makes them (one ``data:`` line each, whatever valid form
        the server wrote), so usage, caches and front ends read every server's alike.
        Events without data (comments such as OpenRouter's ``: OPENROUTER PROCESSING``
        keep-alives) are dropped: the stream has not begun until the model sends
        something, and until then a failure can still go to the fallback and the
        first-token limit runs; the gateway sends keep-alives of its own. A stream that
        ends after its first event with neither a finish reason nor ``[DONE]`` (a proxy
        that closed it cleanly midway) raises too: the answer was cut short, and the
        client is told so instead of taking it as whole. One that ends on its finish
        reason with no ``[DONE]`` (some OpenAI-compatible servers) gets one, as every
        provider's stream ends (the usage chunk added before it, the fronts closed at it).
        It ends at ``[DONE]``, what follows read for a moment and dropped
        (`drain_after_end`: the connection kept, unless the body is held open)."""
        return self._events(_CHAT, self._chat(model, body), timeouts)

    def stream_text(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> AsyncIterator[bytes]:
        """A completions `body`'s ``text_completion`` events, read as `stream` reads a
        chat stream's."""
        return self._events(_TEXT, {**body, "model": model}, timeouts)

    async def _events(
        self, path: str, payload: dict[str, Any], timeouts: Timeouts
    ) -> AsyncIterator[bytes]:
        started = False
        finishes = _Finishes(payload.get("n"))
        async with self._http.events(path, payload, timeouts) as events:
            async for raw in events:
                # an error or unreadable event raises: before the first, another model
                # can answer
                event = checked_event(self.name, raw)
                if event is None:
                    continue  # a keep-alive, an id alone: nothing of the answer
                started = True
                finishes.see(event)
                yield event
                if event.startswith(b"data: [DONE]"):
                    await drain_after_end(events)  # nothing after it is the answer's
                    return
        if started and not finishes.done:
            raise ProviderError(self.name, f"the stream ended before {finishes.missing} or [DONE]")
        if started:  # a server that ends on its finish reasons: ours says it
            yield DONE

    async def aclose(self) -> None:
        await self._http.aclose()


# OpenAI's own API, and Azure OpenAI's: the servers that take the "developer" role
_DEVELOPER_HOSTS = ("api.openai.com",)
_DEVELOPER_DOMAINS = (".openai.azure.com", ".cognitiveservices.azure.com")


def takes_developer_role(base_url: str) -> bool:
    """Whether the server at `base_url` takes OpenAI's ``developer`` messages: OpenAI's
    API and Azure OpenAI do. Most other OpenAI-compatible servers refuse the role
    (DeepSeek: "unknown variant `developer`", DeepInfra a 422, servers checking roles
    against system/user/assistant/tool) or hand it to a chat template that does not
    know it, so an app's instructions, which OpenAI's models take as ``developer``,
    failed or went missing on whichever model routing chose."""
    host = (urlsplit(base_url).hostname or "").lower()
    return host in _DEVELOPER_HOSTS or host.endswith(_DEVELOPER_DOMAINS)


def developer_as_system(body: dict[str, Any]) -> dict[str, Any]:
    """`body` with its ``developer`` messages sent as ``system`` ones, which every chat
    server takes (OpenAI itself reads the two alike); `body` itself when it has none.
    Never mutates `body`."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return body
    for message in messages:  # a plain loop: every call to such a server runs it
        if isinstance(message, dict) and message.get("role") == "developer":
            break
    else:
        return body
    plain = [{**m, "role": "system"} if _developer(m) else m for m in messages]
    return {**body, "messages": plain}


def _developer(message: Any) -> bool:
    return isinstance(message, dict) and message.get("role") == "developer"


_THINKING = ("thinking_blocks", "reasoning_content")


def without_thinking(body: dict[str, Any]) -> dict[str, Any]:
    """`body` without the assistant messages' ``thinking_blocks`` (Anthropic's, signed
    for Anthropic alone; OpenAI refuses a field it does not know) and
    ``reasoning_content`` (DeepSeek answers 400 to its own reasoning sent back); `body`
    itself when no message has them. Never mutates `body`."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not _thought(messages):
        return body
    plain = [
        {k: v for k, v in m.items() if k not in _THINKING} if isinstance(m, dict) else m
        for m in messages
    ]
    return {**body, "messages": plain}


def _thought(messages: list[Any]) -> bool:
    for message in messages:  # a loop: the common case (none has them) costs the least
        if isinstance(message, dict) and (
            "thinking_blocks" in message or "reasoning_content" in message
        ):
            return True
    return False


def _lacks(choices: Any, part: str, kind: type) -> bool:
    """Whether `choices` are not a non-empty list of objects each with a `part` of type
    `kind`: no answer, whatever else the JSON holds."""
    if not isinstance(choices, list) or not choices:
        return True
    for choice in choices:
        if not isinstance(choice, dict) or not isinstance(choice.get(part), kind):
            return True
    return False


class _Finishes:
    """Which of a stream's `n` choices (the request's ``n``, else 1) said their finish
    reason: a stream with no ``[DONE]`` is whole only once every one of them did (one
    cut after choice 0 finished, choice 1 still streaming, is cut short)."""

    __slots__ = ("_finished", "_n")

    def __init__(self, n: Any) -> None:
        self._n = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
        self._finished: set[int] = set()

    def see(self, event: bytes) -> None:
        if self.done or not _finishes(event) or not event.startswith(b"data: {"):
            return
        try:  # parsed again, only for an event with a finish reason: one per choice
            chunk = loads(event[6:])
        except ValueError:
            return
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict) and isinstance(choice.get("finish_reason"), str):
                index = choice.get("index", 0)
                if isinstance(index, int) and 0 <= index < self._n:
                    self._finished.add(index)

    @property
    def done(self) -> bool:
        return len(self._finished) >= self._n

    @property
    def missing(self) -> str:
        """What the stream ended before, as its error says it."""
        if self._n == 1:
            return "its finish reason"
        return f"the finish reason of each of its {self._n} choices"


def _finishes(event: bytes) -> bool:
    """Whether an event ends the answer: ``[DONE]``, or a chunk with a finish reason."""
    if b"[DONE]" in event:
        return True
    if b'"finish_reason"' not in event:
        return False
    return event.count(b'"finish_reason"') > event.count(b'"finish_reason":null') + event.count(
        b'"finish_reason": null'
    )
