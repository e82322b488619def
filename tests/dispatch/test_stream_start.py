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


def test_a_stream_that_thinks_long_is_handed_over_after_the_hold() -> None:
    """A reasoning model's role chunk, then silence: the stream is handed over when the
    hold runs out, and the read that was waiting goes on, its event not lost."""
    closed: list[str] = []

    async def thinking() -> AsyncIterator[bytes]:
        try:
            yield ROLE
            await asyncio.sleep(0.5)
            yield WORDS
            yield b"data: [DONE]\n\n"
        finally:
            closed.append("upstream")

    async def go() -> tuple[float, list[bytes]]:
        loop = asyncio.get_running_loop()
        events = aiter(thinking())
        started = loop.time()
        first = await anext(events)
        first, rest = await read_preamble(first, events, within_s=0.1)
        handed = loop.time() - started
        assert first == ROLE
        return handed, [e async for e in rest]

    handed, rest = asyncio.run(go())
    assert rest == [WORDS, b"data: [DONE]\n\n"]
    assert handed < 0.4  # within the hold (0.1 s), well before the words (0.5 s)
    assert closed == ["upstream"]


def test_a_stream_closed_while_its_read_waits_closes_the_upstream() -> None:
    closed: list[str] = []

    async def thinking() -> AsyncIterator[bytes]:
        try:
            yield ROLE
            await asyncio.sleep(30)
            yield WORDS
        finally:
            closed.append("upstream")

    async def go() -> None:
        events = aiter(thinking())
        first, rest = await read_preamble(await anext(events), events, within_s=0.05)
        held = aiter(rest)
        assert first == ROLE
        reading = asyncio.create_task(anext(held))
        await asyncio.sleep(0.05)
        reading.cancel()  # the client went away
        with pytest.raises(asyncio.CancelledError):
            await reading
        await held.aclose()  # type: ignore[attr-defined]

    asyncio.run(asyncio.wait_for(go(), 5))
    assert closed == ["upstream"]


def test_a_failure_within_the_hold_still_raises_while_opening() -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield ROLE
        await asyncio.sleep(0.05)
        raise ProviderError("up", "overloaded", status=529)

    async def go() -> None:
        events = aiter(failing())
        await read_preamble(await anext(events), events, within_s=2.0)

    with pytest.raises(ProviderError):
        asyncio.run(go())


@pytest.mark.parametrize("thinks", [False, True])
def test_a_stream_closed_before_it_was_read_closes_the_upstream(thinks: bool) -> None:
    """The rest of a stream read past its preamble, closed without a read (its client
    left as the headers went out, or after the first event): the upstream is closed
    then, and a read still waiting stopped, not left to the garbage collector (a
    generator never started runs no cleanup when closed)."""
    closed: list[str] = []

    async def upstream() -> AsyncIterator[bytes]:
        try:
            yield ROLE
            if thinks:
                await asyncio.sleep(30)
            yield WORDS
            await asyncio.sleep(30)
            yield b"data: [DONE]\n\n"
        finally:
            closed.append("upstream")

    async def go() -> None:
        events = aiter(upstream())
        first, rest = await read_preamble(await anext(events), events, within_s=0.05)
        assert first == ROLE and rest is not events  # past the role chunk
        await rest.aclose()  # type: ignore[attr-defined]
        await asyncio.sleep(0)
        assert closed == ["upstream"]  # at once, while `events` is still referenced
        await rest.aclose()  # type: ignore[attr-defined]  # twice: nothing more
        assert [e async for e in rest] == []

    asyncio.run(asyncio.wait_for(go(), 5))
    assert closed == ["upstream"]
