"""`AnthropicProvider`: the Messages API (POST /v1/messages) behind the OpenAI
chat-completions interface that dispatch and the gateway speak."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from llmroute.dispatch.usage import usage_wanted
from llmroute.errors import ProviderError, UpstreamRejected
from llmroute.providers._anthropic_convert import (
    finish_reason,
    to_chat_completion,
    to_messages_request,
    tool_call,
    usage_of,
    without_thinking,
    without_thinking_blocks,
)
from llmroute.providers._http import error_from_response
from llmroute.providers._transport import HttpTransport
from llmroute.providers.base import Timeouts, model_ids
from llmroute.registry.schema import Provider, env_headers
from llmroute.sse import DONE, drain_after_end, event_of, parsed
from llmroute.untrusted_json import loads_replacing

__all__ = ["ANTHROPIC_VERSION", "AnthropicProvider", "sent_once_more", "streamed_once_more"]

ANTHROPIC_VERSION = "2023-06-01"
_MESSAGES = "/v1/messages"
_MODELS = "/v1/models?limit=1000"
# Statuses for error events inside a stream, which arrive after a 200: the status each
# of Anthropic's error types is sent with (docs.claude.com, "Errors").
_STREAM_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class AnthropicProvider:
    """One pooled HTTP session for a provider of kind ``anthropic``.

    The API key is read once, here, from the environment variable the registry names;
    it only ever travels in the ``x-api-key`` header.
    """

    def __init__(
        self, name: str, spec: Provider, *, environ: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        env = os.environ if environ is None else environ
        from_env = env_headers(spec.headers_env, env)
        headers = {"anthropic-version": ANTHROPIC_VERSION, **spec.headers, **from_env}
        key = env.get(spec.api_key_env) if spec.api_key_env else None
        if key:
            headers["x-api-key"] = key
        base_url = spec.http_url.rstrip("/")
        if base_url.endswith("/v1"):  # the path below adds it
            base_url = base_url[: -len("/v1")]
        self._http = HttpTransport(name, base_url, headers, secrets=[key, *from_env.values()])

    async def complete(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> dict[str, Any]:
        """The ``chat.completion`` for `body`. An answer without a ``content`` list is
        raised, as a body that is not JSON is: converted, it would be served (and
        charged) as an empty answer."""
        payload = to_messages_request(self.name, model, body)
        data = await sent_once_more(
            payload, lambda sent: self._http.post_json(_MESSAGES, sent, timeouts)
        )
        if not isinstance(data.get("content"), list):
            raise ProviderError(self.name, "upstream answered without a content list")
        return to_chat_completion(data)

    async def list_models(self, *, timeouts: Timeouts) -> list[str]:
        """The ids ``GET /v1/models`` lists (its first 1,000)."""
        return model_ids(self.name, await self._http.get_json(_MODELS, timeouts))

    async def stream(
        self, model: str, body: dict[str, Any], *, timeouts: Timeouts
    ) -> AsyncIterator[bytes]:
        payload = {**to_messages_request(self.name, model, body), "stream": True}
        translator = StreamTranslator(self.name, include_usage=usage_wanted(body))
        events = streamed_once_more(payload, lambda sent: self._events(sent, translator, timeouts))
        async with contextlib.aclosing(events):  # closed with this one, not when collected
            async for chunk in events:
                yield chunk
                if chunk == DONE:  # message_stop's: nothing after it is the answer's
                    await drain_after_end(events)
                    return
        if not translator.done:
            raise ProviderError(self.name, "upstream stream ended before message_stop")

    async def _events(
        self, payload: dict[str, Any], translator: StreamTranslator, timeouts: Timeouts
    ) -> AsyncGenerator[bytes, None]:
        async with self._http.events(_MESSAGES, payload, timeouts) as events:
            async for event in events:
                for chunk in translator.feed(event):
                    yield chunk

    async def aclose(self) -> None:
        await self._http.aclose()


# Anthropic's refusals of thinking the request cannot carry (a tool loop without the
# blocks it needs, a forced tool choice), should its rules differ from what the gateway
# knows of them (thinking_allowed): the request is sent once more without thinking
_THINKING_REFUSED = ("must start with a thinking block", "tool_choice forces tool use")
# its refusals of thinking blocks: signed by another model or altered, or in a final
# assistant turn without thinking
_BLOCKS_REFUSED = ("signature", "redacted_thinking", "cannot contain `thinking`")


async def sent_once_more(
    payload: dict[str, Any], send: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """`send(payload)`'s answer; when Anthropic refuses the request's thinking, `send`'s
    once more without what it refused (`_unthought`). Every place Claude is served
    (Anthropic's API, Bedrock, Vertex AI) answers so."""
    try:
        return await send(payload)
    except UpstreamRejected as exc:
        plain = _unthought(payload, exc)
        if plain is None:
            raise
    return await send(plain)


async def streamed_once_more(
    payload: dict[str, Any], events: Callable[[dict[str, Any]], AsyncGenerator[bytes, None]]
) -> AsyncGenerator[bytes, None]:
    """`events(payload)`; when Anthropic refuses the request's thinking before anything
    went out, `events` once more without what it refused (`_unthought`)."""
    sent = False
    try:
        async with contextlib.aclosing(events(payload)) as first:
            async for chunk in first:
                sent = True
                yield chunk
        return
    except UpstreamRejected as exc:
        plain = None if sent else _unthought(payload, exc)
        if plain is None:
            raise
    async with contextlib.aclosing(events(plain)) as again:
        async for chunk in again:
            yield chunk


def _unthought(payload: dict[str, Any], refused: UpstreamRejected) -> dict[str, Any] | None:
    """The request to send once more when Anthropic refused its thinking: without it
    where the request cannot carry thinking; without the thinking blocks where it
    refused them (a signature another model made, when routing moved the conversation;
    a block a client altered), and without thinking where a tool loop then needs them.
    The turn answers, without thinking, rather than every later turn of the conversation
    failing alike. None for any other refusal."""
    message = refused.message
    if refused.status != 400:
        return None
    if any(words in message for words in _THINKING_REFUSED):
        return without_thinking(payload)
    if any(words in message for words in _BLOCKS_REFUSED):
        return without_thinking_blocks(payload)
    return None


def _parse_event(event: bytes) -> dict[str, Any] | None:
    """The JSON data of one server-sent event; None for comments and odd payloads."""
    lines = event.decode("utf-8", errors="replace").splitlines()
    data = "\n".join(line[5:].lstrip() for line in lines if line.startswith("data:"))
    if not data:
        return None
    try:
        parsed, _ = loads_replacing(data)  # half a surrogate pair: U+FFFD, not a lost event
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


class StreamTranslator:
    """Anthropic stream events in, OpenAI ``chat.completion.chunk`` events out.

    Text and tool-call arguments pass through as they arrive. Thinking goes as LiteLLM
    streams it: each ``thinking_delta`` as ``delta.reasoning_content`` and as a
    ``delta.thinking_blocks`` piece of the same text, the block's ``signature_delta`` as
    a piece with the signature alone, a ``redacted_thinking`` block whole; a client that
    joins the pieces of each block (a signature ends one) has the blocks to send back.
    Each piece carries its block's ``index`` in ``thinking_blocks``, as OpenAI's stream
    helper (``chat.completions.stream``) needs of every list it joins (it raises on a
    second piece without one); Anthropic is sent the blocks back without it.
    Usage (spread over message_start and message_delta) is summed up for the final
    chunk that ``stream_options.include_usage`` asks for.
    """

    def __init__(self, provider: str, *, include_usage: bool = False) -> None:
        self.provider = provider
        self.include_usage = include_usage
        self.done = False
        self._id = "chatcmpl-"
        self._model = ""
        self._created = int(time.time())
        self._usage: dict[str, Any] = {}
        self._tool_index: dict[int, int] = {}  # content block index → tool_calls index
        self._no_input: set[int] = set()  # tool_calls indexes that have had no arguments yet
        self._thought_index: dict[int, int] = {}  # content block index → thinking_blocks index

    def feed(self, event: bytes) -> list[bytes]:
        """The OpenAI events for one Anthropic event; raises on an ``error`` event."""
        data = _parse_event(event)
        kind = data.get("type") if data else None
        if data is None or self.done:
            return []
        if kind == "message_start":
            return self._start(data.get("message"))
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "content_block_delta":
            return self._block_delta(data)
        if kind == "content_block_stop":
            return self._block_stop(data)
        if kind == "message_delta":
            return self._message_delta(data)
        if kind == "message_stop":
            return self._stop()
        if kind == "error":
            raise _stream_error(self.provider, data.get("error"))
        return []  # ping, and event types added later

    def _chunk(self, delta: dict[str, Any] | None, finish: str | None = None) -> bytes:
        data: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": []
            if delta is None
            else [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if delta is None:
            data["usage"] = usage_of(self._usage)
        event = event_of(data)
        parsed(event, data)  # for the stream's meter, which reads it next: one parse less
        return event

    def _start(self, message: Any) -> list[bytes]:
        message = message if isinstance(message, dict) else {}
        self._id = f"chatcmpl-{message.get('id', '')}"
        self._model = str(message.get("model", ""))
        if isinstance(message.get("usage"), dict):
            self._usage.update(message["usage"])
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, data: dict[str, Any]) -> list[bytes]:
        block = data.get("content_block")
        if not isinstance(block, dict):
            return []
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if block.get("type") == "redacted_thinking" and isinstance(block.get("data"), str):
            redacted = {"index": self._thought(data), "type": "redacted_thinking"}
            return [self._chunk({"thinking_blocks": [{**redacted, "data": block["data"]}]})]
        if block.get("type") == "thinking" and block.get("thinking"):
            return [self._chunk(_thinking_piece(self._thought(data), block["thinking"]))]
        if block.get("type") != "tool_use":
            return []
        index = len(self._tool_index)
        self._tool_index[_block_index(data)] = index
        self._no_input.add(index)
        call = {"index": index, **tool_call(block, "")}
        return [self._chunk({"tool_calls": [call]})]

    def _block_stop(self, data: dict[str, Any]) -> list[bytes]:
        """A tool call that took no input streams no ``input_json_delta`` with text: its
        arguments are then ``{}``, as the whole answer (and OpenAI) says them, not ``""``,
        which no client can parse."""
        index = self._tool_index.get(_block_index(data))
        if index is None or index not in self._no_input:
            return []
        self._no_input.discard(index)
        call = {"index": index, "function": {"arguments": "{}"}}
        return [self._chunk({"tool_calls": [call]})]

    def _block_delta(self, data: dict[str, Any]) -> list[bytes]:
        delta = data.get("delta")
        if not isinstance(delta, dict):
            return []
        if delta.get("type") == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if delta.get("type") == "thinking_delta" and isinstance(delta.get("thinking"), str):
            if not delta["thinking"]:
                return []
            return [self._chunk(_thinking_piece(self._thought(data), delta["thinking"]))]
        if delta.get("type") == "signature_delta" and isinstance(delta.get("signature"), str):
            signed = {"index": self._thought(data), "type": "thinking", "thinking": ""}
            return [self._chunk({"thinking_blocks": [{**signed, "signature": delta["signature"]}]})]
        index = self._tool_index.get(_block_index(data))
        if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
            if index is None:
                return []
            self._no_input.discard(index)
            call = {"index": index, "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [call]})]
        return []  # citations_delta, and delta types added later

    def _thought(self, data: dict[str, Any]) -> int:
        """The ``thinking_blocks`` index of the event's thinking block: 0, 1, … in the
        order they start, whatever content blocks (text, tool calls) lie between."""
        return self._thought_index.setdefault(_block_index(data), len(self._thought_index))

    def _message_delta(self, data: dict[str, Any]) -> list[bytes]:
        if isinstance(data.get("usage"), dict):  # cumulative counts
            self._usage.update({k: v for k, v in data["usage"].items() if v is not None})
        delta = data.get("delta")
        reason = finish_reason(delta.get("stop_reason")) if isinstance(delta, dict) else None
        return [self._chunk({}, reason)] if reason else []

    def _stop(self) -> list[bytes]:
        self.done = True
        usage = [self._chunk(None)] if self.include_usage else []
        return [*usage, DONE]


def _thinking_piece(index: int, text: str) -> dict[str, Any]:
    piece = {"index": index, "type": "thinking", "thinking": text}
    return {"reasoning_content": text, "thinking_blocks": [piece]}


def _block_index(data: dict[str, Any]) -> int:
    """The event's content-block index (-1 when it has none that is an integer)."""
    index = data.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) else -1


def _stream_error(provider: str, error: Any) -> ProviderError:
    """The error for an ``error`` event, which arrives after the stream's 200: read as
    the status its type is sent with would be (`error_from_response`), with its message.
    So an ``invalid_request_error`` saying the credit balance is too low is the
    gateway's account out of credit (`ProviderMisconfigured`: the next deployment or
    model at once), as the same 400 before the stream is, not the request's fault; an
    ``overloaded_error`` is the 529 (retried, the next deployment) and a
    ``rate_limit_error`` the 429 (`RateLimited`)."""
    error = error if isinstance(error, dict) else {}
    kind = error.get("type") if isinstance(error.get("type"), str) else "api_error"
    status = _STREAM_ERROR_STATUS.get(kind, 502)
    body = json.dumps({"type": "error", "error": {**error, "type": kind}}, default=str)
    return error_from_response(provider, status, {}, body.encode(), in_answer=True)
