"""A chat-completions stream relayed as another API's event stream: the part the
Messages (`llmroute.server.messages_convert.StreamTranslator`), Responses
(`llmroute.server.responses_stream.ResponsesStream`) and completions
(`llmroute.server.completions.CompletionStream`) fronts share. A subclass says what
one chunk becomes (`_chunk`) and how the stream ends (`close`)."""

from __future__ import annotations

import contextlib
import itertools
import logging
from abc import ABC, abstractmethod
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from typing import Any, Protocol

from llmroute.sse import CallNumbers
from llmroute.untrusted_json import loads

__all__ = [
    "BROKE_OFF_CHUNK",
    "BUG_CHUNK",
    "ChunkTranslator",
    "EventFilter",
    "clean_chunk",
    "clean_completion",
    "translated",
]

log = logging.getLogger("llmroute.server")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _usage(usage: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": _int(usage.get("prompt_tokens")),
        "completion_tokens": _int(usage.get("completion_tokens")),
    }
    for key, inner in (
        ("prompt_tokens_details", ("cached_tokens", "cache_write_tokens")),
        ("completion_tokens_details", ("reasoning_tokens",)),
    ):
        details = usage.get(key)
        if isinstance(details, dict):
            out[key] = {k: _int(details.get(k)) for k in inner if k in details or k == inner[0]}
    return out


def _call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function")
    function = function if isinstance(function, dict) else {}
    out: dict[str, Any] = {
        "index": _int(call.get("index")),
        "function": {
            k: v for k in ("name", "arguments") if (v := _str(function.get(k))) is not None
        },
    }
    if (call_id := _str(call.get("id"))) is not None:
        out["id"] = call_id
    return out


def _thinking(message: dict[str, Any], out: dict[str, Any]) -> None:
    """The message's (or delta's) thinking, LiteLLM's way: ``reasoning_content`` text,
    ``thinking_blocks`` objects (their signatures untouched: Anthropic checks them)."""
    if reasoning := _str(message.get("reasoning_content")):
        out["reasoning_content"] = reasoning
    blocks = message.get("thinking_blocks")
    kept = [b for b in map(_block, blocks if isinstance(blocks, list) else ()) if b]
    if kept:
        out["thinking_blocks"] = kept


def _block(block: Any) -> dict[str, Any] | None:
    """A thinking block (or a streamed piece of one) with its fields of the right type,
    left as they are; None for anything else."""
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "redacted_thinking":
        data = _str(block.get("data"))
        return None if data is None else {"type": kind, "data": data}
    if kind != "thinking":
        return None
    out: dict[str, Any] = {"type": kind, "thinking": _str(block.get("thinking")) or ""}
    if signature := _str(block.get("signature")):
        out["signature"] = signature
    return out


def _choice(choice: dict[str, Any]) -> dict[str, Any]:
    delta = choice.get("delta")
    delta = delta if isinstance(delta, dict) else {}
    clean: dict[str, Any] = {}
    if (content := _str(delta.get("content"))) is not None:
        clean["content"] = content
    if refusal := _str(delta.get("refusal")):
        clean["refusal"] = refusal
    _thinking(delta, clean)
    calls = delta.get("tool_calls")
    if isinstance(calls, list):
        clean["tool_calls"] = [_call(c) for c in calls if isinstance(c, dict)]
    out = {
        "delta": clean,
        "finish_reason": _str(choice.get("finish_reason")),
        "index": _int(choice.get("index")),
    }
    if isinstance(choice.get("logprobs"), dict):
        out["logprobs"] = choice["logprobs"]
    return out


def clean_chunk(chunk: dict[str, Any]) -> dict[str, Any]:
    """`chunk` with only the fields translators read, each of the type they expect: an
    upstream's stream is not ours to trust, and an odd chunk must not break a client's
    stream halfway (a field of the wrong type is left out)."""
    out: dict[str, Any] = {"id": _str(chunk.get("id")) or ""}
    if isinstance(chunk.get("created"), int):
        out["created"] = chunk["created"]
    if isinstance(chunk.get("system_fingerprint"), str):
        out["system_fingerprint"] = chunk["system_fingerprint"]
    if "error" in chunk:
        error = chunk["error"]
        message = _str(error.get("message")) if isinstance(error, dict) else None
        out["error"] = {"message": message or "the upstream stream broke off"}
        code = _str(error.get("code")) if isinstance(error, dict) else None
        if code:  # whose it was: the gateway's bug (`BUG_CHUNK`), the upstream's break
            out["error"]["code"] = code
    if isinstance(chunk.get("usage"), dict):
        out["usage"] = _usage(chunk["usage"])
    choices = chunk.get("choices")
    if isinstance(choices, list):
        out["choices"] = [_choice(c) for c in choices if _indexed(c)]
    return out


def _indexed(choice: Any) -> bool:
    """Whether `choice` says which choice it is: an ``index`` that is a whole number, or
    none (choice 0, as `llmroute.sse.choice_zero` reads it). One of another type or
    negative continues no choice that can be told: read as 0, its words went into
    choice 0's message, which the decision log's answer left them out of."""
    if not isinstance(choice, dict):
        return False
    index = choice.get("index", 0)
    return isinstance(index, int) and not isinstance(index, bool) and index >= 0


def _message(message: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"content": _str(message.get("content"))}
    if refusal := _str(message.get("refusal")):
        out["refusal"] = refusal  # OpenAI's refusal under structured outputs
    _thinking(message, out)
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        out["tool_calls"] = [_call(c) for c in calls if isinstance(c, dict)]
    return out


def clean_completion(data: dict[str, Any]) -> dict[str, Any]:
    """A whole chat completion, cleaned as `clean_chunk` cleans a chunk: what the fronts
    read of an upstream's answer, each field of the expected type or left out."""
    out: dict[str, Any] = {"id": _str(data.get("id")) or ""}
    if isinstance(data.get("created"), int):
        out["created"] = data["created"]
    if isinstance(data.get("system_fingerprint"), str):
        out["system_fingerprint"] = data["system_fingerprint"]
    out["usage"] = _usage(data["usage"]) if isinstance(data.get("usage"), dict) else {}
    choices = data.get("choices")
    out["choices"] = [
        {
            "message": _message(c["message"] if isinstance(c.get("message"), dict) else {}),
            "finish_reason": _str(c.get("finish_reason")),
            **({"logprobs": c["logprobs"]} if isinstance(c.get("logprobs"), dict) else {}),
        }
        for c in (choices if isinstance(choices, list) else ())
        if isinstance(c, dict)
    ]
    return out


class ChunkTranslator(ABC):
    _done = False  # set once the stream has ended (or failed): later chunks are ignored

    def feed(self, event: bytes) -> Iterator[bytes]:
        """The events for one SSE event of the chat stream, as the gateway relays it."""
        for line in event.splitlines():
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                yield from self.close()
                continue
            try:
                chunk = loads(data)
            except ValueError:
                continue
            if isinstance(chunk, dict) and not self._done:
                self._number_calls(chunk)
                cleaned = clean_chunk(chunk)
                self._note_finishes(cleaned)
                yield from self._chunk(cleaned)

    _choices: dict[int, bool] | None = None  # each choice streamed: whether it finished

    def _note_finishes(self, chunk: dict[str, Any]) -> None:
        for choice in chunk.get("choices") or ():
            if self._choices is None:
                self._choices = {}
            index = choice["index"]
            self._choices[index] = self._choices.get(index, False) or bool(choice["finish_reason"])

    @property
    def finished(self) -> bool:
        """Whether every choice the stream said something of said its finish reason: a
        stream that stops there with no ``[DONE]`` is whole, as the OpenAI-compatible
        provider reads one (`translated`)."""
        choices = self._choices
        return choices is not None and all(choices.values())

    _numbers: dict[int, CallNumbers] | None = None  # each choice's tool calls, numbered

    def _number_calls(self, chunk: dict[str, Any]) -> None:
        """Give each tool-call delta the ``index`` of its call in its choice
        (`CallNumbers`): one without an index (Gemini's OpenAI-compatible endpoint streams
        each call whole, with its ``id`` but none), or with one that is no index
        (negative, not an int), is the call its id names, a new id the next call, neither
        the last one. Read as index 0, parallel calls would all be merged into the first.
        A choice that says no index it can be told by (`_indexed`) is left out after."""
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            calls = delta.get("tool_calls") if isinstance(delta, dict) else None
            if not isinstance(calls, list) or not _indexed(choice):
                continue  # read for a chunk with calls alone: every chunk comes here
            if self._numbers is None:
                self._numbers = {}
            number = choice.get("index", 0)
            numbers = self._numbers.get(number)
            if numbers is None:  # not setdefault: a CallNumbers made for each chunk
                numbers = self._numbers[number] = CallNumbers()
            for call in calls:
                if isinstance(call, dict):
                    call["index"] = numbers.number(call.get("index"), call.get("id"))

    _served: Callable[[], str] | None = None

    def follow(self, served: Callable[[], str]) -> None:
        """Ask `served()` which pool model answers, for what is said of the model after
        the stream opened (a fallback after the stream's start changes it)."""
        self._served = served

    def _serving(self, model: str) -> str:
        """The pool model answering now (`model` when nobody said otherwise)."""
        return self._served() if self._served is not None else model

    @abstractmethod
    def _chunk(self, chunk: dict[str, Any]) -> Iterator[bytes]: ...

    @abstractmethod
    def close(self) -> Iterator[bytes]:
        """The closing events, once (also when the stream stopped without ``[DONE]``)."""


class EventFilter(Protocol):
    """What `translated` runs a stream through: a `ChunkTranslator`, or any object that
    turns each piece of the stream into events and says how it ends."""

    def feed(self, event: bytes) -> Iterator[bytes]: ...

    def close(self) -> Iterator[bytes]: ...


async def translated(
    events: AsyncIterable[str | bytes | memoryview],
    translator: EventFilter,
    before_sending: Callable[[list[bytes]], Awaitable[list[bytes]]] | None = None,
) -> AsyncIterator[bytes]:
    """The chat stream `events` translated, closed at its end. When the client goes
    away first, `events` is closed here at once (not whenever it is collected), so the
    upstream stream stops and the request is logged. `before_sending`, when given, is
    awaited with the events made of each piece before they go out, and what it returns
    goes out instead (the Responses front keeps a finished response before the client
    hears it finished, and says whether it could). A bug translating a piece, or one
    thrown in where a piece went out (the next step's), is thrown into `events` before
    it goes on up, so that what relays the model's stream records its end as the bug's
    (`_thrown_down`), not as its client leaving. A bug of its own then ends the stream
    as a broken-off upstream's ends (`_ended_by_bug`: its API's error event, its end), the
    client's answer read whole; one thrown in is raised on, for that step to end it.
    The translator is closed as ``[DONE]`` comes, while `events` is still open, so that a
    bug closing it is the stream's too; nothing follows a ``[DONE]`` that went out. A
    stream that stops with no ``[DONE]`` (every one the gateway relays ends with it:
    `relay` adds it after a break, the providers after their finish reasons) is read as
    the OpenAI-compatible provider reads one: whole (closed) once every choice it
    streamed said its finish reason (a `ChunkTranslator`'s `finished`), else cut short,
    ended as a broken-off upstream's ends (`BROKE_OFF_CHUNK`, its end), not closed as a
    whole answer (a filter that cannot tell ends it so too)."""
    sending = False  # at a piece that went out: what is thrown in is the next step's bug
    ended = False  # a ``[DONE]`` went out: the client has read the stream's end
    done = False  # a ``[DONE]`` came in: the stream's end, closed at it
    try:
        async for event in events:
            try:
                raw = event.encode() if isinstance(event, str) else bytes(event)
                going: Iterable[bytes] = translator.feed(raw)
                if raw.startswith(_DONE):  # closing twice makes nothing more
                    done = True
                    going = itertools.chain(going, translator.close())
                if before_sending is not None:
                    going = await before_sending(list(going))
                for out in going:
                    sending = True
                    yield out
                    sending = False
                    ended = ended or out.startswith(_DONE)
            except Exception as exc:
                await _thrown_down(events, exc)
                ending = None
                if not sending:
                    ending = [] if ended else await _ended_by_bug(translator, before_sending)
                if ending is None:
                    raise
                log.error("a bug ended a stream after its answer started", exc_info=exc)
                for out in ending:
                    yield out
                return
        made = _ending(translator, done)
        if before_sending is not None:
            made = await before_sending(made)
        for out in made:
            yield out
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


_DONE = b"data: [DONE]"  # a chat stream's end, as its own piece

# what a bug once the answer started ends the stream with, as the fronts read it: a
# chunk saying so (as `relay` says an upstream broke off), then its end; nothing of the
# bug itself, which is logged
BUG_CHUNK = (
    b'data: {"error": {"message": "internal error", "type": "server_error", '
    b'"param": null, "code": "internal_error"}}\n\n'
)
_BUG_ENDING = BUG_CHUNK + _DONE + b"\n\n"

# what an upstream's stream broken off (or ended with no ``[DONE]``) ends with: `relay`'s
# chunk saying so, then its end
BROKE_OFF_CHUNK = (
    b'data: {"error": {"message": "the upstream stream broke off", '
    b'"type": "server_error", "param": null, "code": "upstream_error"}}\n\n'
)
_BROKE_OFF_ENDING = BROKE_OFF_CHUNK + _DONE + b"\n\n"


def _ending(translator: EventFilter, done: bool) -> list[bytes]:
    """The events that end a stream once it ran out: its translator's close, once its
    ``[DONE]`` came (`done`) or every choice finished; else those of a broken-off
    upstream's end, its answer not known whole."""
    if done or getattr(translator, "finished", False) is True:
        return list(translator.close())
    log.warning("a stream ended before its [DONE]: ended as one broken off")
    return list(translator.feed(_BROKE_OFF_ENDING))


async def _ended_by_bug(
    translator: EventFilter,
    before_sending: Callable[[list[bytes]], Awaitable[list[bytes]]] | None,
) -> list[bytes] | None:
    """The events that end the stream `translator` makes after a bug (`_BUG_ENDING` in its
    API's terms: Messages' ``error`` event, Responses' ``response.failed``, chat's error
    chunk and ``[DONE]``), so that its client reads a whole answer saying it failed, as one
    whose upstream broke off; None where making them fails too (a translator that broke)."""
    try:
        made = list(translator.feed(_BUG_ENDING))
        return made if before_sending is None else await before_sending(made)
    except Exception:
        return None


async def _thrown_down(events: AsyncIterable[str | bytes | memoryview], exc: Exception) -> None:
    """`exc` thrown into `events` where it stopped (a generator's ``athrow``): a bug after
    the stream was handed on ends it as the bug's. What it raises back is `exc` (or its
    own cleanup's failure), which the caller raises on."""
    athrow = getattr(events, "athrow", None)
    if athrow is not None:
        with contextlib.suppress(Exception, StopAsyncIteration):
            await athrow(exc)
