"""When a stream has begun: the events that say nothing yet (a role-only chunk, Azure's
prompt-filter chunk, comments) and reading past them, with the events read sent on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from llmroute.dispatch.stream_start import MAX_PREAMBLE, read_preamble, says_nothing
from llmroute.errors import ProviderError


def _event(delta: dict[str, object] | None = None, **extra: object) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": None}]
    return f"data: {json.dumps({'choices': choices, **extra})}\n\n".encode()


ROLE = _event({"role": "assistant", "content": ""})
AZURE = _event(None, prompt_filter_results=[{"prompt_index": 0}])  # choices: []
WORDS = _event({"content": "Hello"})


@pytest.mark.parametrize(
    ("event", "nothing"),
    [
        (ROLE, True),
        (AZURE, True),
        (b": OPENROUTER PROCESSING\n\n", True),
        (_event({"role": "assistant", "content": None, "tool_calls": []}), True),
        (WORDS, False),
        (_event({"tool_calls": [{"index": 0, "id": "call_1"}]}), False),
        (_event({"reasoning_content": "Let me think"}), False),
        (_event({"refusal": "I can't"}), False),
        (_event(None, usage={"prompt_tokens": 3}), False),
        (b'data: {"error": {"message": "x"}}\n\n', False),
        (b"data: [DONE]\n\n", False),
        (b"data: {not json\n\n", False),
    ],
)
def test_what_says_nothing_yet(event: bytes, nothing: bool) -> None:
    assert says_nothing(event) is nothing


def test_a_finish_says_something() -> None:
    finished = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    assert not says_nothing(f"data: {json.dumps(finished)}\n\n".encode())


async def _stream(*items: bytes | Exception) -> AsyncIterator[bytes]:
    for item in items:
        if isinstance(item, Exception):
            raise item
        yield item


def _read(*items: bytes | Exception) -> tuple[bytes, list[bytes]]:
    async def go() -> tuple[bytes, list[bytes]]:
        events = aiter(_stream(*items))
        first = await anext(events)
        first, rest = await read_preamble(first, events)
        return first, [e async for e in rest]

    return asyncio.run(go())


def test_the_events_read_past_are_sent_on_in_order() -> None:
    assert _read(ROLE, AZURE, WORDS, b"data: [DONE]\n\n") == (
        ROLE,
        [AZURE, WORDS, b"data: [DONE]\n\n"],
    )
    assert _read(WORDS, ROLE) == (WORDS, [ROLE])  # begun at once: nothing read past
    assert _read(ROLE) == (ROLE, [])  # a stream that ends saying nothing


def test_a_failure_before_the_first_words_raises_while_opening() -> None:
    with pytest.raises(ProviderError):
        _read(ROLE, ProviderError("up", "overloaded", status=529), WORDS)


def test_a_stream_that_keeps_saying_nothing_counts_as_begun() -> None:
    first, rest = _read(*[ROLE] * (MAX_PREAMBLE + 5), WORDS)
    assert first == ROLE and len(rest) == MAX_PREAMBLE + 5
