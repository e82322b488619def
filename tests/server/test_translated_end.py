"""`translated`'s end: a chat stream that stops with no ``[DONE]`` (every stream the
gateway relays ends with one: `relay` adds it after an upstream's break, the providers
after their finish reasons) is read as the OpenAI-compatible provider reads one: whole
once every choice said its finish reason, else cut short, ended as a broken-off one in
its front's terms. A real front translator (the Messages API's) reads a stream made
here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from llmroute.server.chunk_translation import translated
from llmroute.server.messages_convert import StreamTranslator

WORD = (
    b'data: {"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}, '
    b'"finish_reason": null}]}\n\n'
)
FINISH = b'data: {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n'


async def _events(*events: bytes) -> AsyncIterator[bytes]:
    for event in events:
        yield event


def _read(*events: bytes) -> bytes:
    async def main() -> bytes:
        return b"".join([out async for out in translated(_events(*events), StreamTranslator("m"))])

    return asyncio.run(main())


def test_a_stream_ending_with_no_done_before_its_finish_ends_as_a_broken_one() -> None:
    """A stream that stops after a word with no ``[DONE]``, and one asked for two choices
    that stops after choice 0's finish reason, choice 1 still streaming: the Messages
    client gets the error event a broken-off upstream's stream ends with, no
    ``message_stop``, as the OpenAI-compatible provider reads such a stream (cut short).
    Both were closed as whole answers (``message_stop``)."""
    second = WORD.replace(b'"index": 0', b'"index": 1')
    for events in ((WORD,), (WORD, second, FINISH, second)):
        raw = _read(*events)
        assert raw.endswith(
            b'event: error\ndata: {"type": "error", "error": {"type": "api_error", '
            b'"message": "the upstream stream broke off"}}\n\n'
        )
        assert b"message_stop" not in raw


def test_a_stream_ending_on_its_done_or_its_finish_is_whole() -> None:
    """Guards: a stream ending on its ``[DONE]``, and one ending on its finish reason
    with none (whole, as the OpenAI-compatible provider reads it), close whole."""
    for events in ((WORD, FINISH, b"data: [DONE]\n\n"), (WORD, FINISH)):
        raw = _read(*events)
        assert raw.endswith(b'event: message_stop\ndata: {"type": "message_stop"}\n\n')
        assert b"event: error" not in raw
